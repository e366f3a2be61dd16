"""What the commands print: question tables, JSON lines or arrays, ``--explain``.

Pure text from data; the commands in ``cli.py`` only choose and write. On a terminal long
cells are clipped to its width; piped (or with ``--wide``) nothing is cut.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

import orjson

RESOLVES_WHEN: dict[str, str] = {
    "exception": "never by itself: an exception is one bug; answer the question once it is fixed",
    "orphaned_queue": "the channel gets a consumer, or loses its last producer",
    "syntax_error": "the file parses again (or is deleted)",
    "healing_failure": "the scenario's recent runs heal at the configured recovery rate",
    "test_failure": "the test (or every test of the group) passes in a newer report",
    "new_module": "the module is deleted (new modules are questions to study, not faults)",
    "missing_tool": "the executable appears on PATH",
    "missing_library": "the module becomes importable, or no file imports it any more",
    "idle_accelerator": "the accelerator's utilisation rises above the idle threshold",
    "hardware_change": "the device returns to its state at the first start",
    "suspicious_metrics": "three clean experiments in a row",
    "unindexed_doc": "the knowledge index holds the document's current sha256",
    "stale_doc": "the document is updated after the code it names",
}


def clip(text: str, width: int | None) -> str:
    """``text`` on one line, cut to ``width`` with an ellipsis (None: never cut)."""
    text = " ".join(text.split())
    if width is None or len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + "…"


def cell_width(out: TextIO, fixed: int, *, wide: bool, minimum: int = 20) -> int | None:
    """Room left for the last column on a terminal; None when piped or ``wide``."""
    if wide or not out.isatty():
        return None
    columns = shutil.get_terminal_size((120, 24)).columns
    return max(columns - fixed, minimum)


QUESTION_HEADER = f"{'PRIORITY':>8}  {'STATUS':<11} {'SEEN':>5}  {'GAP TYPE':<18} QUESTION"


def question_rows(questions: Iterable[dict[str, Any]], width: int | None) -> list[str]:
    """One row per question (plain dicts, as the feed holds them), under
    :data:`QUESTION_HEADER`."""
    rows = []
    for q in questions:
        meta = q.get("metadata") or {}
        rows.append(f"{float(q.get('priority', 0.0)):8.2f}  {q.get('status', '?'):<11} "
                    f"{meta.get('occurrences', 1):>5}  "
                    f"{clip(str(meta.get('gap_type', '?')), 18):<18} "
                    f"{clip(str(q.get('question', '')), width)}")
    return rows


def gap_table(rows: Sequence[tuple[str, str, str, str]], out: TextIO) -> list[str]:
    """``scan``'s table: monitor, gap type, gap name, reason, under a header row. On a
    terminal the name and reason share what is left of its width; piped, nothing is cut."""
    name_w = max([len("GAP NAME"), *(len(r[2]) for r in rows)])
    room = cell_width(out, 21 + 1 + 18 + 1, wide=False, minimum=40)
    reason_w = None
    if room is not None:
        name_w = min(name_w, max(room // 2, 20))
        reason_w = max(room - name_w - 1, 20)
    lines = [f"{'MONITOR':<21} {'GAP TYPE':<18} {'GAP NAME':<{name_w}} REASON"]
    lines += [f"{monitor:<21} {gap_type:<18} {clip(name, name_w if room else None):<{name_w}} "
              f"{clip(reason, reason_w)}" for monitor, gap_type, name, reason in rows]
    return lines


class ScanBar:
    """``scan``'s progress line over every source index's initial scan, redrawn in place
    on a terminal's stderr (at most every 0.1 s); piped, :meth:`for_stream` gives None and
    nothing is drawn. Small enough to write here rather than pull in a progress library."""

    def __init__(self, out: TextIO, clock: Any = time.monotonic) -> None:
        self._out = out
        self._clock = clock
        self._drawn_at = 0.0
        self._width = 0
        self._scans: dict[int, dict[str, Any]] = {}

    @classmethod
    def for_stream(cls, out: TextIO) -> ScanBar | None:
        return cls(out) if out.isatty() else None

    def update(self, index: Any) -> None:
        """An index's progress changed (``SourceIndex.on_progress``)."""
        self._scans[id(index)] = index.progress or {}
        done = sum(int(p.get("done", 0)) for p in self._scans.values())
        total = sum(int(p.get("total", 0)) for p in self._scans.values())
        finished = all(p.get("phase") == "done" for p in self._scans.values())
        now = self._clock()
        if not finished and now - self._drawn_at < 0.1:
            return
        self._drawn_at = now
        rate = sum(float(p.get("rate_per_s", 0.0)) for p in self._scans.values())
        filled = round(20 * done / total) if total else 0
        line = (f"scanning [{'#' * filled}{'.' * (20 - filled)}] {done}/{total} files "
                f"{rate:,.0f}/s")
        self._write("\r" + line.ljust(self._width))
        self._width = len(line)

    def close(self) -> None:
        """Erase the line: what follows (errors, the summary) starts clean."""
        if self._width:
            self._write("\r" + " " * self._width + "\r")

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()


def print_json(items: Sequence[dict[str, Any]], *, array: bool, out: TextIO = sys.stdout
               ) -> None:
    """JSON lines (one object per line, for ``jq -c``/streaming) or one JSON array."""
    if array:
        out.write(orjson.dumps(list(items), option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    for item in items:
        out.write(orjson.dumps(item).decode() + "\n")


def _changes(before: dict[str, Any] | None, after: dict[str, Any]) -> str:
    """What one feed line changed against the previous line of the same question."""
    if before is None:
        return "opened"
    meta_b, meta_a = before.get("metadata") or {}, after.get("metadata") or {}
    notes = []
    if before.get("status") != after.get("status"):
        notes.append(f"status {before.get('status')} -> {after.get('status')}")
    if meta_a.get("reopened", 0) != meta_b.get("reopened", 0):
        notes.append("reopened")
    if before.get("evidence_hash") != after.get("evidence_hash"):
        notes.append("evidence changed")
    if meta_a.get("occurrences") != meta_b.get("occurrences"):
        notes.append(f"occurrences {meta_b.get('occurrences')} -> {meta_a.get('occurrences')}")
    if meta_a.get("claim") != meta_b.get("claim") and meta_a.get("claim"):
        notes.append(f"claimed by {meta_a['claim'].get('consumer')}")
    return ", ".join(notes) or "rewritten (compaction or counters)"


def explain(lines: Sequence[dict[str, Any]]) -> str:
    """The whole story of one question from its feed lines, oldest first."""
    q = lines[-1]
    meta = q.get("metadata") or {}
    gap_type = str(meta.get("gap_type", "?"))
    out = [
        f"{q['id']}  [{q.get('status')}]  priority {float(q.get('priority', 0)):.2f}",
        f"question:   {q.get('question', '')}",
        f"hypothesis: {q.get('hypothesis', '')}",
        f"gap:        {gap_type}: {meta.get('gap_name', '?')} "
        f"(monitor {meta.get('monitor', '?')}, category {meta.get('gap_category', '?')})",
        f"action:     {q.get('action_class')} (autonomy {q.get('autonomy')}, "
        f"value {q.get('value_estimate')}, cost {q.get('cost')})",
        f"seen:       {meta.get('occurrences', 1)} times, first {meta.get('first_seen')}, "
        f"last {meta.get('last_seen')}",
        "evidence:",
        *(f"  - {line}" for line in q.get("evidence") or []),
        f"resolves when: {RESOLVES_WHEN.get(gap_type, 'its monitor no longer sees the gap')}",
        f"history ({len(lines)} feed line{'s' if len(lines) != 1 else ''}):",
    ]
    before: dict[str, Any] | None = None
    for line in lines:
        out.append(f"  {line.get('updated_at')}  {line.get('status'):<11} "
                   f"{_changes(before, line)}")
        before = line
    return "\n".join(out)
