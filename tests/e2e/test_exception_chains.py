"""Chained and re-raised exceptions of two real processes in a real journal: one question
per distinct final exception, none for an inner cause alone (open: an inner cause asked
alone because its chain came late is resolved as absorbed).

Two services run at once on a private journald namespace, their lines interleaving: one
raises ``ConfigError from FileNotFoundError``, the other logs a KeyError with
``logging.exception`` and raises ValueError from the handler. Then the late re-raise is
forced: the service logs, waits until the logged exception is a question of its own (or
until the service is stopped and started again), and only then raises.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from tests.support.journald import NamespacedJournald, wait_until
from tests.support.service import ServiceProcess, questions_of, write_config

CHAINED = """
class ConfigError(Exception):
    pass
def load(path):
    try:
        open(path)
    except FileNotFoundError as err:
        raise ConfigError("cannot load " + path) from err
load("/nonexistent/app-%(n)d.toml")
"""
LOGGED = """
import logging
def process(order):
    try:
        return {}[order]
    except KeyError:
        logging.exception("lookup failed for %%s", order)
        raise ValueError("bad order %%s" %% order)
process("order-%(n)d")
"""


LATE = """
import logging, os, sys, time
def process(order):
    try:
        return {}[order]
    except KeyError:
        logging.exception("lookup failed for %%s", order)
        sys.stderr.flush()
        while not os.path.exists(%(gate)r):  # the re-raise is written only once told
            time.sleep(0.01)
        raise ValueError("bad order %%s" %% order)
process("order-late")
"""


def open_names(qs: list[dict[str, Any]]) -> list[str]:
    """The final exception types of the open exception questions."""
    return sorted(q["metadata"]["gap_name"].split(":")[0]
                  for q in questions_of(qs, "exception") if q["status"] != "resolved")


def occurrences(qs: list[dict[str, Any]], exc_type: str) -> int:
    return sum(q["metadata"]["occurrences"] for q in questions_of(qs, "exception")
               if q["metadata"]["gap_name"].startswith(exc_type + ":"))


def exception_config(tmp_path: Path, journald: NamespacedJournald) -> Path:
    return write_config(
        tmp_path,
        {
            "monitors": {"exception": {"namespace": journald.namespace, "units": []}},
            "feed": {"counter_flush_s": 0.2},
        },
    )


def following(svc: ServiceProcess) -> None:
    wait_until(lambda: svc.port and svc.health()["monitors"]["exception"]["details"].get(
        "journal") == "following", 20, what="journal followed")


@pytest.mark.e2e
@pytest.mark.journald
def test_e2e_interleaved_chains_are_one_question_each(
    journald: NamespacedJournald, tmp_path: Path
) -> None:
    with ServiceProcess(exception_config(tmp_path, journald)) as svc:
        following(svc)
        for n in range(2):
            runs = [
                threading.Thread(
                    target=journald.run_service,
                    args=(code % {"n": n},),
                    kwargs={"identifier": ident, "unit": f"kloros-{ident}.service"},
                )
                for code, ident in ((CHAINED, "config"), (LOGGED, "orders"))
            ]
            for t in runs:
                t.start()
            for t in runs:
                t.join()
        # The level, not a pause: both chains of both runs are in, and (an inner cause
        # published alone is withdrawn when its chain is published) nothing else is open.
        qs = svc.wait_feed(
            lambda qs: occurrences(qs, "ConfigError") == 2 and occurrences(qs, "ValueError") == 2,
            timeout=30,
        )
        assert open_names(qs) == ["ConfigError", "ValueError"], qs
        for q in questions_of(qs, "exception"):  # an inner cause asked alone: withdrawn
            if q["status"] == "resolved":
                assert q["metadata"]["resolution"].startswith("absorbed into the chain of"), q


@pytest.mark.e2e
@pytest.mark.journald
def test_e2e_a_re_raise_after_the_chain_grace_withdraws_the_logged_question(
    journald: NamespacedJournald, tmp_path: Path
) -> None:
    gate = tmp_path / "raise-now"
    with ServiceProcess(exception_config(tmp_path, journald)) as svc:
        following(svc)
        run = threading.Thread(target=journald.run_service, args=(LATE % {"gate": str(gate)},),
                               kwargs={"identifier": "orders", "unit": "kloros-orders.service"})
        run.start()
        try:
            qs = svc.wait_feed(lambda qs: open_names(qs) == ["KeyError"], timeout=30)
        finally:
            gate.touch()
            run.join()
        qs = svc.wait_feed(lambda qs: open_names(qs) == ["ValueError"], timeout=30)
    [key] = [q for q in questions_of(qs, "exception") if q["status"] == "resolved"]
    assert key["metadata"]["gap_name"] == "KeyError: 'order-late'"
    assert key["metadata"]["resolution"].startswith(
        "absorbed into the chain of ValueError: bad order order-late"
    )


@pytest.mark.e2e
@pytest.mark.journald
def test_e2e_a_re_raise_written_while_the_service_was_down_withdraws_after_restart(
    journald: NamespacedJournald, tmp_path: Path
) -> None:
    gate = tmp_path / "raise-now"
    config = exception_config(tmp_path, journald)
    run = threading.Thread(target=journald.run_service, args=(LATE % {"gate": str(gate)},),
                           kwargs={"identifier": "orders", "unit": "kloros-orders.service"})
    try:
        with ServiceProcess(config) as svc:
            following(svc)
            run.start()
            svc.wait_feed(lambda qs: open_names(qs) == ["KeyError"], timeout=30)
        gate.touch()  # the re-raise reaches the journal while the service is stopped
        run.join()
        with ServiceProcess(config) as svc:
            qs = svc.wait_feed(lambda qs: open_names(qs) == ["ValueError"], timeout=30)
    finally:
        gate.touch()
        if run.is_alive():
            run.join()
    assert [q["metadata"]["gap_name"] for q in questions_of(qs, "exception")
            if q["status"] == "resolved"] == ["KeyError: 'order-late'"]
