"""exception_absorb: a record published alone and then held as a cause or context by a later
chain of its process is withdrawn. Pure: the assembler is driven with explicit times (a
re-raise arriving after the chain grace, deterministically), no event loop."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from kloros_stream.analysis.occurrences import Occurrence, priority_occurrence, traceback_occurrence
from kloros_stream.analysis.tracebacks import TracebackAssembler
from kloros_stream.monitors.exception_absorb import (
    MAX_GAP_S,
    LoneRecords,
    Sighting,
    absorb,
    identity,
    resolution,
    stream_of,
    unrecorded,
)
from kloros_stream.monitors.exception_journal import journal_sighting
from kloros_stream.monitors.exception_state import FingerprintMemory, ReplayState
from tests.support.exception_monitor import Journal, config, following, names
from tests.support.inputs import append_lines, traceback_lines
from tests.support.journald import scripted_journalctl
from tests.support.scripted import wait_until

WORKER = [
    "Traceback (most recent call last):",
    '  File "/srv/app/worker.py", line 12, in process',
    "    return orders[order]",
    "KeyError: 'order 7'",
]
CHAIN = [
    *WORKER,
    "",
    "During handling of the above exception, another exception occurred:",
    "",
    "Traceback (most recent call last):",
    '  File "/srv/app/worker.py", line 15, in process',
    '    raise ValueError("bad order 7")',
    "ValueError: bad order 7",
]
LOGGED = ["ERROR:root:lookup failed for order 7", *WORKER]
OUTER = [*CHAIN, "", "During handling of the above exception, another exception occurred:",
         "", "Traceback (most recent call last):",
         '  File "/srv/app/api.py", line 30, in handle', "RuntimeError: request failed"]
GRACE = 0.02
PROC = stream_of("j", "kloros-orders.service", 4242, "orders")
OTHER = stream_of("j", "kloros-orders.service", 4343, "orders")


class Pipeline:
    """What the monitor does with finished records, minus the I/O: each completed record
    is an occurrence, counted in the fingerprint memory, then checked for absorption."""

    def __init__(self) -> None:
        self.asm = TracebackAssembler(flush_after_s=0.5, chain_grace_s=GRACE)
        self.memory = FingerprintMemory(64)
        self.lone = LoneRecords()
        self.published: list[str] = []
        self.open: dict[str, str] = {}  # fingerprint -> title: questions open now
        self.withdrawn: list[int | None] = []  # sightings left after each withdrawal

    def feed(self, lines: list[str], at: float, key: object = PROC) -> None:
        for i, line in enumerate(lines):  # each line's time is its entry's own timestamp too
            self.asm.feed(key, line, at + i * 0.001, at + i * 0.001)

    def flush(self, now: float) -> None:
        self.asm.flush(now)
        done, self.asm.completed = self.asm.completed, []
        for n, item in enumerate(done):
            stream = item.key if isinstance(item.key, tuple) else PROC
            occ = traceback_occurrence(item.traceback, f"k{now}-{n}", now)
            self.publish(occ, Sighting.of(stream, item.first_meta, item.last_meta, item))

    def publish(self, occ: Occurrence, seen: Sighting) -> None:
        self.memory.record(occ.fingerprint, occ.observed_at)
        self.published.append(occ.title)
        self.open[occ.fingerprint] = occ.title
        for w in absorb(self.lone, self.memory, occ, seen):
            self.withdrawn.append(w.left)
            if w.left == 0:
                del self.open[w.lone.fingerprint]


def test_a_re_raise_arriving_after_the_chain_grace_withdraws_the_logged_question() -> None:
    p = Pipeline()
    p.feed(LOGGED, at=0.0)
    p.flush(0.0 + 10 * GRACE)  # quiet past the grace: the logged record is done alone
    assert p.published == ["KeyError: 'order 7'"]
    p.feed(CHAIN, at=1.0)  # the re-raise, written late
    p.flush(2.0)
    assert p.published == ["KeyError: 'order 7'", "ValueError: bad order 7"]
    assert sorted(p.open.values()) == ["ValueError: bad order 7"]
    assert len(p.lone) == 1  # the chain, which a further re-raise may hold in turn


def counts(p: Pipeline) -> dict[str, int]:
    """Sightings counted per open question's title."""
    counted = {row[0]: row[1] for row in p.memory.dump()}
    return {title: counted[fp] for fp, title in p.open.items()}


def test_scenario_a_an_earlier_separate_sighting_is_not_withdrawn() -> None:
    """Request 1 logs the KeyError and carries on; request 2 logs it and re-raises in
    time (the assembler absorbs that logged record): request 1's sighting stands."""
    p = Pipeline()
    p.feed(LOGGED, at=0.0)
    p.flush(1.0)
    p.feed([*LOGGED, *CHAIN], at=2.0)
    p.flush(3.0)
    assert p.asm.absorbed == 1 and p.withdrawn == []
    assert counts(p) == {"KeyError: 'order 7'": 1, "ValueError: bad order 7": 1}


def test_scenario_b_only_the_logged_record_of_the_late_chain_is_withdrawn() -> None:
    """Three requests log the KeyError alone, a fourth logs it and re-raises late: one
    sighting (the fourth's) is taken off, the question stays open with three."""
    p = Pipeline()
    for i in range(4):
        p.feed(LOGGED, at=float(i))
        p.flush(i + 0.5)
    assert counts(p) == {"KeyError: 'order 7'": 4}
    p.feed(CHAIN, at=4.0)
    p.flush(5.0)
    assert p.withdrawn == [3]
    assert counts(p) == {"KeyError: 'order 7'": 3, "ValueError: bad order 7": 1}


def test_a_record_published_in_between_ends_the_run() -> None:
    """The process published another exception after the logged one: not adjacent."""
    p = Pipeline()
    p.feed(LOGGED, at=0.0)
    p.flush(0.5)
    p.feed(traceback_lines("OSError: disk full", 5, "save"), at=1.0)
    p.flush(1.5)
    p.feed(CHAIN, at=2.0)
    p.flush(3.0)
    assert p.withdrawn == [] and len(p.open) == 3


def test_a_record_written_too_long_before_the_chain_is_not_withdrawn() -> None:
    p = Pipeline()
    p.feed(LOGGED, at=0.0)
    p.flush(0.5)
    p.feed(CHAIN, at=MAX_GAP_S + 0.1)
    p.flush(MAX_GAP_S + 1.0)
    assert p.withdrawn == [] and len(p.open) == 2


def test_a_fingerprint_no_longer_counted_is_not_resolved() -> None:
    """Memory forgot the logged record's fingerprint (another process's pushed it out):
    its sighting cannot be taken off, and its question is not resolved."""
    p = Pipeline()
    p.memory = FingerprintMemory(1)
    p.feed(LOGGED, at=0.0)
    p.flush(0.5)
    p.feed(traceback_lines("OSError: disk full", 5, "save"), at=1.0, key=OTHER)
    p.flush(1.5)
    p.feed(CHAIN, at=2.0)
    p.flush(3.0)
    assert p.withdrawn == [None]
    assert "KeyError: 'order 7'" in p.open.values()


def test_journal_stream_has_the_boot_and_none_without_a_pid() -> None:
    e = {"_PID": "4242", "SYSLOG_IDENTIFIER": "orders", "_BOOT_ID": "b1",
         "__REALTIME_TIMESTAMP": "1000000"}
    one = journal_sighting(e, "u", e, None)
    assert one.stream is not None and one.first_at == 1.0
    assert journal_sighting({**e, "_BOOT_ID": "b2"}, "u", e, None).stream != one.stream
    assert journal_sighting({**e, "_PID": ""}, "u", e, None).stream is None
    p = Pipeline()  # with no process known nothing is remembered or withdrawn
    for lines, at in ((LOGGED, 0.0), (CHAIN, 1.0)):
        p.feed(lines, at)
        p.asm.flush(at + 0.5)
        [item] = p.asm.completed
        p.asm.completed = []
        occ = traceback_occurrence(item.traceback, f"k{at}", at)
        p.publish(occ, Sighting.of(None, item.first_meta, item.last_meta, item))
    assert p.withdrawn == [] and len(p.lone) == 0 and len(p.open) == 2


def test_in_time_the_assembler_absorbs_and_nothing_is_withdrawn() -> None:
    p = Pipeline()
    p.feed([*LOGGED, *CHAIN], at=0.0)
    p.flush(2.0)
    assert p.published == ["ValueError: bad order 7"]
    assert p.asm.absorbed == 1
    assert list(p.open.values()) == ["ValueError: bad order 7"]


def test_the_chains_own_first_part_finished_early_is_withdrawn_too() -> None:
    """Both gaps late: the logged record, then the first part of the final print (its
    ``During handling`` line came late as well) were each published alone."""
    p = Pipeline()
    p.feed(LOGGED, at=0.0)
    p.flush(0.5 * GRACE * 10)
    p.feed(WORKER, at=1.0)
    p.flush(1.5)
    assert p.published == ["KeyError: 'order 7'", "KeyError: 'order 7'"]
    p.feed(CHAIN[4:], at=2.0)  # "During handling ..." and the ValueError: glued to its head
    p.flush(3.0)
    assert p.published[-1] == "ValueError: bad order 7"
    assert sorted(p.open.values()) == ["ValueError: bad order 7"]
    assert p.memory.discount("nothing") is None


def test_a_question_also_sighted_in_another_process_stays_open() -> None:
    p = Pipeline()
    p.feed(WORKER, at=0.0, key=OTHER)  # another process logs the same KeyError and goes on
    p.feed(LOGGED, at=0.0)
    p.flush(1.0)
    p.feed(CHAIN, at=2.0)
    p.flush(3.0)
    [key_fp] = [fp for fp, t in p.open.items() if t.startswith("KeyError")]
    assert p.memory.record(key_fp, 4.0)[0] == 2  # one sighting taken off, the other's kept
    assert sorted(p.open.values()) == ["KeyError: 'order 7'", "ValueError: bad order 7"]


def test_another_process_chain_absorbs_nothing() -> None:
    p = Pipeline()
    p.feed(LOGGED, at=0.0)
    p.flush(1.0)
    p.feed(CHAIN, at=2.0, key=OTHER)
    p.flush(3.0)
    assert sorted(p.open.values()) == ["KeyError: 'order 7'", "ValueError: bad order 7"]


def test_only_the_same_exception_is_absorbed_type_message_and_location() -> None:
    for logged in (
        [*WORKER[:-1], "KeyError: 'order 8'"],  # another message
        [WORKER[0], '  File "/srv/app/worker.py", line 13, in process', WORKER[2], WORKER[3]],
        [*WORKER[:-1], "LookupError: 'order 7'"],  # another type
    ):
        p = Pipeline()
        p.feed(logged, at=0.0)
        p.flush(1.0)
        p.feed(CHAIN, at=2.0)
        p.flush(3.0)
        assert len(p.open) == 2, logged


def test_a_chain_that_is_logged_and_re_raised_again_is_absorbed_by_the_outer_one() -> None:
    p = Pipeline()
    p.feed(CHAIN, at=0.0)
    p.flush(1.0)
    p.feed(OUTER, at=2.0)
    p.flush(3.0)
    assert list(p.open.values()) == ["RuntimeError: request failed"]


def test_an_in_time_absorption_two_chains_deep_withdraws_nothing() -> None:
    """Request 2 logs the KeyError, prints the K -> V chain and raises K -> V -> R, all in
    time: the logged KeyError is absorbed into the printed chain, that chain into the
    final one. Request 1's separate KeyError stands."""
    p = Pipeline()
    p.feed(LOGGED, at=0.0)
    p.flush(1.0)
    p.feed([*LOGGED, *CHAIN, *OUTER], at=2.0)
    p.flush(3.0)
    assert p.asm.absorbed == 2 and p.withdrawn == []
    assert counts(p)["KeyError: 'order 7'"] == 1


def test_priority_lines_are_not_remembered_and_single_records_hold_nothing() -> None:
    lone = LoneRecords()
    memory = FingerprintMemory(16)
    line = priority_occurrence("orders", "KeyError: 'order 7'", "3", "c1", 1.0)
    assert absorb(lone, memory, line, Sighting(PROC, 1.0, 1.0)) == [] and len(lone) == 0
    tb = TracebackAssembler()
    for text in WORKER:
        tb.feed(0, text, 0.0)
    tb.flush(0.0, force=True)
    occ = traceback_occurrence(tb.completed[0].traceback, "c2", 1.0)
    seen = Sighting(PROC, 1.0, 1.0)
    assert absorb(lone, memory, occ, seen) == [] and len(lone) == 1
    assert absorb(lone, memory, occ, seen) == [] and len(lone) == 2  # a repeat holds nothing


def test_lone_records_are_bounded_per_process_and_in_processes() -> None:
    p = Pipeline()
    p.lone = LoneRecords(per_stream=2, streams=3)
    for i in range(4):
        p.feed([*WORKER[:-1], f"KeyError: 'order {i}'"], at=float(i))
        p.flush(i + 0.5)
    assert len(p.lone) == 2
    for pid in range(5):
        p.feed(WORKER, at=10.0 + pid, key=stream_of("j", "u", pid, "x"))
        p.flush(10.5 + pid)
    assert len(p.lone.dump()) == 3


def test_resolution_names_the_question_and_the_chain() -> None:
    p = Pipeline()
    p.feed(LOGGED, at=0.0)
    p.flush(1.0)
    [(fp, title)] = p.open.items()
    p.feed(CHAIN, at=2.0)
    p.asm.flush(3.0)
    [item] = p.asm.completed
    occ = traceback_occurrence(item.traceback, "k", 3.0)
    p.memory.record(occ.fingerprint, 3.0)
    [w] = absorb(p.lone, p.memory, occ, Sighting.of(PROC, 2.0, 2.1, item))
    facts = resolution(w, "kloros-orders.service", "error_handling")
    assert facts["gap_type"] == "exception" and facts["gap_name"] == title
    assert facts["fingerprint"] == fp and facts["gap_category"] == "error_handling"
    assert facts["gap_reason"].startswith("absorbed into the chain of ValueError: bad order 7")


def test_checkpoint_keeps_what_a_later_chain_may_absorb() -> None:
    """After a restart the chain absorbs a record published alone before it."""
    p = Pipeline()
    p.feed(LOGGED, at=0.0)
    p.flush(1.0)
    data = orjson.loads(orjson.dumps(ReplayState().dump(None, p.memory, p.lone, 1.0)))
    data["lone"].append(["bad"])
    data["lone"].append([["j", "u"], [["KeyError", "x", "f.py", "12", "f", "fp", "t"]]])
    q = Pipeline()
    assert ReplayState().load(data, q.memory, q.lone)
    assert len(q.lone) == 1 and len(q.memory) == 1
    q.open = dict(p.open)
    q.feed(CHAIN, at=2.0)
    q.flush(3.0)
    assert list(q.open.values()) == ["ValueError: bad order 7"]


def test_a_chain_re_read_after_a_restart_withdraws_parts_the_checkpoint_does_not_count() -> None:
    """Killed after publishing the logged record alone, before the checkpoint held it: the
    re-read comes whole (the assembler absorbs the logged record), and the chain withdraws
    each part whose fingerprint the restored memory does not count."""
    before = Pipeline()
    before.feed(LOGGED, at=0.0)
    before.flush(1.0)
    [(key_fp, _)] = before.open.items()
    p = Pipeline()  # the restart: memory and lone records as checkpointed before the kill
    p.feed([*LOGGED, *CHAIN], at=5.0)
    p.asm.flush(6.0)
    [item] = p.asm.completed
    chain = traceback_occurrence(item.traceback, "k", 6.0)
    p.memory.record(chain.fingerprint, 6.0)
    live = Sighting.of(PROC, 5.0, 5.1, item)
    assert absorb(p.lone, p.memory, chain, live) == []  # live: nothing to withdraw
    replayed = Sighting.of(PROC, 5.0, 5.1, item, replayed=True)
    [w] = absorb(LoneRecords(), p.memory, chain, replayed)
    assert (w.lone.fingerprint, w.left, w.into) == (key_fp, 0, "ValueError: bad order 7")
    p.memory.record(key_fp, 7.0)  # counted (the previous run's checkpoint held it)
    assert absorb(LoneRecords(), p.memory, chain, replayed) == []


def test_unrecorded_offers_each_cause_with_what_it_holds() -> None:
    outer = [*CHAIN, "", "The above exception was the direct cause of the following exception:",
             "", "Traceback (most recent call last):",
             '  File "/srv/app/api.py", line 30, in handle', "RuntimeError: request failed"]
    asm = TracebackAssembler()
    for text in outer:
        asm.feed(0, text, 0.0)
    asm.flush(0.0, force=True)
    records = asm.completed[0].traceback.chain
    memory = FingerprintMemory(16)
    parts = unrecorded(records, memory)
    assert [lone.title for lone in parts] == ["KeyError: 'order 7'", "ValueError: bad order 7"]
    memory.record(parts[1].fingerprint, 1.0)
    assert [lone.title for lone in unrecorded(records, memory)] == ["KeyError: 'order 7'"]


def test_identity_is_type_message_and_innermost_frame() -> None:
    tb = TracebackAssembler()
    for text in WORKER:
        tb.feed(0, text, 0.0)
    tb.flush(0.0, force=True)
    record = tb.completed[0].traceback.primary
    assert identity(record) == ("KeyError", "'order 7'", "/srv/app/worker.py", 12, "process")


def test_fingerprint_memory_discount_forgets_at_zero() -> None:
    memory = FingerprintMemory(16)
    memory.record("a", 1.0)
    memory.record("a", 2.0)
    assert memory.discount("a") == 1
    assert memory.discount("a") == 0 and "a" not in memory
    assert memory.discount("a") is None  # unknown: nothing to resolve


# -- through the monitor (a scripted journalctl) ---------------------------------------------
def journal_lines(j: Journal, lines: list[str]) -> list[dict[str, Any]]:
    return j.lines(lines, unit="kloros-orders.service", pid=4242, ident="orders")


async def test_monitor_withdraws_a_logged_question_when_its_re_raise_comes_late(
    tmp_path: Path,
) -> None:
    """journalctl hands over the logged traceback, and the re-raise only once the logged
    one was published alone: its question is resolved as absorbed into the chain."""
    j = Journal()
    logged, chain = journal_lines(j, LOGGED), journal_lines(j, CHAIN)
    gate = tmp_path / "go"
    jc = scripted_journalctl(tmp_path, [
        {"stdout": j.text(logged), "more": [[0.0, j.text(chain), str(gate)]], "hang": True}])
    async with following(tmp_path, config(jc, units=[])) as (monitor, pub):
        await pub.wait_for(lambda s: len(s) == 1)
        gate.touch()
        await pub.wait_for(lambda s: len(s) == 3)
    key, value = pub.gaps()
    assert (key.gap_name, value.gap_name) == ("KeyError: 'order 7'", "ValueError: bad order 7")
    [res] = pub.resolutions()
    assert res.gap_name == key.gap_name and res.facts["fingerprint"] == key.facts["fingerprint"]
    assert res.facts["gap_reason"].startswith("absorbed into the chain of ValueError")
    assert res.facts["gap_category"] == key.facts["gap_category"]
    assert monitor.ctx.status.counters["absorbed_late"] == 1
    assert monitor.memory.discount(key.facts["fingerprint"]) is None  # its sighting taken off


async def test_monitor_absorbs_across_a_restart_and_a_replay_brings_nothing_back(
    tmp_path: Path,
) -> None:
    """Run 1 publishes the logged record alone and stops before the re-raise is written;
    run 2 resumes before another process's half-read traceback, reads the logged record
    again (the assembler now holds it: the re-raise follows at once) and the re-raise, and
    withdraws the question of run 1 (the checkpoint kept it); run 3 replays the same:
    nothing is published or withdrawn again."""
    j = Journal()
    up = j.add("service up", pid=1)
    half = traceback_lines("OSError: disk full", 5, "save")
    other = j.lines(half[:3], pid=77)  # another process's traceback, still being written
    logged = journal_lines(j, LOGGED)
    chain = journal_lines(j, CHAIN)
    rest = j.lines(half[3:], pid=77)
    jc = scripted_journalctl(tmp_path, [
        {"stdout": j.text([up, *other, *logged]), "hang": True},
        {"stdout": j.text([*other, *logged, *chain]), "hang": True},
        {"stdout": j.text([*other, *logged, *chain, *rest]), "hang": True},
    ])
    data = config(jc, units=[], flush_after_s=60)
    state = tmp_path / "var" / "state" / "exception" / "state.json"
    async with following(tmp_path, data) as (_, pub1):
        await pub1.wait_for(lambda s: len(s) == 1)
    assert names(pub1.gaps()) == ["KeyError: 'order 7'"]
    saved = orjson.loads(state.read_bytes())
    assert saved["cursor"] == up["__CURSOR"] and len(saved["lone"]) == 1
    async with following(tmp_path, data) as (_, pub2):
        await pub2.wait_for(lambda s: len(s) == 2)
    assert names(pub2.gaps()) == ["ValueError: bad order 7"]
    assert [r.gap_name for r in pub2.resolutions()] == ["KeyError: 'order 7'"]
    async with following(tmp_path, data) as (monitor, pub3):
        await pub3.wait_for(lambda s: len(s) == 1 and monitor.replay.cursor == rest[-1]["__CURSOR"]
                            and not list(monitor.assembler.pending_first_metas()))
    assert names(pub3.gaps()) == ["OSError: disk full"] and pub3.resolutions() == []
    assert monitor.ctx.status.counters["replays_suppressed"] == 1


async def test_monitor_withdraws_a_question_whose_checkpoint_was_lost_in_a_kill(
    tmp_path: Path,
) -> None:
    """Run 1 publishes the logged record alone and is killed before its checkpoint holds
    it (the state file as it was before); run 2 re-reads the logged record and the re-raise
    together, the assembler absorbs the logged one, and the chain withdraws its question."""
    j = Journal()
    up = j.add("service up", pid=1)
    logged, chain = journal_lines(j, LOGGED), journal_lines(j, CHAIN)
    jc = scripted_journalctl(tmp_path, [
        {"stdout": j.text([up, *logged]), "hang": True},
        {"stdout": j.text([*logged, *chain]), "hang": True},
    ])
    data = config(jc, units=[])
    state = tmp_path / "var" / "state" / "exception" / "state.json"
    async with following(tmp_path, data) as (_, pub1):
        await pub1.wait_for(lambda s: len(s) == 1)
    [key] = pub1.gaps()
    state.write_bytes(orjson.dumps({"version": 1, "cursor": up["__CURSOR"], "published": [],
                                    "saved_at": time.time(), "final": False}))
    async with following(tmp_path, data) as (monitor, pub2):
        await pub2.wait_for(lambda s: len(s) == 2)
    assert names(pub2.gaps()) == ["ValueError: bad order 7"]
    [res] = pub2.resolutions()
    assert (res.gap_name, res.facts["fingerprint"]) == (key.gap_name, key.facts["fingerprint"])
    assert monitor.assembler.absorbed == 1


async def test_monitor_withdraws_in_a_log_file_too(tmp_path: Path) -> None:
    """A log file is one stream: the logged record, then (once it is a question) the
    re-raise appended to the file."""
    log = tmp_path / "orders.log"
    append_lines(log, LOGGED)
    data = config(tmp_path / "nope" / "journalctl", log_files=["orders.log"])
    async with following(tmp_path, data) as (_, pub):
        await pub.wait_for(lambda s: len(s) == 1)
        append_lines(log, CHAIN)
        await pub.wait_for(lambda s: len(s) == 3)
    key, value = pub.gaps()
    assert (key.facts["source"], value.gap_name) == ("file", "ValueError: bad order 7")
    [res] = pub.resolutions()
    assert res.facts["fingerprint"] == key.facts["fingerprint"]
    assert "orders.log logged it" in res.facts["gap_reason"]


async def test_after_a_clean_stop_chains_written_while_down_withdraw_nothing(
    tmp_path: Path,
) -> None:
    """Run 1 stops cleanly (its final save holds all it read); while it is down the app
    writes logged-and-re-raised chains; run 2 reads them whole: nothing is withdrawn."""
    j = Journal()
    up = j.add("service up", pid=1)
    chains = [e for _ in range(3) for e in journal_lines(j, [*LOGGED, *CHAIN])]
    jc = scripted_journalctl(tmp_path, [
        {"stdout": j.text([up]), "hang": True},
        {"stdout": j.text(chains), "hang": True},
    ])
    data = config(jc, units=[])
    state = tmp_path / "var" / "state" / "exception" / "state.json"
    async with following(tmp_path, data) as (monitor, _):
        await wait_until(lambda: monitor.replay.cursor == up["__CURSOR"])
    assert orjson.loads(state.read_bytes())["final"] is True
    async with following(tmp_path, data) as (monitor, pub):
        await pub.wait_for(lambda s: len(s) == 3 and monitor.replay.cursor
                           == chains[-1]["__CURSOR"])
    assert names(pub.gaps()) == ["ValueError: bad order 7"] * 3 and pub.resolutions() == []
    assert monitor.ctx.status.counters.get("absorbed_late", 0) == 0
    assert monitor.assembler.absorbed == 3


async def test_after_a_kill_chains_written_after_the_last_save_withdraw_nothing(
    tmp_path: Path,
) -> None:
    """Killed long after its last save: entries written later than that save plus the
    checkpoint interval and flush window were never read by it."""
    j = Journal()
    up = j.add("service up", pid=1)
    chain = journal_lines(j, [*LOGGED, *CHAIN])
    jc = scripted_journalctl(tmp_path, [{"stdout": j.text(chain), "hang": True}])
    state = tmp_path / "var" / "state" / "exception" / "state.json"
    state.parent.mkdir(parents=True)
    saved_at = int(up["__REALTIME_TIMESTAMP"]) / 1e6 - 100.0
    state.write_bytes(orjson.dumps({"version": 1, "cursor": up["__CURSOR"], "published": [],
                                    "saved_at": saved_at, "final": False}))
    async with following(tmp_path, config(jc, units=[])) as (monitor, pub):
        await pub.wait_for(lambda s: len(s) == 1 and monitor.replay.cursor
                           == chain[-1]["__CURSOR"])
    assert names(pub.gaps()) == ["ValueError: bad order 7"] and pub.resolutions() == []
    assert monitor.ctx.status.counters.get("absorbed_late", 0) == 0

