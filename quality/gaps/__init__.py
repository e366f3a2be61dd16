"""One module per gap type. Each defines::

    GAP_TYPE = "orphaned_queue"
    def evaluate(corpus: Corpus, tree: Path | None) -> Outcome

``tree`` is the fetched code (None for corpora of kind ``none``, which the module builds
itself, e.g. by running real programs). ``evaluate`` runs the same analysis the monitor
runs and returns what it would report. A new gap type is a new module here plus its
label files under ``quality/labels/<gap_type>/``.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def gap_modules() -> dict[str, ModuleType]:
    """GAP_TYPE -> module, for every module in this package."""
    out: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        gap_type = getattr(module, "GAP_TYPE", None)
        if isinstance(gap_type, str):
            out[gap_type] = module
    return out
