"""A small app written the usual way: a global engine, a scoped session, factory-boy.

docs/migrating.md moves its test suite from hand-written conftest fixtures to dbtest;
tests/test_docs.py runs the suite both ways.
"""
