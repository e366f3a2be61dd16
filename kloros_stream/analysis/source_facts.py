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
import functools
import marshal
import sys
import zlib
from collections.abc import Iterable
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


UNPACKED_KEPT = 128
"""Decoded bodies kept (least recently used first out): the monitors folding one record
after another, and a flow index asking the same file twice, decode it once."""


@dataclass(frozen=True, slots=True)
class PackedFacts:
    """The facts of one file as the source index keeps them for every file of a tree:
    the imports decoded (small, and held by capability_discovery anyway; their names
    interned, so one string serves every file importing it), the flows and the summary
    packed (marshal + zlib, about 0.5 KiB where the objects take 5-10 KiB) and decoded
    on demand (:attr:`flows`, :attr:`summary`; the last :data:`UNPACKED_KEPT` kept).

    ``body`` is read back by the same Python only (the index journal's key holds its
    version)."""

    imports: FileImports
    body: bytes

    @classmethod
    def pack(cls, facts: SourceFacts) -> PackedFacts:
        return cls(
            interned_imports(facts.imports),
            zlib.compress(marshal.dumps((_values(facts.flows), _values(facts.summary))), 1),
        )

    @property
    def flows(self) -> FileFlows:
        return _unpack(self.body)[0]

    @property
    def summary(self) -> ModuleSummary:
        return _unpack(self.body)[1]

    def unpack(self) -> SourceFacts:
        flows, summary = _unpack(self.body)
        return SourceFacts(flows, self.imports, summary)

    def to_json(self) -> dict[str, Any]:
        return self.unpack().to_json()

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (from a parse process) as the import names and the body: the parent
        interns the names again."""
        imports = self.imports
        return (packed_facts, (tuple(imports.required), tuple(imports.optional),
                          tuple(imports.dotted), self.body))


class DamagedFacts(ValueError):
    """A packed body that does not decode (the journal's CRC-32 passed, the content did
    not): the monitor reading it logs and skips that file."""


@functools.lru_cache(maxsize=UNPACKED_KEPT)
def _unpack(body: bytes) -> tuple[FileFlows, ModuleSummary]:
    """Raises :class:`DamagedFacts` if ``body`` does not decode."""
    try:
        flows, summary = marshal.loads(zlib.decompress(body))
        return share_empties(FileFlows(*flows)), ModuleSummary(*summary)
    except (ValueError, TypeError, EOFError, zlib.error) as err:
        raise DamagedFacts(f"packed facts do not decode: {err!r}") from None


def interned_imports(imports: FileImports) -> FileImports:
    """``imports`` with every name interned and empty sets shared."""
    return share_empties(FileImports(
        frozenset(map(sys.intern, imports.required)),
        frozenset(map(sys.intern, imports.optional)),
        frozenset(map(sys.intern, imports.dotted)),
    ))


def packed_facts(required: Iterable[str], optional: Iterable[str], dotted: Iterable[str],
                 body: bytes) -> PackedFacts:
    """Packed facts from their import names (interned here) and body: how a parse
    process's answer and a journal line come back."""
    return PackedFacts(interned_imports(FileImports(
        frozenset(map(str, required)), frozenset(map(str, optional)),
        frozenset(map(str, dotted)))), body)


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
