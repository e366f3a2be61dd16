"""orphaned_queue: the integration monitor's flow analysis over a whole tree.

Same code path as the monitor: every ``.py`` file under the corpus roots (the monitor's
exclude rules) goes through :func:`kloros_stream.analysis.flows.analyze_source` with the
corpus's ``emit_calls``/``subscribe_calls`` (``[settings]``, validated as an
``[monitors.integration]`` section), into one :class:`FlowIndex`; its orphans are the
reported gap names. Files that do not parse are skipped (they are syntax errors, not
flows). Nothing is imported or executed.
"""

from __future__ import annotations

from pathlib import Path

from kloros_stream.analysis.flow_index import FlowIndex
from kloros_stream.analysis.flows import FlowConfig, analyze_source
from kloros_stream.analysis.pysource import SourceError, module_name
from kloros_stream.config import IntegrationMonitorConfig
from kloros_stream.sources.files import walk_files

from ..corpora import Corpus
from ..scoring import Outcome

GAP_TYPE = "orphaned_queue"


def section(corpus: Corpus, tree: Path) -> IntegrationMonitorConfig:
    """The ``[monitors.integration]`` section this corpus would be watched with."""
    roots = [tree / r for r in corpus.roots]
    return IntegrationMonitorConfig(roots=roots, **corpus.settings)


def index_tree(cfg: IntegrationMonitorConfig) -> tuple[FlowIndex, dict[str, int]]:
    """Analyse every file under ``cfg.roots``; the index and the corpus size."""
    config = FlowConfig.from_section(cfg)
    index = FlowIndex(prefix_match=cfg.prefix_match)
    size = {"files": 0, "lines": 0, "unparsed": 0}
    for root in cfg.roots:
        for path in walk_files(root, cfg.exclude, lambda p: p.suffix == ".py"):
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if len(data) > cfg.max_file_bytes:
                continue
            size["files"] += 1
            size["lines"] += data.count(b"\n")
            try:
                flows = analyze_source(data, module_name(path, root), config, filename=str(path))
            except SourceError:
                size["unparsed"] += 1
                continue
            index.update(str(path), flows)
    return index, size


def evaluate(corpus: Corpus, tree: Path | None) -> Outcome:
    if tree is None:
        raise ValueError("orphaned_queue needs a source tree")
    cfg = section(corpus, tree)
    index, size = index_tree(cfg)
    details: dict[str, str] = {}
    for channel in index.orphans():
        sites = index.producers(channel, limit=1)
        if sites:
            site = sites[0]
            rel = Path(site.path).relative_to(tree).as_posix()
            details[channel.name] = f"{channel.kind.value} {rel}:{site.line}"
    reported = frozenset(c.name for c in index.orphans())
    return Outcome(reported=reported, size=size, details=details)
