"""What a seed load reports: progress events while it runs, a :class:`SeedReport` after."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

__all__ = ["ProgressLine", "SeedProgress", "SeedReport"]


@dataclass(frozen=True)
class SeedProgress:
    """A progress event: set ``name`` (``index`` of ``count``) has written ``rows`` rows
    (of ``total`` when the set announced it). ``event``: start, rows, done."""

    name: str
    index: int
    count: int
    rows: int
    total: int | None
    event: str


@dataclass
class SeedReport:
    """Rows inserted per table by a seed load (from the transaction's own statistics)."""

    sets: list[str]
    seed: int = 0
    scale: int = 1
    rows: dict[str, int] = field(default_factory=dict)
    per_set: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0
    #: set by ``seed_command``: whether the rows were committed, and where to
    committed: bool = False
    dry_run: bool = False
    database: str | None = None

    @property
    def total(self) -> int:
        """All rows inserted."""
        return sum(self.rows.values())

    @property
    def rows_per_second(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0

    def table(self) -> str:
        """A plain-text table: rows per table, the total and rows/s."""
        width = max([len("table"), len("total"), *map(len, self.rows)])
        lines = [f"{'table':<{width}}  {'rows':>10}", f"{'-' * width}  {'-' * 10}"]
        lines += [f"{name:<{width}}  {count:>10,}" for name, count in self.rows.items()]
        lines.append(f"{'total':<{width}}  {self.total:>10,}")
        outcome = ("rolled back (dry run)" if self.dry_run else
                   "committed" if self.committed else "loaded (not committed)")
        where = f" into {self.database}" if self.database else ""
        lines.append(f"seed sets {', '.join(self.sets)} (seed {self.seed}, scale {self.scale})"
                     f"{where}: {outcome}; {self.total:,} rows in {self.seconds:.2f} s "
                     f"({self.rows_per_second:,.0f} rows/s)")
        return "\n".join(lines)


class ProgressLine:
    """A one-line progress display on a stream (stderr): redrawn in place on a terminal,
    one line per finished set otherwise (CI logs)."""

    _BAR = 24

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.perf_counter()
        self._set_started = self.started
        self._last = 0.0
        self._width = 0

    def __call__(self, event: SeedProgress) -> None:
        now = time.perf_counter()
        if event.event == "start":
            self._set_started = now
        if self.tty:
            if event.event == "rows" and now - self._last < 0.1:
                return  # redraw at most 10 times a second
            self._last = now
            self._draw(self._line(event, now), final=event.event == "done")
        elif event.event == "done":
            self.stream.write(self._line(event, now) + "\n")
            self.stream.flush()

    def _line(self, event: SeedProgress, now: float) -> str:
        elapsed = max(now - self._set_started, 1e-9)
        head = f"[{event.index + 1}/{event.count}] {event.name}"
        if event.total:
            done = min(1.0, event.rows / event.total)
            fill = int(done * self._BAR)
            bar = "#" * fill + "-" * (self._BAR - fill)
            body = f"[{bar}] {event.rows:,}/{event.total:,} rows"
        else:
            body = f"{event.rows:,} rows"
        rate = f"{event.rows / elapsed:,.0f} rows/s" if event.rows else ""
        return f"{head} {body} {rate} {elapsed:.1f} s".rstrip()

    def _draw(self, text: str, final: bool) -> None:
        pad = max(0, self._width - len(text))
        self._width = 0 if final else len(text)
        self.stream.write("\r" + text + " " * pad + ("\n" if final else ""))
        self.stream.flush()

    def close(self) -> None:
        """End an unfinished line (after an error or Ctrl-C)."""
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
