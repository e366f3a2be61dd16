"""missing_library: imports of a tree that resolve nowhere, judged like the monitor.

The module-level required imports of every ``.py`` file under the corpus roots go into the
capability monitor's :class:`ImportIndex`, resolved against the watched system's
interpreter (``[settings] python_version``: an empty venv of it, so every third-party
import is missing there) with :class:`PathResolver`, as the monitor does with
``[monitors.capability_discovery] python``. Dotted imports of the tree are checked at full
depth. The reported gap names are the missing modules. Nothing is imported or executed.
"""

from __future__ import annotations

from pathlib import Path, PurePath

from kloros_stream.analysis.capabilities import ImportIndex, read_imports
from kloros_stream.analysis.module_paths import PathResolver
from kloros_stream.config import IntegrationMonitorConfig
from kloros_stream.sources.files import walk_files
from kloros_stream.sources.interpreter import probe

from ..corpora import Corpus, CorpusError
from ..interpreters import empty_venv
from ..scoring import Outcome

GAP_TYPE = "missing_library"


def evaluate(corpus: Corpus, tree: Path | None) -> Outcome:
    if tree is None:
        raise ValueError("missing_library needs a source tree")
    version = str(corpus.settings.get("python_version") or "")
    if not version:
        raise CorpusError(f"{corpus.path}: [settings] python_version is required")
    info = probe(empty_venv(version))
    index = ImportIndex(PathResolver(info.path, info.stdlib_names, info.editable))
    exclude = IntegrationMonitorConfig().exclude
    size = {"files": 0}
    for rel_root in corpus.roots:
        root = tree / rel_root
        for path in walk_files(root, exclude, lambda p: p.suffix == ".py"):
            try:
                data = path.read_bytes()
            except OSError:
                continue
            size["files"] += 1
            rel = PurePath(path.relative_to(root))
            index.set_file(str(root), rel, read_imports(data, str(path)))
    missing = index.missing()
    size["imported_modules"] = len(index.modules)
    details = {name: files[0] for name, files in missing.items()}
    return Outcome(reported=frozenset(missing), size=size, details=details)
