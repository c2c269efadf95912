"""A small example application schema used by dbtest's own tests and documentation.

Modules are imported on demand (``migrations_example.models``, ``.services``, ``.app``,
``.factories``) so that importing the package does not pull FastAPI or factory-boy.
"""
