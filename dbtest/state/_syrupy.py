"""A syrupy extension storing each state as a plain ``.txt`` file, with row-level diffs.

Plain ``snapshot`` needs nothing: a state's ``repr`` is its text, which syrupy's default
amber files store verbatim. This extension is for one reviewed file per snapshot:

    def test_signup(db, snapshot):
        snapshot = snapshot.use_extension(DbtestSnapshotExtension)
        assert table_state(db, "users") == snapshot
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from dbtest.state._diff import diff_texts
from dbtest.state._values import DbState

__all__ = ["DbtestSnapshotExtension"]


class DbtestSnapshotExtension(SingleFileSnapshotExtension):
    """One ``__snapshots__/<test file>/<test name>.txt`` per snapshot, in dbtest's text."""

    _write_mode = WriteMode.TEXT
    file_extension = "txt"

    def serialize(self, data: Any, **kwargs: Any) -> str:
        text = data.text if isinstance(data, DbState) else repr(data)
        return text + "\n"

    def diff_lines(self, serialized_data: Any, snapshot_data: Any) -> Iterator[str]:
        lines = diff_texts(str(snapshot_data), str(serialized_data))
        if not lines:
            yield from super().diff_lines(serialized_data, snapshot_data)
            return
        yield from lines
