"""GapLedger with a real checkpoint store on disk: what is published when, across restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

from kloros_stream.monitors.base import MonitorContext
from kloros_stream.monitors.ledger import Debouncer, GapLedger
from tests.support.fakes import ListPublisher, make_context
from tests.support.scripted import wait_until

NAME = "capability_discovery"


def _ledger(tmp_path: Path) -> tuple[GapLedger, ListPublisher, MonitorContext]:
    """A ledger on a fresh context whose checkpoints live under ``tmp_path`` (a restart is
    another call with the same ``tmp_path``)."""
    ctx, pub = make_context(NAME, tmp_path)
    return GapLedger(ctx, "capabilities"), pub, ctx


def _tool(ledger: GapLedger, name: str = "ffmpeg", **facts: object) -> bool:
    return ledger.set(
        "missing_tool",
        name,
        gap_category="tooling",
        gap_reason=f"required executable '{name}' is not on PATH",
        **({"searched": ["/usr/bin"]} | facts),
    )


def _run_before_restart(tmp_path: Path, *names: str) -> None:
    ledger, pub, _ = _ledger(tmp_path)
    for name in names:
        assert _tool(ledger, name)
    ledger.reconcile()
    ledger.flush()
    assert len(pub.gaps()) == len(names)


def test_resolution_carries_the_category_of_the_gap(tmp_path: Path) -> None:
    ledger, pub, _ = _ledger(tmp_path)
    _tool(ledger)
    assert ledger.clear("missing_tool", "ffmpeg", gap_reason="installed", path="/usr/bin/ffmpeg")
    [resolved] = pub.resolutions()
    assert resolved.facts["gap_category"] == "tooling"
    assert resolved.facts["gap_reason"] == "installed"
    assert not ledger.clear("missing_tool", "ffmpeg", gap_reason="again")  # not open any more


def test_resolution_after_a_restart_carries_the_category(tmp_path: Path) -> None:
    _run_before_restart(tmp_path, "ffmpeg")
    ledger, pub, _ = _ledger(tmp_path)
    assert ledger.clear("missing_tool", "ffmpeg", gap_reason="installed while down")
    [resolved] = pub.resolutions()
    assert resolved.facts["gap_category"] == "tooling"


def test_restart_adopts_unchanged_gaps_without_publishing(tmp_path: Path) -> None:
    _run_before_restart(tmp_path, "ffmpeg", "sox")
    for _restart in range(3):
        ledger, pub, _ = _ledger(tmp_path)
        assert not _tool(ledger, "ffmpeg")
        assert not _tool(ledger, "sox")
        ledger.reconcile()
        ledger.flush()
        assert pub.signals == []
        assert ledger.is_open("missing_tool", "ffmpeg") and ledger.is_open("missing_tool", "sox")


def test_restart_publishes_changed_facts_new_gaps_and_what_went_away(tmp_path: Path) -> None:
    _run_before_restart(tmp_path, "ffmpeg", "sox")
    ledger, pub, _ = _ledger(tmp_path)
    assert _tool(ledger, "ffmpeg", searched=["/usr/bin", "/opt/bin"])  # PATH changed
    assert _tool(ledger, "lame")  # new
    ledger.reconcile()  # sox was not found missing again: resolved
    assert [(s.gap_name, s.resolved) for s in pub.signals] == [
        ("ffmpeg", False),
        ("lame", False),
        ("sox", True),
    ]
    assert pub.resolutions()[0].facts["gap_category"] == "tooling"
    ledger.flush()

    ledger, pub, _ = _ledger(tmp_path)  # and the changed facts are what counts from now on
    assert not _tool(ledger, "ffmpeg", searched=["/usr/bin", "/opt/bin"])
    assert not _tool(ledger, "lame")
    ledger.reconcile()
    assert pub.signals == []


def test_volatile_facts_alone_do_not_republish(tmp_path: Path) -> None:
    ledger, pub, _ = _ledger(tmp_path)
    base = {"gap_category": "resource_utilization", "gap_reason": "idle for 30 min"}
    assert ledger.set("idle_accelerator", "gpu0", volatile=("util",), util=3.0, **base)
    ledger.flush()
    ledger, pub, _ = _ledger(tmp_path)
    assert not ledger.set("idle_accelerator", "gpu0", volatile=("util",), util=4.5, **base)
    assert ledger.set("idle_accelerator", "gpu0", volatile=("util",), util=4.5, uuid="x", **base)
    [gap] = pub.gaps()
    assert gap.facts["util"] == 4.5 and gap.facts["uuid"] == "x"


def test_kept_gaps_survive_reconcile_and_publish_only_a_change(tmp_path: Path) -> None:
    _run_before_restart(tmp_path, "ffmpeg")
    ledger, pub, _ = _ledger(tmp_path)
    ledger.keep("missing_tool")  # this run cannot judge it yet
    ledger.reconcile()
    assert pub.signals == [] and ledger.is_open("missing_tool", "ffmpeg")
    assert not _tool(ledger, "ffmpeg")
    assert _tool(ledger, "ffmpeg", searched=[])
    assert len(pub.gaps()) == 1


def test_checkpoint_keeps_gaps_of_the_previous_run_not_judged_yet(tmp_path: Path) -> None:
    _run_before_restart(tmp_path, "ffmpeg", "sox")
    ledger, _, ctx = _ledger(tmp_path)
    assert _tool(ledger, "lame")
    ledger.flush()  # e.g. a stop before the initial scan finished
    saved = ctx.checkpoints.load(GapLedger.CHECKPOINT)
    assert [row[:3] for row in saved["open"]] == [
        ["missing_tool", "ffmpeg", "tooling"],
        ["missing_tool", "lame", "tooling"],
        ["missing_tool", "sox", "tooling"],
    ]


def test_checkpoint_of_the_older_form_publishes_once_then_is_quiet(tmp_path: Path) -> None:
    ctx, _ = make_context(NAME, tmp_path)
    ctx.checkpoints.save(GapLedger.CHECKPOINT, {"open": [["missing_tool", "ffmpeg"], "junk"]})
    ledger, pub, _ = _ledger(tmp_path)
    assert _tool(ledger, "ffmpeg")  # no digest recorded: announced with its facts
    ledger.flush()
    ledger, pub, _ = _ledger(tmp_path)
    assert not _tool(ledger, "ffmpeg")
    assert pub.signals == []


async def test_save_in_the_loop_writes_the_checkpoint_soon(tmp_path: Path) -> None:
    ledger, _, ctx = _ledger(tmp_path)
    _tool(ledger)
    ledger.save()
    await wait_until(
        lambda: (ctx.checkpoints.load(GapLedger.CHECKPOINT) or {}).get("open"),
        what="checkpoint written",
    )
    ledger, pub, _ = _ledger(tmp_path)
    assert not _tool(ledger)
    assert pub.signals == []


async def test_debouncer_writes_only_once_the_snapshot_is_delivered() -> None:
    gate = asyncio.Event()
    asked: list[int] = []

    async def delivered() -> bool:
        asked.append(len(written))
        await gate.wait()
        return True

    written: list[int] = []
    state = {"n": 1}
    saver = Debouncer(0.01, lambda: state["n"], written.append, delivered=delivered)
    saver.mark()
    await wait_until(lambda: bool(asked), what="the write waits for delivery")
    state["n"] = 2  # later changes are not in the pending snapshot
    await asyncio.sleep(0.05)
    assert written == []  # not delivered yet: nothing claimed
    gate.set()
    await wait_until(lambda: written == [1], what="written after delivery")
