"""Signals and questions for tests of the consumer lifecycle."""

from __future__ import annotations

from kloros_stream.models import CAPABILITY_GAP_RESOLVED, Signal

T0 = 1_700_000_000.0


def sig(name: str = "t::a", *, error: str = "AssertionError", resolved: bool = False,
        gap_type: str = "test_failure", at: float = T0) -> Signal:
    """A CAPABILITY_GAP (or its resolution) for ``gap_type``/``name`` with one fact."""
    return Signal(signal=CAPABILITY_GAP_RESOLVED if resolved else "CAPABILITY_GAP",
                  ecosystem="testing", monitor="test", observed_at=at,
                  facts={"gap_type": gap_type, "gap_name": name, "gap_category": "quality",
                         "gap_reason": f"{name} failed", "error": error})
