"""Everything the source-tree monitors need from one Python file, from one parse.

:func:`extract` takes one parsed module and returns its :class:`SourceFacts`: the flows
(:mod:`.flows`, for integration), the top-level imports split by their guards (for
capability_discovery), and the quick summary (public names, docstring, imports: for
module_discovery's ``new_module`` facts). :func:`facts_of` parses bytes and extracts; it
raises :class:`~.pysource.SourceError` for a file that does not parse. Pure: no I/O, no
clock, the analysed code is never imported.
"""

from __future__ import annotations

import ast
import marshal
import zlib
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any

from .capabilities import FileImports, imports_of
from .compact import share_empties
from .flows import FileFlows, FlowConfig, analyze_tree
from .pysource import ModuleSummary, parse_module, quick_scan, split_imports

FACTS_VERSION = 2
"""Bumped whenever the extracted facts change shape or meaning (a checkpoint of another
version is not reused)."""


@dataclass(frozen=True, slots=True)
class SourceFacts:
    """The facts of one parsed file."""

    flows: FileFlows
    imports: FileImports
    summary: ModuleSummary

    def to_json(self) -> dict[str, Any]:
        return {
            "flows": self.flows.to_json(),
            "required": sorted(self.imports.required),
            "optional": sorted(self.imports.optional),
            "dotted": sorted(self.imports.dotted),
            "summary": [
                list(self.summary.classes),
                list(self.summary.functions),
                self.summary.docstring,
                list(self.summary.imports),
                self.summary.truncated,
            ],
        }

    def to_bytes(self) -> bytes:
        """A compact, fast encoding for the index's journal: the fields' values as plain
        containers, marshalled and compressed (read back by the same Python only: the
        journal's key holds its version)."""
        return zlib.compress(marshal.dumps((
            _values(self.flows), _values(self.imports), _values(self.summary))), 1)

    @classmethod
    def from_bytes(cls, data: bytes) -> SourceFacts:
        """Inverse of :meth:`to_bytes`; raises ValueError/TypeError/EOFError/zlib.error
        if ``data`` is damaged."""
        flows, imports, summary = marshal.loads(zlib.decompress(data))
        return cls(
            flows=share_empties(FileFlows(*flows)),
            imports=share_empties(FileImports(*imports)),
            summary=ModuleSummary(*summary),
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SourceFacts:
        """Inverse of :meth:`to_json`; raises KeyError/TypeError/ValueError if malformed."""
        classes, functions, doc, imports, truncated = data["summary"]
        return cls(
            flows=FileFlows.from_json(data["flows"]),
            imports=share_empties(FileImports(
                required=frozenset(map(str, data["required"])),
                optional=frozenset(map(str, data["optional"])),
                dotted=frozenset(map(str, data["dotted"])),
            )),
            summary=ModuleSummary(
                classes=tuple(map(str, classes)),
                functions=tuple(map(str, functions)),
                docstring=str(doc),
                imports=tuple(map(str, imports)),
                truncated=bool(truncated),
            ),
        )


def _values(obj: Any) -> tuple[Any, ...]:
    """A dataclass's field values in order, read-only maps as plain dicts."""
    return tuple(
        dict(v) if isinstance(v, MappingProxyType) else v
        for v in (getattr(obj, f.name) for f in fields(obj))
    )


def extract(tree: ast.Module, module: str, config: FlowConfig) -> SourceFacts:
    """The facts of the parsed module ``module``."""
    return SourceFacts(
        flows=analyze_tree(tree, module, config),
        imports=imports_of(split_imports(tree)),
        summary=quick_scan(tree),
    )


def facts_of(source: bytes, module: str, config: FlowConfig, filename: str) -> SourceFacts:
    """Parse ``source`` once and extract its facts; raises SourceError if it does not parse."""
    return extract(parse_module(source, filename), module, config)
