"""The exploration monitor through a real ``kloros-stream run`` with a scripted nvidia-smi:
an idle GPU is a question, busy again resolves it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.inputs import GPU_BUSY, fake_nvidia_smi, set_gpus
from tests.support.service import ServiceProcess, write_config


@pytest.mark.e2e
def test_e2e_fake_nvidia_smi_idle_then_busy(tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    script, state = fake_nvidia_smi(tools)
    cfg = write_config(
        tmp_path,
        {
            "monitors": {
                "exploration": {
                    "nvidia_smi": str(script),
                    "interval_s": 0.2,
                    "idle_window_s": 1.0,
                    "idle_threshold_pct": 10,
                }
            }
        },
    )
    with ServiceProcess(cfg) as svc:
        qs = svc.wait_feed(
            lambda qs: any(
                q["metadata"]["gap_type"] == "idle_accelerator" and q["status"] != "resolved"
                for q in qs
            )
        )
        q = next(q for q in qs if q["metadata"]["gap_type"] == "idle_accelerator")
        assert q["metadata"]["gap_name"] == "gpu0"
        assert q["question"].startswith("NVIDIA GeForce RTX 3090 (gpu0) has been idle")
        details = svc.health()["monitors"]["exploration"]["details"]
        assert details["gpus"][0]["uuid"].startswith("GPU-5a1c")
        assert details["inventory"]["cpu"]["logical_cores"] >= 1
        set_gpus(state, GPU_BUSY)
        svc.wait_feed(
            lambda qs: any(
                q["metadata"]["gap_name"] == "gpu0" and q["status"] == "resolved" for q in qs
            )
        )
