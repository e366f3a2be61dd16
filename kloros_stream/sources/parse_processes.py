"""Parse processes: a large batch of files, or one very large file, is loaded in child
processes, never on the event loop's interpreter.

A parse holds the interpreter lock from start to end, so a big file parsed on a thread of
the service stalls its event loop (``/health``, the bus) for as long, and a cold scan of a
large tree runs on one core. Children (:mod:`.parse_child`) read, hash, parse and extract
on every core the service may use (:func:`process_count`) while the service only
unpickles the records; their syntax trees never touch the service's heap. Children live
for one batch: a service at rest has none. A child that dies (killed, out of memory)
ends its share: what it had not answered is loaded again on the parse thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import pickle
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from pathlib import Path

import structlog

from .parse_child import HEADER, frame
from .records import FileRecord, Job, Loaded, SourceSpec, load_batch, rejoin, without_facts

log = structlog.get_logger(__name__)

PROCESS_MIN_FILES = 64
"""A batch of at least this many files to load goes to parse processes."""
LARGE_FILE_BYTES = 256 * 1024
"""A single file at least this large is loaded in a parse process."""
CHUNK_FILES = 16
"""Files per request to a parse process."""
IN_FLIGHT = 2
"""Requests queued per process, so that it never waits for the service between two."""
MAX_PROCESSES = 4
STOP_TIMEOUT_S = 1.0
"""How long a child may take to exit once told to (then it is killed)."""
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
BOOT = (
    "import sys; sys.path[:] = {path!r}; "
    "from kloros_stream.sources.parse_child import main; raise SystemExit(main())"
)
"""A child runs isolated (``-I``: no environment, no working directory on its path) with
the service's own ``sys.path`` (:func:`_child_path`): the same code however the service was
started (installed, a source checkout, ``python -m``)."""


def process_count() -> int:
    """Parse processes for a batch: the cores this process may run on (its affinity and
    its cgroup's CPU quota: a unit with ``CPUQuota=50%`` gets one), at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpus()
    if quota is not None:
        cores = min(cores, quota)
    return max(1, min(cores, MAX_PROCESSES))


def _cgroup_cpus() -> int | None:
    """Whole CPUs the cgroup v2 ``cpu.max`` of this process allows; None if unlimited or
    unknown."""
    try:
        with open("/proc/self/cgroup") as fh:
            group = next((line.split("::", 1)[1].strip() for line in fh
                          if line.startswith("0::")), None)
        if group is None:
            return None
        with open(f"/sys/fs/cgroup{group.rstrip('/')}/cpu.max") as fh:
            quota, period = fh.read().split()
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, int(quota) // max(1, int(period)))


def _child_path() -> list[str]:
    """The service's ``sys.path`` without its working directory (a watched tree's
    ``ast.py`` there must never be imported), this package's root appended if missing."""
    cwd = os.getcwd()
    path = [p for p in sys.path if p and os.path.abspath(p) != cwd]
    return path if PACKAGE_ROOT in path else [*path, PACKAGE_ROOT]


class ParseProcessError(Exception):
    """A parse process could not be started or stopped answering."""


class ParseProcess:
    """One child and its two pipes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls) -> ParseProcess:
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-c", BOOT.format(path=_child_path()),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )
        except OSError as err:
            raise ParseProcessError(f"cannot start: {err}") from err
        return cls(proc)

    def send(self, jobs: list[Job], spec: SourceSpec) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(frame(pickle.dumps((jobs, spec), 5)))

    async def receive(self) -> list[Loaded]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            await self.proc.stdin.drain()
            head = await self.proc.stdout.readexactly(HEADER)
            body = await self.proc.stdout.readexactly(int.from_bytes(head, "little"))
        except (asyncio.IncompleteReadError, ConnectionError) as err:
            raise ParseProcessError(f"its output ended: {err}") from err
        return pickle.loads(body)  # type: ignore[no-any-return]

    async def stop(self, *, graceful: bool) -> None:
        """End the child. ``graceful`` (the batch is done): it reads the end of its input
        and exits. Otherwise (a cancel, a failure) it is killed at once: its answers are
        not wanted. Its output is drained either way, so the pipe closes and the exit is
        seen; a child slower than :data:`STOP_TIMEOUT_S` is killed."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        if not graceful:
            self._kill()
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await self._reap()
        except TimeoutError:
            self._kill()
            await self._reap()

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    async def _reap(self) -> None:
        if self.proc.stdout is not None:
            await self.proc.stdout.read()
        await self.proc.wait()


def _chunks(jobs: list[Job], size: int) -> Iterator[list[Job]]:
    for start in range(0, len(jobs), size):
        yield jobs[start:start + size]


async def load_in_processes(
    jobs: list[Job], spec: SourceSpec, fallback: Executor,
    on_loaded: Callable[[list[Job], list[Loaded]], None], workers: int | None = None,
) -> None:
    """Load ``jobs`` in parse processes, calling ``on_loaded`` with each chunk and its
    results as they come back (on the event loop). What a failed process did not answer
    is loaded on ``fallback`` (the parse thread)."""
    chunks = _chunks(jobs, CHUNK_FILES)
    left: list[list[Job]] = []

    async def share() -> None:
        try:
            proc = await ParseProcess.start()
        except ParseProcessError as err:
            log.error("parse_process_failed", error=str(err))
            return
        sent: deque[list[Job]] = deque()
        graceful = False
        try:
            for chunk in chunks:
                proc.send([(p, r, without_facts(prev)) for p, r, prev in chunk], spec)
                sent.append(chunk)
                if len(sent) < IN_FLIGHT:
                    continue
                results = await proc.receive()  # a chunk leaves `sent` once answered
                _answer(sent.popleft(), results, on_loaded)
            while sent:
                results = await proc.receive()
                _answer(sent.popleft(), results, on_loaded)
            graceful = True
        except ParseProcessError as err:
            log.error("parse_process_failed", error=str(err), files=sum(map(len, sent)))
            left.extend(sent)
        finally:
            await proc.stop(graceful=graceful)

    async with asyncio.TaskGroup() as group:  # a cancel or a failure stops every child
        for _ in range(workers or process_count()):
            group.create_task(share())
    left.extend(chunks)  # every process failed before the end
    reload = functools.partial(load_batch, spec=spec, trust_stat=False)
    loop = asyncio.get_running_loop()
    for chunk in left:
        on_loaded(chunk, await loop.run_in_executor(fallback, reload, chunk))


def _answer(chunk: list[Job], results: list[Loaded],
            on_loaded: Callable[[list[Job], list[Loaded]], None]) -> None:
    on_loaded(chunk, [(path, rejoin(record, previous), parsed) for (path, _root, previous), (
        _path, record, parsed) in zip(chunk, results, strict=True)])


async def load_large(
    path: Path, root: Path, previous: FileRecord | None, spec: SourceSpec, fallback: Executor
) -> Loaded:
    """One very large file, loaded in a parse process of its own."""
    out: list[Loaded] = []
    await load_in_processes([(path, root, previous)], spec, fallback,
                            lambda _chunk, loaded: out.extend(loaded), workers=1)
    return out[0]
