"""An exception question shows the code it is about, read from the watched tree.

A real program crashes (a real subprocess, its stderr appended to a log file the service
follows), under two install paths and behind a log prefix: one question, whose evidence
holds the in-app frames with their source lines, the failing line marked.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.service import ServiceProcess, questions_of, write_config

APP = """def load(jobs, job_id):
    return jobs[job_id]


def run(job_id):
    return load({}, job_id)
"""


def crash(root: Path, job: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", f"from shopjobs import worker; worker.run({job!r})"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.stderr.splitlines()


@pytest.mark.e2e
def test_e2e_one_bug_two_installs_with_source_context(tmp_path: Path) -> None:
    roots = [tmp_path / "srv" / "deploy", tmp_path / "home" / "bob" / "checkout"]
    for root in roots:
        (root / "shopjobs").mkdir(parents=True)
        (root / "shopjobs" / "__init__.py").write_text("")
        (root / "shopjobs" / "worker.py").write_text(APP)
    log = tmp_path / "worker.log"
    log.write_text("")
    config = write_config(
        tmp_path,
        {
            "monitors": {"exception": {"journal": False, "log_files": [str(log)]}},
            "feed": {"counter_flush_s": 0.2},
        },
    )
    with ServiceProcess(config) as svc:
        for n, root in enumerate(roots):
            lines = crash(root, f"job-{n}")
            with log.open("a") as f:
                f.write(
                    "".join(
                        f"2026-12-01 10:00:0{n},5 ERROR worker[{40 + n}]: {line}\n"
                        for line in lines
                    )
                )
        qs = svc.wait_feed(
            lambda qs: any(
                q["metadata"]["occurrences"] >= 2 for q in questions_of(qs, "exception")
            ),
            timeout=30,
        )
        [question] = questions_of(qs, "exception")
        assert question["metadata"]["gap_name"].startswith("KeyError: 'job-")
        code = [line for line in question["evidence"] if line.startswith("Code at ")]
        assert len(code) == 2
        assert code[-1].splitlines()[0].endswith("shopjobs/worker.py:2 in load")
        assert ">     2 |     return jobs[job_id]" in code[-1]
