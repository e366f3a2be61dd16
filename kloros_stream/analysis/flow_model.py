"""The result of the flow analysis of one file, and its settings.

:class:`FileFlows` is plain data (JSON round trip for checkpoints); :class:`FlowConfig`
the call names that make bus topics.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from .compact import EMPTY_MAP, set_state_shared, share_empties

MAX_SITES = 20
"""Producer sites kept per channel per file."""

Site = tuple[str, int]
"""(function qualname within the module, or ``<module>``; line)."""


@dataclass(frozen=True, slots=True)
class FlowConfig:
    """Call names that produce and consume bus topics."""

    emit_calls: frozenset[str] = frozenset({"emit", "publish"})
    subscribe_calls: frozenset[str] = frozenset({"ChemSub", "UMNSub", "subscribe"})
    subscriber_suffixes: tuple[str, ...] = ("Sub", "Subscriber")
    """A class whose name ends so (``_ZmqSub``, ``EventSubscriber``) subscribes too."""

    @classmethod
    def of(
        cls,
        emit_calls: Iterable[str],
        subscribe_calls: Iterable[str],
        subscriber_suffixes: Iterable[str] = ("Sub", "Subscriber"),
    ) -> FlowConfig:
        return cls(frozenset(emit_calls), frozenset(subscribe_calls), tuple(subscriber_suffixes))

    @classmethod
    def from_section(cls, section: Any) -> FlowConfig:
        """From an ``[monitors.integration]`` section (anything with its attributes)."""
        return cls.of(
            section.emit_calls,
            section.subscribe_calls,
            getattr(section, "subscriber_suffixes", ("Sub", "Subscriber")),
        )


@dataclass(frozen=True, slots=True)
class FileFlows:
    """The flows of one file. Channels are bus topics or ``module.Class.attribute``."""

    module: str
    topics_produced: dict[str, tuple[Site, ...]] = field(default_factory=dict)
    topics_consumed: frozenset[str] = frozenset()
    attrs_produced: dict[str, tuple[Site, ...]] = field(default_factory=dict)
    attrs_consumed: frozenset[str] = frozenset()
    loose_consumed: frozenset[str] = frozenset()
    """Attribute names read through an owner that could not be resolved."""
    inherited: frozenset[str] = frozenset()
    """Produced attribute channels whose class has real base classes."""
    constants: dict[str, str] = field(default_factory=dict)
    """UPPER_CASE module-level string constants (possible topic names)."""
    topic_refs: frozenset[str] = frozenset()
    """Names passed to a subscribe call that do not resolve in this file."""
    emit_refs: dict[str, tuple[Site, ...]] = field(default_factory=dict)
    """Names (imported constants, ``Enum.MEMBER``) passed as the topic of a publish."""
    topic_guards: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Topics published here only through a receiver built from an imported class: the
    import sources; a publish only if one of them is a module of the tree (else it is a
    framework's own signal, e.g. a GUI toolkit widget's ``emit``)."""

    wrappers: dict[str, tuple[str, int, str, str]] = field(default_factory=dict)
    """Functions/methods of this file (by bare name) that pass a parameter on as a topic:
    (kind, position, parameter, template). Calls to them in other files are bus calls."""
    calls: dict[str, tuple[tuple[str, str, str, int], ...]] = field(default_factory=dict)
    """Calls whose callee is not known here, by bare callee name: (argument position or
    keyword, its topic value, function, line); joined with ``wrappers`` across files."""

    consumed_sites: dict[str, Site] = field(default_factory=dict)
    """Where this file first consumes each topic or exact attribute channel."""
    imports: frozenset[str] = frozenset()
    """What this file imports (absolute dotted sources): a loose read ``obj.x`` here
    reaches only the channels of this module and of the modules it imports."""
    class_bases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Classes producing channels here -> import sources of their bases (through the
    file's own classes): a base from outside the tree may read the attributes."""

    def __setstate__(self, state: list[Any]) -> None:
        set_state_shared(self, state)  # from a parse process: empty containers shared

    def to_json(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "topics_produced": {k: [list(s) for s in v] for k, v in self.topics_produced.items()},
            "topics_consumed": sorted(self.topics_consumed),
            "attrs_produced": {k: [list(s) for s in v] for k, v in self.attrs_produced.items()},
            "attrs_consumed": sorted(self.attrs_consumed),
            "loose_consumed": sorted(self.loose_consumed),
            "inherited": sorted(self.inherited),
            "constants": dict(self.constants),
            "topic_refs": sorted(self.topic_refs),
            "emit_refs": {k: [list(s) for s in v] for k, v in self.emit_refs.items()},
            "topic_guards": {k: list(v) for k, v in self.topic_guards.items()},
            "wrappers": {k: list(v) for k, v in self.wrappers.items()},
            "calls": {k: [list(c) for c in v] for k, v in self.calls.items()},
            "consumed_sites": {k: list(v) for k, v in self.consumed_sites.items()},
            "imports": sorted(self.imports),
            "class_bases": {k: list(v) for k, v in self.class_bases.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileFlows:
        """Inverse of :meth:`to_json`; raises KeyError/TypeError/ValueError if malformed."""

        def sites(raw: dict[str, Any]) -> dict[str, tuple[Site, ...]]:
            return {str(k): tuple((str(f), int(n)) for f, n in v) for k, v in raw.items()}

        return share_empties(cls(
            module=str(data["module"]),
            topics_produced=sites(data["topics_produced"]),
            topics_consumed=frozenset(map(str, data["topics_consumed"])),
            attrs_produced=sites(data["attrs_produced"]),
            attrs_consumed=frozenset(map(str, data["attrs_consumed"])),
            loose_consumed=frozenset(map(str, data["loose_consumed"])),
            inherited=frozenset(map(str, data["inherited"])),
            constants={str(k): str(v) for k, v in data["constants"].items()},
            topic_refs=frozenset(map(str, data["topic_refs"])),
            emit_refs=sites(data.get("emit_refs", {})),
            topic_guards={
                str(k): tuple(map(str, v)) for k, v in data.get("topic_guards", {}).items()
            },
            wrappers={
                str(k): (str(v[0]), int(v[1]), str(v[2]), str(v[3]))
                for k, v in data.get("wrappers", {}).items()
            },
            calls={
                str(k): tuple((str(a), str(b), str(c), int(d)) for a, b, c, d in v)
                for k, v in data.get("calls", {}).items()
            },
            consumed_sites={
                str(k): (str(v[0]), int(v[1])) for k, v in data.get("consumed_sites", {}).items()
            },
            imports=frozenset(map(str, data.get("imports", ()))),
            class_bases={
                str(k): tuple(map(str, v)) for k, v in data.get("class_bases", {}).items()
            },
        ))


class PackedFlows(Protocol):
    """Flows kept packed (the source index's facts), decoded on each read."""

    @property
    def flows(self) -> FileFlows: ...


@dataclass(frozen=True, slots=True)
class FileHead:
    """What a flow index keeps of one file: what orphan checks read on every evaluation
    (module, imports, class bases), and where the whole flows are (``source``: the flows
    themselves, or their packed form, decoded on demand by :attr:`flows`)."""

    module: str
    imports: tuple[str, ...]
    """What the file imports, kept only when it reads attributes loosely (the one use:
    whether a loose read here reaches a channel); empty for every other file."""
    class_bases: Mapping[str, tuple[str, ...]]
    source: FileFlows | PackedFlows

    @classmethod
    def of(cls, flows: FileFlows, packed: PackedFlows | None = None) -> FileHead:
        """The head of ``flows``; it keeps ``packed`` instead of them when given."""
        return cls(
            sys.intern(flows.module),
            tuple(sorted(map(sys.intern, flows.imports))) if flows.loose_consumed else (),
            flows.class_bases or EMPTY_MAP,
            flows if packed is None else packed,
        )

    @property
    def flows(self) -> FileFlows:
        source = self.source
        return source if isinstance(source, FileFlows) else source.flows


def attribute_of(channel: str) -> str:
    """``module.Class.attr`` -> ``attr``."""
    return channel.rsplit(".", 1)[-1]


class ChannelKind(StrEnum):
    TOPIC = "topic"
    ATTRIBUTE = "attribute"


class Channel(NamedTuple):
    kind: ChannelKind
    name: str
    """The gap name: the bus topic, or ``module.Class.attribute``."""


@dataclass(frozen=True, slots=True)
class ProducerSite:
    path: str
    module: str
    function: str
    line: int
