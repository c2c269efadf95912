"""The ``dbtest`` section of pytest's terminal summary: which server, and per template
whether it was built (and why) or reused."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dbtest._workspace import Workspace

__all__ = ["template_line", "template_records"]


def template_line(record: dict[str, Any]) -> str:
    """One line of the run summary for one template record."""
    if record["built"]:
        what = f"built, {record['steps']} migration step(s) applied"
        if record.get("reason"):
            what = f"rebuilt because {record['reason']}; {record['steps']} migration step(s) " \
                   f"applied"
    else:
        what = f"reused (verified in {record.get('verify_ms', 0):.0f} ms)"
    seeds = f", seeds {','.join(record['seeds'])}" if record["seeds"] else ""
    who = f" by {record['worker']}" if record.get("worker", "main") != "main" else ""
    return (f"template {record['name']} ({record['schema'] or 'empty'}{seeds}): {what}{who} "
            f"in {record['ms']:.0f} ms")


def template_records(ws: Workspace | None) -> list[dict[str, Any]]:
    """What each template of ``ws`` cost this process (built or reused), as plain records
    (an xdist controller reads its workers' from the cache dir)."""
    if ws is None or not ws.started:
        return []
    return [{"name": i.name, "schema": i.key.schema, "seeds": list(i.key.seeds),
             "built": i.built, "steps": i.steps, "ms": i.seconds * 1000, "worker": ws.worker,
             "reason": i.reason, "verify_ms": i.verify_seconds * 1000}
            for i in ws.templates.stats]
