"""syntax_error: files the integration monitor would ask about, judged like the monitor.

Every ``.py`` file under the corpus roots (the monitor's exclude rules) is parsed by the
service's own parser (``analysis.pysource.parse_module``); a file it rejects is then
confirmed with the watched system's interpreter (``[settings] python_version``, an empty
venv of it) through :class:`kloros_stream.sources.interpreter.SyntaxConfirmer`, as the
monitor does with ``[monitors.capability_discovery] python``. The reported gap names are
the confirmed files, relative to their root. Without ``python_version`` (or with
``confirm = false``) every file the service rejects is reported: the figures before the
confirmation existed.
"""

from __future__ import annotations

from pathlib import Path

from kloros_stream.analysis.pysource import SourceError, parse_module
from kloros_stream.config import IntegrationMonitorConfig
from kloros_stream.sources.files import walk_files
from kloros_stream.sources.interpreter import SyntaxConfirmer

from ..corpora import Corpus
from ..interpreters import empty_venv
from ..scoring import Outcome

GAP_TYPE = "syntax_error"


def evaluate(corpus: Corpus, tree: Path | None) -> Outcome:
    if tree is None:
        raise ValueError("syntax_error needs a source tree")
    settings = corpus.settings
    version = str(settings.get("python_version") or "")
    python = empty_venv(version) if version and settings.get("confirm", True) else ""
    confirmer = SyntaxConfirmer(python)
    exclude = IntegrationMonitorConfig().exclude
    size = {"files": 0, "unparsed_here": 0, "valid_there": 0}
    reported: set[str] = set()
    details: dict[str, str] = {}
    for rel_root in corpus.roots:
        root = tree / rel_root
        for path in walk_files(root, exclude, lambda p: p.suffix == ".py"):
            size["files"] += 1
            try:
                parse_module(path.read_bytes(), str(path))
                continue
            except SourceError as err:
                message = err.message
            except OSError:
                continue
            size["unparsed_here"] += 1
            name = path.relative_to(root).as_posix()
            if confirmer.is_error(str(path)):
                reported.add(name)
                details[name] = message
            else:
                size["valid_there"] += 1
    return Outcome(reported=frozenset(reported), size=size, details=details)
