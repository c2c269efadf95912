"""``python -m dbtest``: the ``dbtest`` command line."""

from dbtest.cli import main

raise SystemExit(main())
