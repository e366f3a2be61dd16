"""Traceback assembly and parsing on real traceback shapes.

The shapes come from real interpreters: each scenario runs in a Python subprocess that
lets the exception escape (the interpreter prints it to stderr, as a service's would reach
journald) and prints on stdout what the interpreter itself knows (type, message, frames)
as the ground truth. The analysed code is never imported here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from kloros_stream.analysis.tracebacks import (
    HEAD_LINES,
    INCOMPLETE_TYPE,
    MAX_LINES,
    MAX_SKELETON_LINES,
    TAIL_LINES,
    Assembled,
    TracebackAssembler,
    assemble_text,
    format_records,
    is_header,
    parse_exception_line,
)

# -- helpers -------------------------------------------------------------------------------
TRUTH = textwrap.dedent(
    """
    import json, sys, traceback
    def _truth(exc_type, exc, tb):
        chain = []
        e = exc
        while e is not None:
            frames = [(f.filename, f.name) for f in traceback.extract_tb(e.__traceback__)]
            chain.append({"type": type(e).__qualname__, "message": str(e).split("\\n")[0],
                          "frames": frames})
            e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
        print(json.dumps(chain[::-1]), flush=True)
        sys.__excepthook__(exc_type, exc, tb)
    sys.excepthook = _truth
    """
)


def run_python(code: str, tmp_path) -> tuple[list[str], list[dict]]:
    """Run ``code`` in a fresh interpreter; its stderr lines and the ground truth."""
    script = tmp_path / "service.py"
    script.write_text(TRUTH + textwrap.dedent(code))
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode != 0, proc.stderr
    truth = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else []
    return proc.stderr.splitlines(), truth


def feed_all(
    asm: TracebackAssembler, key: object, lines: list[str], now: float = 0.0
) -> list[bool]:
    return [asm.feed(key, line, now, meta=i) for i, line in enumerate(lines)]


def finish(lines: list[str]) -> list[Assembled]:
    asm = TracebackAssembler()
    feed_all(asm, "k", lines)
    asm.flush(100.0)
    return asm.completed


# -- real shapes against the interpreter's own view -----------------------------------------
SCENARIOS = {
    "simple": """
        def load(job):
            return {}[job]
        def main():
            load("job-17")
        main()
    """,
    "chained_context": """
        def parse(v):
            return int(v)
        def handler():
            try:
                parse("x1")
            except ValueError:
                raise RuntimeError("could not parse the request")
        handler()
    """,
    "chained_cause": """
        class ConfigError(Exception):
            pass
        def read():
            try:
                open("/nonexistent/kloros.toml")
            except OSError as err:
                raise ConfigError("config unreadable") from err
        read()
    """,
    "zero_division_carets": """
        def ratio(a, b):
            return a / b
        ratio(1, 0)
    """,
    "keyboard_interrupt": """
        def loop():
            raise KeyboardInterrupt
        loop()
    """,
    "multi_line_message": """
        def check():
            raise ValueError("first line of the message\\nsecond line\\n  indented third")
        check()
    """,
    "recursion": """
        def down(n):
            return down(n + 1)
        down(0)
    """,
    "local_class": """
        def factory():
            class LocalError(Exception):
                pass
            raise LocalError("from a local class")
        factory()
    """,
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_line_by_line_assembly_matches_the_interpreter(name: str, tmp_path) -> None:
    lines, truth = run_python(SCENARIOS[name], tmp_path)
    asm = TracebackAssembler()
    consumed = feed_all(asm, ("unit", 1), lines)
    assert all(consumed), [line for line, c in zip(lines, consumed, strict=True) if not c]
    asm.flush(1.0)
    [done] = asm.completed
    tb = done.traceback
    assert tb.complete
    assert [r.exc_type.rsplit(".", 1)[-1] for r in tb.chain] == [
        t["type"].rsplit(".", 1)[-1] for t in truth
    ]
    assert tb.primary.first_line == truth[-1]["message"]
    for record, expected in zip(tb.chain, truth, strict=True):
        got = [(f.filename, f.function) for f in record.frames]
        want = [tuple(f) for f in expected["frames"]]
        if name == "recursion":  # the interpreter prints repeated frames once
            assert got[:3] == want[:3] and set(got) == set(want)
        else:
            assert got == want
    assert done.first_meta == 0 and done.last_meta == len(lines) - 1


def test_multi_line_message_keeps_its_continuation(tmp_path) -> None:
    lines, _ = run_python(SCENARIOS["multi_line_message"], tmp_path)
    [done] = finish(lines)
    assert done.traceback.primary.message == (
        "first line of the message\nsecond line\n  indented third"
    )
    assert done.traceback.primary.title == "ValueError: first line of the message"


def test_keyboard_interrupt_has_no_message(tmp_path) -> None:
    lines, _ = run_python(SCENARIOS["keyboard_interrupt"], tmp_path)
    [done] = finish(lines)
    assert done.traceback.primary.exc_type == "KeyboardInterrupt"
    assert done.traceback.primary.title == "KeyboardInterrupt"


def test_exception_group_with_nested_group_and_chain(tmp_path) -> None:
    lines, _ = run_python(
        """
        def inner(x):
            raise ValueError(f"bad value {x}")
        def leaf():
            try:
                inner(1)
            except ValueError as e:
                raise KeyError("k") from e
        def main():
            errs = []
            for f in (lambda: inner(2), leaf):
                try:
                    f()
                except Exception as e:
                    errs.append(e)
            try:
                raise ExceptionGroup("inner group", [TypeError("t")])
            except ExceptionGroup as g:
                errs.append(g)
            raise ExceptionGroup("outer", errs)
        try:
            main()
        except Exception:
            raise RuntimeError("wrapped")
        """,
        tmp_path,
    )
    assert any(line.lstrip().startswith("+-+") for line in lines)
    [done] = finish(lines)
    tb = done.traceback
    assert tb.complete
    assert tb.primary.title == "RuntimeError: wrapped"
    types = [(r.depth, r.exc_type) for r in tb.chain]
    assert types == [
        (0, "ExceptionGroup"),
        (1, "ValueError"),
        (1, "ValueError"),
        (1, "KeyError"),
        (1, "ExceptionGroup"),
        (2, "TypeError"),
        (0, "RuntimeError"),
    ]
    assert [f.function for f in tb.chain[1].frames] == ["main", "<lambda>", "inner"]


def test_bare_exception_group(tmp_path) -> None:
    lines, _ = run_python(
        """
        def work():
            raise ExceptionGroup("tasks failed", [OSError("disk"), ValueError("bad")])
        work()
        """,
        tmp_path,
    )
    [done] = finish(lines)
    assert done.traceback.primary.title == "ExceptionGroup: tasks failed (2 sub-exceptions)"
    assert [r.exc_type for r in done.traceback.chain[1:]] == ["OSError", "ValueError"]


def test_syntax_error_from_the_interpreter_has_no_header(tmp_path) -> None:
    bad = tmp_path / "broken.py"
    bad.write_text("def f(:\n    pass\n")
    proc = subprocess.run(
        [sys.executable, str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    lines = proc.stderr.splitlines()
    assert not any(is_header(line) for line in lines)
    assert any(line.strip() == "^" for line in lines)  # the caret line
    [done] = finish(lines)
    record = done.traceback.primary
    assert record.exc_type == "SyntaxError"
    assert [(f.filename, f.lineno, f.function) for f in record.frames] == [(str(bad), 1, "")]


def test_syntax_error_raised_by_an_import_keeps_both_frames(tmp_path) -> None:
    (tmp_path / "broken_mod.py").write_text("x = (1,\n")
    lines, _ = run_python("import broken_mod\n", tmp_path)
    [done] = finish(lines)
    record = done.traceback.primary
    assert record.exc_type == "SyntaxError"
    assert [f.function for f in record.frames][-1] == ""
    assert record.frames[-1].filename.endswith("broken_mod.py")


# -- tracebacks too long to keep whole: head, bounded tail, elision noted -------------------
DEEP_RECURSION = """
    import sys
    sys.setrecursionlimit(1500)
    def ping(n):
        return pong(n + 1)
    def pong(n):
        return ping(n + 1)
    ping(0)
"""

RECURSION_CHAIN = """
    import sys
    sys.setrecursionlimit(1500)
    def ping(n):
        return pong(n + 1)
    def pong(n):
        return ping(n + 1)
    def pang(n):
        return pung(n + 1)
    def pung(n):
        return pang(n + 1)
    def main():
        try:
            {}["job"]
        except KeyError:
            try:
                ping(0)
            except RecursionError:
                pang(0)
    main()
"""


def test_deep_recursion_keeps_its_exception_line(tmp_path) -> None:
    # mutual recursion: no two consecutive frames alike, so the interpreter prints all
    lines, truth = run_python(DEEP_RECURSION, tmp_path)
    assert len(truth[-1]["frames"]) >= 1400 and len(lines) > MAX_LINES
    asm = TracebackAssembler()
    consumed = feed_all(asm, ("unit", 1), lines)
    assert all(consumed)
    asm.flush(1.0)
    [done] = asm.completed
    tb = done.traceback
    assert tb.complete
    assert tb.primary.title == f"RecursionError: {truth[-1]['message']}"
    assert done.first_meta == 0 and done.last_meta == len(lines) - 1
    # bounded: the head and the tail as printed, one line noting what was left out
    assert len(tb.lines) == MAX_LINES + 1
    assert list(tb.lines[:HEAD_LINES]) == lines[:HEAD_LINES]
    assert list(tb.lines[-TAIL_LINES:]) == lines[-TAIL_LINES:]
    assert tb.lines[HEAD_LINES] == f"  [... {len(lines) - MAX_LINES} lines elided ...]"
    frames = [(f.filename, f.function) for f in tb.primary.frames]
    printed = [tuple(f) for f in truth[-1]["frames"]][-1000:]  # the interpreter's own limit
    assert frames[:3] == printed[:3] and frames[-3:] == printed[-3:]
    assert len(frames) < len(printed)


def test_a_chain_link_elided_from_the_middle_keeps_its_place(tmp_path) -> None:
    lines, truth = run_python(RECURSION_CHAIN, tmp_path)
    assert len(lines) > 2 * MAX_LINES
    [done] = finish(lines)
    tb = done.traceback
    assert tb.complete
    assert [(r.exc_type, r.first_line) for r in tb.chain] == [
        (t["type"], t["message"]) for t in truth
    ]
    assert len(tb.lines) <= MAX_LINES + 1 + MAX_SKELETON_LINES
    # the middle link (its exception line was elided from the text) has head frames, the
    # last one tail frames
    assert {f.function for f in tb.chain[1].frames} <= {"main", "ping", "pong"}
    assert {f.function for f in tb.chain[2].frames} == {"pang", "pung"}
    assert tb.chain[2].frames[-1].function == truth[-1]["frames"][-1][1]


def test_tracebacks_interleaved_from_two_pids(tmp_path) -> None:
    a, _ = run_python(SCENARIOS["simple"], tmp_path)
    b, _ = run_python(SCENARIOS["chained_cause"], tmp_path)
    asm = TracebackAssembler()
    merged = []
    for i in range(max(len(a), len(b))):
        if i < len(a):
            merged.append((("svc", 100), a[i]))
        if i < len(b):
            merged.append((("svc", 200), b[i]))
    for key, line in merged:
        assert asm.feed(key, line, 0.0, meta=key)
    asm.flush(1.0)
    by_key = {done.key: done.traceback for done in asm.completed}
    assert by_key[("svc", 100)].primary.exc_type == "KeyError"
    assert by_key[("svc", 200)].primary.exc_type == "ConfigError"
    assert [r.exc_type for r in by_key[("svc", 200)].chain] == ["FileNotFoundError", "ConfigError"]


# -- what does not count -------------------------------------------------------------------
@pytest.mark.parametrize(
    "line",
    [
        "error: could not connect, retrying",
        "INFO request failed with Exception: none, this is fine",
        "ValueError: looks like an exception line but no traceback precedes it",
        "see Traceback (most recent call last): in the docs",
        '{"event": "Traceback (most recent call last):\\n  File \\"x\\""}',
        '  File "x.py", line 3, in f',
        "",
    ],
)
def test_ordinary_lines_never_start_a_traceback(line: str) -> None:
    asm = TracebackAssembler()
    assert asm.feed("k", line, 0.0) is False
    assert asm.pending == 0 and not asm.completed


def test_headerless_frames_without_exception_line_are_dropped() -> None:
    asm = TracebackAssembler(flush_after_s=0.5)
    assert asm.feed("k", '  File "/etc/app.conf", line 3', 0.0)
    assert asm.feed("k", "    key = value", 0.0)
    asm.flush(10.0)
    assert not asm.completed


# -- timing: the clock is an argument ------------------------------------------------------
HEAD = [
    "Traceback (most recent call last):",
    '  File "/srv/app/job.py", line 9, in run',
    "    step()",
]


def test_incomplete_traceback_is_flushed_after_the_quiet_period() -> None:
    asm = TracebackAssembler(flush_after_s=0.5, chain_grace_s=0.02)
    feed_all(asm, "k", HEAD, now=10.0)
    assert asm.next_deadline() == pytest.approx(10.5)
    asm.flush(10.4)
    assert not asm.completed and asm.pending == 1
    asm.flush(10.5)
    [done] = asm.completed
    assert not done.traceback.complete
    assert done.traceback.primary.exc_type == INCOMPLETE_TYPE
    assert [f.function for f in done.traceback.primary.frames] == ["run"]


def test_complete_traceback_waits_only_the_chain_grace() -> None:
    asm = TracebackAssembler(flush_after_s=0.5, chain_grace_s=0.02)
    feed_all(asm, "k", [*HEAD, "OSError: disk full"], now=10.0)
    assert asm.next_deadline() == pytest.approx(10.02)
    asm.flush(10.02)
    [done] = asm.completed
    assert done.traceback.complete and done.traceback.primary.title == "OSError: disk full"


@pytest.mark.parametrize(
    "after",
    [
        ["", "service continues"],
        ['{"event": "next", "exception": "x"}'],
        ['  File "/srv/app/x.py", line 1, in g'],
    ],
)
def test_a_line_that_cannot_continue_completes_a_traceback_at_once(after: list[str]) -> None:
    asm = TracebackAssembler()
    feed_all(asm, "k", [*HEAD, "OSError: disk full"])
    for line in after:
        asm.feed("k", line, 0.0)
    done = asm.completed[0]
    assert done.traceback.complete and done.traceback.primary.title == "OSError: disk full"
    assert done.traceback.lines == (*HEAD, "OSError: disk full")


def test_lines_right_after_the_exception_line_are_its_message() -> None:
    """Python prints multi-line messages and PEP 678 notes there; they belong to it."""
    asm = TracebackAssembler()
    feed_all(asm, "k", [*HEAD, "OSError: disk full", "Add a note: while saving"])
    asm.flush(1.0)
    [done] = asm.completed
    assert done.traceback.primary.message == "disk full\nAdd a note: while saving"


def test_chain_arriving_after_completion_is_glued_to_its_head() -> None:
    asm = TracebackAssembler(flush_after_s=0.5, chain_grace_s=0.02)
    feed_all(asm, "k", [*HEAD, "OSError: disk full"], now=10.0)
    asm.flush(10.1)  # the head is reported on its own
    assert asm.feed("k", "", 10.2) is False
    tail = [
        "During handling of the above exception, another exception occurred:",
        "",
        *HEAD,
        "RuntimeError: job failed",
    ]
    assert all(feed_all(asm, "k", tail, now=10.2))
    asm.flush(11.0)
    first, second = asm.completed
    assert first.traceback.primary.exc_type == "OSError"
    assert [r.exc_type for r in second.traceback.chain] == ["OSError", "RuntimeError"]


def test_next_deadline_is_none_when_idle_and_recent_chains_expire() -> None:
    asm = TracebackAssembler(flush_after_s=0.5)
    assert asm.next_deadline() is None
    feed_all(asm, "k", [*HEAD, "OSError: x"], now=0.0)
    asm.flush(1.0)
    asm.flush(5.0)  # past flush_after_s: the head is forgotten
    assert (
        asm.feed("k", "During handling of the above exception, another exception occurred:", 5.0)
        is False
    )


def test_flush_by_keys_and_force() -> None:
    asm = TracebackAssembler()
    feed_all(asm, "a", HEAD)
    feed_all(asm, "b", HEAD)
    assert asm.flush(0.0, keys=["a"]) == 1
    assert [d.key for d in asm.completed] == ["a"]
    assert asm.flush(0.0, force=True) == 1
    assert asm.pending == 0


def test_pending_first_metas() -> None:
    asm = TracebackAssembler()
    asm.feed("a", HEAD[0], 0.0, meta="first")
    asm.feed("a", HEAD[1], 0.0, meta="second")
    assert list(asm.pending_first_metas()) == [("a", "first")]


# -- whole texts ---------------------------------------------------------------------------
def test_assemble_text_finds_each_traceback_in_one_message(tmp_path) -> None:
    a, _ = run_python(SCENARIOS["simple"], tmp_path)
    b, _ = run_python(SCENARIOS["zero_division_carets"], tmp_path)
    text = "\n".join(["ERROR:root:request failed", *a, "retrying", *b])
    found = assemble_text(text)
    assert [tb.primary.exc_type for tb in found] == ["KeyError", "ZeroDivisionError"]


def test_format_records_round_trips(tmp_path) -> None:
    lines, _ = run_python(SCENARIOS["chained_cause"], tmp_path)
    [original] = assemble_text("\n".join(lines))
    [again] = assemble_text(format_records(original.chain))
    assert [(r.exc_type, r.message, r.frames) for r in again.chain] == [
        (r.exc_type, r.message, r.frames) for r in original.chain
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("ValueError: bad", ("ValueError", "bad")),
        ("KeyboardInterrupt", ("KeyboardInterrupt", "")),
        (
            "requests.exceptions.ConnectionError: HTTPConnectionPool(host='x')",
            ("requests.exceptions.ConnectionError", "HTTPConnectionPool(host='x')"),
        ),
        ("mod.factory.<locals>.LocalError: boom", ("mod.factory.<locals>.LocalError", "boom")),
        ("RuntimeError:", ("RuntimeError", "")),
        ("not an exception line", None),
        ("  ValueError: indented", None),
    ],
)
def test_parse_exception_line(line: str, expected: tuple[str, str] | None) -> None:
    assert parse_exception_line(line) == expected


def test_a_logged_exception_that_comes_back_as_the_cause_is_no_record_of_its_own() -> None:
    """logging.exception(...) then raising another exception from the handler: the logged
    traceback is printed first, then the final chain that holds it as its cause."""
    logged = [*HEAD, "KeyError: 'order 7'"]
    final = [*logged, "", "During handling of the above exception, another exception occurred:",
             "", "Traceback (most recent call last):",
             '  File "/srv/app/worker.py", line 15, in process', "ValueError: bad order 7"]
    asm = TracebackAssembler()
    feed_all(asm, "k", [*logged, *final], now=1.0)
    assert asm.completed == []  # the logged one waits for the next record of its stream
    asm.flush(2.0)
    [done] = asm.completed
    assert done.traceback.primary.title == "ValueError: bad order 7"
    assert asm.absorbed == 1


def test_an_unrelated_traceback_right_after_keeps_both_in_order() -> None:
    asm = TracebackAssembler()
    feed_all(asm, "k", [*HEAD, "OSError: disk full", *HEAD, "KeyError: 'x'"], now=1.0)
    assert list(asm.pending_first_metas())  # held and pending: the cursor stays before them
    asm.flush(5.0)
    assert [a.traceback.primary.exc_type for a in asm.completed] == ["OSError", "KeyError"]
    assert asm.absorbed == 0


def test_log_prefixes_on_every_line_are_taken_off() -> None:
    prefix = "2026-12-01 10:00:0{} ERROR app[4242]: "
    lines = [prefix.format(i) + line for i, line in enumerate([*HEAD, "OSError: disk full"])]
    asm = TracebackAssembler()
    feed_all(asm, "k", [*lines, "2026-12-01 10:00:09 INFO app[4242]: service continues"], now=1.0)
    asm.flush(5.0)
    [done] = asm.completed
    assert done.traceback.lines == (*HEAD, "OSError: disk full")
    assert done.traceback.primary.frames[0].filename == "/srv/app/job.py"


def test_a_stream_arriving_with_jitter_waits_longer_for_its_chained_part() -> None:
    asm = TracebackAssembler(flush_after_s=0.5, chain_grace_s=0.02)
    lines = [*HEAD, "KeyError: 'a'"]
    for i, line in enumerate(lines):
        asm.feed("k", line, 10.0 + 0.05 * i)  # 50 ms between lines
    last = 10.0 + 0.05 * (len(lines) - 1)
    assert asm.next_deadline() == pytest.approx(last + 0.15)
    asm.flush(last + 0.1)
    assert asm.completed == []
    chain = ["", "The above exception was the direct cause of the following exception:", "",
             "Traceback (most recent call last):", '  File "/srv/app/x.py", line 3, in f',
             "RuntimeError: wrapped"]
    for i, line in enumerate(chain, 1):
        asm.feed("k", line, last + 0.12 + 0.01 * i)
    asm.flush(20.0)
    [done] = asm.completed
    assert [r.exc_type for r in done.traceback.chain] == ["KeyError", "RuntimeError"]
