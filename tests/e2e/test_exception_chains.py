"""Chained and re-raised exceptions of two real processes in a real journal: one question
per distinct final exception, none for an inner cause alone.

Two services run at once on a private journald namespace, their lines interleaving: one
raises ``ConfigError from FileNotFoundError``, the other logs a KeyError with
``logging.exception`` and raises ValueError from the handler.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.support.journald import NamespacedJournald
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


@pytest.mark.e2e
@pytest.mark.journald
def test_e2e_interleaved_chains_are_one_question_each(
    journald: NamespacedJournald, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path,
        {
            "monitors": {"exception": {"namespace": journald.namespace, "units": []}},
            "feed": {"counter_flush_s": 0.2},
        },
    )
    with ServiceProcess(config) as svc:
        time.sleep(1.0)  # journalctl is following
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
        qs = svc.wait_feed(
            lambda qs: (
                sum(q["metadata"]["occurrences"] for q in questions_of(qs, "exception")) >= 4
            ),
            timeout=30,
        )
        time.sleep(1.0)  # anything else would have arrived by now
        names = sorted(
            q["metadata"]["gap_name"].split(":")[0]
            for q in questions_of(list(svc.questions().values()), "exception")
        )
        assert names == ["ConfigError", "ValueError"], qs
