"""exception: grouping of real tracebacks, one question per distinct bug.

The corpus is produced at run time by running real programs (``kind = "none"``): a small
application package written here (``shopapp``) is installed under several paths (two
checkouts, two venvs' site-packages, one without source files: ``.pyc`` only, as frozen
apps ship), and each scenario runs as a subprocess with varying input (ids in messages),
its stderr captured. Scenarios raise real errors, including real library ones (``json``,
``int()``, ``asyncio.TaskGroup``'s ``ExceptionGroup``), chains (``raise ... from``, and
"During handling ..."), and ``logging.exception`` followed by a re-raise.

Each captured stderr is then presented as people meet it: as printed; with a log prefix on
every line; with blank lines between frames; and interleaved line by line with another
process's output in the journal (one stream per PID) arriving with random jitter. The lines
go through the exception monitor's own path (:class:`TracebackAssembler` with the monitor's
timings, then :func:`fingerprint_records`); the question a traceback lands in is its
fingerprint. Labels: every run's item is ``<scenario>/<install>/<input>/<presentation>``
and its ``group`` is the scenario (one bug each). An item is *reported* when a question
holds its final exception; a record of the run that is not its final exception (a logged
cause, the head of a chain split by jitter) is a question of its own and counts against
grouping (the bug then has two questions).
"""

from __future__ import annotations

import compileall
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from kloros_stream.analysis.fingerprint import fingerprint_records
from kloros_stream.analysis.tracebacks import TracebackAssembler
from kloros_stream.monitors.exception import CHAIN_GRACE_S

from ..corpora import Corpus
from ..scoring import Outcome

GAP_TYPE = "exception"


APP = {
    "__init__.py": "",
    "cart.py": """
def lookup(items, key):
    return items[key]

def total(items, keys):
    return sum(lookup(items, k) for k in keys)
""",
    "pricing.py": """
def average(prices):
    return sum(prices) / len(prices)

def parse_price(text):
    return int(text)
""",
    "config.py": """
class ConfigError(Exception):
    pass

def load(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError as err:
        raise ConfigError(f"cannot load config {path}") from err
""",
    "worker.py": """
import logging
from . import cart

def handle(msg):
    try:
        return cart.lookup({}, msg)
    except KeyError:
        raise RuntimeError(f"handler failed for message {msg}")

def process(order):
    try:
        return cart.lookup({}, order)
    except KeyError:
        logging.exception("lookup failed for order %s", order)
        raise ValueError(f"bad order {order}")
""",
    "tasks.py": """
import asyncio

async def _fail(kind, n):
    await asyncio.sleep(0)
    if kind == "key":
        raise KeyError(n)
    if kind == "value":
        raise ValueError(f"value {n}")
    raise TimeoutError(f"took {n} s")

async def _run_all(n):
    async with asyncio.TaskGroup() as tg:
        for kind in ("key", "value", "timeout"):
            tg.create_task(_fail(kind, n))

def run_all(n):
    asyncio.run(_run_all(n))
""",
    "parse.py": """
import json

def decode(text):
    return json.loads(text)

def validate(record):
    raise ValueError(f"record {record} is invalid:\\n  field a missing\\n  field b empty")
""",
    "deep.py": """
def walk(n):
    return walk(n + 1)
""",
}

SCENARIOS: dict[str, str] = {
    "cart_keyerror": "from shopapp import cart; cart.total({'a': 1}, ['a', ARG])",
    "pricing_zero": "from shopapp import pricing; pricing.average([] if ARG else [])",
    "config_chain": "from shopapp import config; config.load('/nonexistent/' + ARG)",
    "implicit_chain": "from shopapp import worker; worker.handle(ARG)",
    "logged_reraise": "from shopapp import worker; worker.process(ARG)",
    "task_group": "from shopapp import tasks; tasks.run_all(len(ARG))",
    "json_decode": "from shopapp import parse; parse.decode('{bad ' + ARG)",
    "int_parse": "from shopapp import pricing; pricing.parse_price('x' + ARG)",
    "multiline": "from shopapp import parse; parse.validate(ARG)",
    "recursion": "from shopapp import deep; deep.walk(len(ARG))",
}
NOT_EXCEPTIONS: dict[str, str] = {
    "warning_only": "import warnings; warnings.warn('cache ' + ARG + ' is stale', "
    "DeprecationWarning, stacklevel=1)",
    "error_words": "import sys; print('ERROR: request ' + ARG + ' failed: Traceback follows "
    "below?', file=sys.stderr); print('KeyError: is not an exception here',"
    " file=sys.stderr)",
    "logged_error": "import logging; logging.error('payment %s declined: ValueError raised "
    "by the bank', ARG)",
}
"""Programs whose stderr mentions errors but holds no traceback: no question is right."""
INPUTS = ("id-1041", "id-77")
INSTALLS = (
    "srv/deploy",
    "home/bob/checkout",
    "opt/venv-a/lib/python3.11/site-packages",
    "home/u/.venv/lib/python3.11/site-packages",
    "frozen/app",
)
PRESENTATIONS = ("plain", "prefixed", "blank_lines", "interleaved")


def _install(base: Path, where: str) -> Path:
    root = base / where
    pkg = root / "shopapp"
    pkg.mkdir(parents=True)
    for name, text in APP.items():
        (pkg / name).write_text(text.lstrip("\n"))
    if where.startswith("frozen"):  # sourceless: .pyc next to where the sources were
        compileall.compile_dir(pkg, quiet=1, legacy=True)
        for source in pkg.glob("*.py"):
            source.unlink()
    return root


def _run(root: Path, code: str, arg: str) -> list[str]:
    program = code.replace("ARG", repr(arg))
    proc = subprocess.run(
        [sys.executable, "-c", program],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
    )
    return proc.stderr.splitlines()


def _present(lines: list[str], how: str) -> list[str]:
    if how == "prefixed":
        return [
            f"2026-12-01 10:00:{i % 60:02d},123 ERROR shopapp[4242]: {line}"
            for i, line in enumerate(lines)
        ]
    if how == "blank_lines":
        out: list[str] = []
        for line in lines:
            out.append(line)
            if line.startswith("    ") and not line.strip().startswith(("^", "~")):
                out.append("")
        return out
    return lines


def _assemble(streams: list[tuple[str, list[str]]], rng: random.Random) -> list[tuple[str, str]]:
    """Feed the streams' lines interleaved with jitter; (stream, fingerprint) per record."""
    asm = TracebackAssembler(flush_after_s=0.5, chain_grace_s=CHAIN_GRACE_S)
    cursors = [0] * len(streams)
    now = 0.0
    while any(c < len(s[1]) for c, s in zip(cursors, streams, strict=True)):
        i = rng.choice([k for k, s in enumerate(streams) if cursors[k] < len(s[1])])
        key, lines = streams[i]
        now += rng.uniform(0.0, 0.03)  # journal arrival jitter
        asm.feed(key, lines[cursors[i]], now)
        cursors[i] += 1
        asm.flush(now)
    asm.flush(now, force=True)
    return [(str(a.key), fingerprint_records(a.traceback.chain)) for a in asm.completed]


def evaluate(corpus: Corpus, tree: Path | None) -> Outcome:
    rng = random.Random(10)
    settings = corpus.settings if corpus is not None else {}
    installs = settings.get("installs", INSTALLS)
    inputs = settings.get("inputs", INPUTS)
    programs = {**SCENARIOS, **NOT_EXCEPTIONS}
    base = Path(tempfile.mkdtemp(prefix="kloros-quality-exc-"))
    try:
        roots = {where: _install(base, where) for where in installs}
        runs: dict[str, list[str]] = {}
        for scenario, code in programs.items():
            for where, root in roots.items():
                for arg in inputs:
                    runs[f"{scenario}/{where}/{arg}"] = _run(root, code, arg)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    groups: dict[str, set[str]] = {}
    reported: set[str] = set()
    names = sorted(runs)
    for how in settings.get("presentations", PRESENTATIONS):
        for n, name in enumerate(names):
            item = f"{name}/{how}"
            if how == "interleaved":  # with the next run, as two PIDs in the journal
                other = names[(n + 1) % len(names)]
                streams = [(item, runs[name]), ("other", runs[other])]
            else:
                streams = [(item, _present(runs[name], how))]
            records = [(k, fp) for k, fp in _assemble(streams, rng) if k == item]
            for _, fp in records:
                # Every record of the run lands in its question: a logged cause or a
                # chain's head split off by jitter is a second question for the bug.
                groups.setdefault(fp, set()).add(item)
            if records:
                reported.add(item)
    size = {
        "programs": len(programs),
        "bugs": len(SCENARIOS),
        "runs": len(runs),
        "items": len(runs) * len(settings.get("presentations", PRESENTATIONS)),
    }
    return Outcome(
        reported=frozenset(reported),
        size=size,
        groups={fp: frozenset(items) for fp, items in groups.items()},
    )


def label_names(
    installs: tuple[str, ...] = INSTALLS, inputs: tuple[str, ...] = INPUTS
) -> list[tuple[str, str | None]]:
    """(item, bug) for every item the full corpus produces; bug None: no exception."""
    out: list[tuple[str, str | None]] = []
    for scenario in [*SCENARIOS, *NOT_EXCEPTIONS]:
        bug = scenario if scenario in SCENARIOS else None
        for where in installs:
            for arg in inputs:
                out += [(f"{scenario}/{where}/{arg}/{how}", bug) for how in PRESENTATIONS]
    return out
