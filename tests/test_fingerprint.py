"""Sentry-like fingerprints: one bug, one fingerprint, whatever its ids and line numbers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kloros_stream.analysis.fingerprint import (
    fingerprint_message,
    fingerprint_records,
    fingerprint_traceback,
    frame_module,
    is_in_app,
    normalize_message,
)
from kloros_stream.analysis.tracebacks import ExceptionRecord, Frame, assemble_text

STDLIB = "/usr/lib/python3.11/asyncio/events.py"
LIBRARY = "/srv/venv/lib/python3.11/site-packages/aiohttp/web_protocol.py"


def tb(*frames: tuple[str, int, str], exc: str = "KeyError: 'job 17'") -> str:
    lines = ["Traceback (most recent call last):"]
    for filename, lineno, func in frames:
        lines += [f'  File "{filename}", line {lineno}, in {func}', "    code()"]
    return "\n".join([*lines, exc])


def fp(text: str) -> str:
    [parsed] = assemble_text(text)
    return fingerprint_traceback(parsed)


APP = ("/home/kloros/src/kloros/scheduler.py", 40, "dispatch")
APP_LEAF = ("/home/kloros/src/kloros/jobs.py", 12, "load")


def test_same_bug_with_other_ids_and_line_numbers_is_one_fingerprint() -> None:
    a = fp(tb(APP, APP_LEAF, exc="KeyError: 'job 17'"))
    b = fp(tb((APP[0], 45, APP[2]), (APP_LEAF[0], 99, APP_LEAF[2]), exc="KeyError: 'job 18'"))
    assert a == b
    assert len(a) == 32 and int(a, 16) >= 0


def test_other_checkout_location_is_the_same_bug() -> None:
    moved = (
        ("/opt/deploy/kloros/scheduler.py", 40, "dispatch"),
        ("/opt/deploy/kloros/jobs.py", 12, "load"),
    )
    assert fp(tb(APP, APP_LEAF)) == fp(tb(*moved))


def test_other_type_or_other_in_app_function_is_another_bug() -> None:
    base = fp(tb(APP, APP_LEAF))
    assert fp(tb(APP, APP_LEAF, exc="ValueError: 'job 17'")) != base
    assert fp(tb(APP, (APP_LEAF[0], 12, "save"))) != base
    assert fp(tb(APP, ("/home/kloros/src/kloros/other.py", 12, "load"))) != base


def test_library_and_stdlib_frames_do_not_count() -> None:
    base = fp(tb(APP, APP_LEAF))
    with_lib = fp(
        tb(
            (STDLIB, 80, "_run"),
            APP,
            (LIBRARY, 300, "handle"),
            APP_LEAF,
            ("<frozen importlib._bootstrap>", 1, "_call"),
        )
    )
    assert with_lib == base


def test_without_in_app_frames_all_frames_count() -> None:
    a = fp(tb((STDLIB, 80, "_run"), (LIBRARY, 300, "handle")))
    b = fp(tb((STDLIB, 81, "_run"), (LIBRARY, 310, "handle"), exc="KeyError: 'other'"))
    c = fp(tb((STDLIB, 80, "_run"), (LIBRARY, 300, "data_received")))
    assert a == b != c


def test_chain_members_take_part() -> None:
    head = tb(APP_LEAF, exc="OSError: disk full")
    tail = tb(APP, exc="RuntimeError: job failed")
    marker = "\nDuring handling of the above exception, another exception occurred:\n\n"
    chained = fp(head + "\n" + marker + tail)
    assert chained != fp(tail)
    other_cause = fp(tb(APP_LEAF, exc="PermissionError: denied") + "\n" + marker + tail)
    assert chained != other_cause


def test_without_a_stack_the_normalised_message_counts() -> None:
    a = fingerprint_records(
        [
            ExceptionRecord(
                "TimeoutError",
                "no reply from 10.0.0.7:5432 "
                "after 30s (request 4f1c2a9e-0b6d-4c1e-9a3f-"
                "2d4b8c6e1f00)",
            )
        ]
    )
    b = fingerprint_records(
        [
            ExceptionRecord(
                "TimeoutError",
                "no reply from 10.0.0.9:6543 "
                "after 2.5s (request 11111111-2222-3333-4444-"
                "555555555555)",
            )
        ]
    )
    c = fingerprint_records([ExceptionRecord("TimeoutError", "queue full")])
    assert a == b != c


def test_line_numbers_never_take_part() -> None:
    a = fingerprint_records([ExceptionRecord("E", "m", (Frame("/a/b/c.py", 1, "f"),))])
    b = fingerprint_records([ExceptionRecord("E", "m", (Frame("/a/b/c.py", 2, "f"),))])
    assert a == b


def test_message_fingerprint_depends_on_source_and_normalised_text() -> None:
    a = fingerprint_message("kloros-voice", "failed to open /dev/snd/pcmC0D0p: error -16")
    b = fingerprint_message("kloros-voice", "failed to open /dev/snd/pcmC1D0p: error -19")
    assert a == b
    assert fingerprint_message("kloros-brain", "failed to open /dev/x: error -16") != a


def test_fingerprint_is_the_same_in_another_process_and_hash_seed() -> None:
    text = tb(APP, APP_LEAF)
    code = (
        "import sys; from kloros_stream.analysis.tracebacks import assemble_text;"
        "from kloros_stream.analysis.fingerprint import fingerprint_traceback;"
        "print(fingerprint_traceback(assemble_text(sys.stdin.read())[0]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=text,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert out.stdout.strip() == fp(text)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("job 4f1c2a9e-0b6d-4c1e-9a3f-2d4b8c6e1f00 failed", "job <uuid> failed"),
        ("at 2024-05-01T12:30:01.123Z and 2024-05-01", "at <date> and <date>"),
        ("since 12:30:01", "since <time>"),
        ("GET http://example.org/api?id=7 failed", "GET <url> failed"),
        ("connect 192.168.1.20:8080 refused", "connect <ip> refused"),
        ("bind fe80::1:2 and ::1", "bind <ip> and <ip>"),
        ("No such file: '/var/lib/kloros/state.db'", "No such file: <str>"),
        ('key "user_42" missing', "key <str> missing"),
        ("cannot read /var/log/kloros/app.log now", "cannot read <path> now"),
        ("object at 0x7f3a2b1c9d40", "object at <hex>"),
        ("digest deadbeef1234 mismatch", "digest <hex> mismatch"),
        (
            "timed out after 30s, 1.5 ms, 200ms, 3 seconds",
            "timed out after <duration>, <duration>, <duration>, <duration>",
        ),
        ("worker-17 exited with status 137", "worker-<num> exited with status <num>"),
        ("retry   3\tof 5", "retry <num> of <num>"),
        ("plain message", "plain message"),
    ],
)
def test_normalize_message(message: str, expected: str) -> None:
    assert normalize_message(message) == expected


@pytest.mark.parametrize(
    ("filename", "in_app", "module"),
    [
        ("/home/kloros/src/kloros/bus.py", True, "kloros.bus"),
        ("/home/kloros/src/kloros/pkg/__init__.py", True, "kloros.pkg"),
        (LIBRARY, False, "aiohttp.web_protocol"),
        ("/usr/lib/python3/dist-packages/yaml/reader.py", False, "yaml.reader"),
        (STDLIB, False, "asyncio.events"),
        ("/root/.pyenv/versions/3.11.7/lib/python3.11/json/decoder.py", False, "json.decoder"),
        ("<frozen importlib._bootstrap>", False, "<frozen importlib._bootstrap>"),
        ("<string>", True, "<string>"),
        ("C:\\Python311\\Lib\\asyncio\\events.py", False, "asyncio.events"),
        ("app.py", True, "app"),
    ],
)
def test_in_app_and_module(filename: str, in_app: bool, module: str) -> None:
    assert is_in_app(filename) is in_app
    assert frame_module(filename) == module


def test_one_bug_in_a_checkout_and_installed_into_a_venv() -> None:
    checkout = fp(tb(("<string>", 1, "<module>"), ("/home/bob/proj/shop/core/cart.py", 3, "total"),
                     ("/home/bob/proj/shop/core/cart.py", 1, "lookup")))
    venv = "/opt/venv/lib/python3.11/site-packages/shop/core/cart.py"
    installed = fp(tb(("<string>", 1, "<module>"), (venv, 30, "total"), (venv, 10, "lookup"),
                      exc="KeyError: 'job 99'"))
    assert checkout == installed
    assert fp(tb((venv, 30, "total"), (venv, 10, "save"))) != installed


def test_an_exception_group_is_one_bug_whatever_it_holds() -> None:
    def group(*members: str) -> str:
        rows = ["  + Exception Group Traceback (most recent call last):",
                '  |   File "/srv/app/shop/tasks.py", line 9, in run_all',
                "  |     raise ExceptionGroup('tasks failed', errors)",
                f"  | ExceptionGroup: tasks failed ({len(members)} sub-exceptions)"]
        for i, member in enumerate(members, 1):
            rows += [f"  +-+---------------- {i} ----------------",
                     "    | Traceback (most recent call last):",
                     f'    |   File "/srv/app/shop/tasks.py", line {i}, in job_{member}',
                     f"    | {member}: boom {i}"]
        return "\n".join([*rows, "    +------------------------------------"])

    assert fp(group("KeyError", "ValueError")) == fp(group("ValueError", "TimeoutError",
                                                           "KeyError"))
