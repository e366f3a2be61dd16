"""Incremental index of flows across a source tree, and the orphaned channels in it.

Pure (no I/O). Per file it keeps a :class:`~.flow_model.FileHead` (module, class bases,
imports for a loose reader, and the flows themselves or their packed form, decoded when a
query needs them);
per channel it keeps how many files produce and consume it. ``update(path, flows)``
removes the file's old flows, adds the new ones, and re-checks only the channels the file
touches (plus the channels sharing an attribute name whose loose-consumer state flipped),
so one change costs work proportional to that file, not to the tree. It returns the
orphans that appeared and the ones that were resolved.

An orphan is a channel with a producer and no consumer. For an attribute channel
``module.Class.attr`` a consumer is an exact read of that channel, or a loose read of
``attr`` anywhere (owner unresolved, or in a derived class); a channel produced in a
derived class is also consumed by an exact read of ``attr`` in any class. A topic is also
consumed by a subscription through a constant's name (``ChemSub(signals.X)``) when some
file defines a module-level constant of that name whose value is the topic.

Topics (when ``prefix_match``, the default) match as ZeroMQ subscriptions do: a
subscription to ``"A"`` receives ``"A_B"``; an empty subscription is a tap (a recorder of
everything), not a consumer. A topic pattern (``job_state:*``, from an f-string) matches
the topics and subscriptions it covers. A topic published through an imported constant
(``emit(signals.X)``, ``Enum.MEMBER.value``) is the value of that constant, when the
tree defines it once. A topic published only through a receiver built from an imported
class (a guard) is a publish only when that import is a module of the tree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .compact import CountMap, SetMap
from .flow_index_json import FlowIndexJson
from .flow_match import TopicMatching
from .flow_model import (
    Channel,
    ChannelKind,
    FileFlows,
    FileHead,
    PackedFlows,
    ProducerSite,
    Site,
    attribute_of,
)
from .flow_producers import ProducerQueries
from .flow_wrappers import WrapperJoin


@dataclass(frozen=True, slots=True)
class OrphanDelta:
    """What one update changed: orphans that appeared, orphans that went away."""

    appeared: tuple[Channel, ...] = ()
    resolved: tuple[Channel, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.appeared or self.resolved)


@dataclass(slots=True)
class FlowIndex(TopicMatching, ProducerQueries, FlowIndexJson):
    """Flows per file and orphan state per channel, maintained incrementally."""

    files: dict[str, FileHead] = field(default_factory=dict)
    _produced: Counter[Channel] = field(default_factory=Counter)
    _consumed: SetMap = field(default_factory=SetMap)
    """Channel -> the files consuming it exactly (:meth:`consumer` reads only those)."""
    _inherited: Counter[str] = field(default_factory=Counter)
    _loose: Counter[str] = field(default_factory=Counter)
    _loose_readers: SetMap = field(default_factory=SetMap)
    """Attribute name -> files reading it through an owner they could not resolve."""
    _attr_guarded: set[Channel] = field(default_factory=set)
    """Attribute channels of classes with imported bases (re-checked as modules change)."""
    _exact_by_attr: Counter[str] = field(default_factory=Counter)
    _producer_files: SetMap = field(default_factory=SetMap)
    """Channel -> the files producing it."""
    _by_attr: SetMap = field(default_factory=SetMap)
    """Attribute name -> the produced attribute channels of that name."""
    _topic_refs: Counter[str] = field(default_factory=Counter)
    _names_of_value: CountMap = field(default_factory=CountMap)
    _values_of_name: CountMap = field(default_factory=CountMap)
    _orphans: set[Channel] = field(default_factory=set)
    prefix_match: bool = True
    _emit_refs: Counter[str] = field(default_factory=Counter)
    _ref_files: SetMap = field(default_factory=SetMap)
    _guarded: dict[Channel, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    _modules: Counter[str] = field(default_factory=Counter)
    _tops: Counter[str] = field(default_factory=Counter)
    """First parts of the module names (the tree's top-level packages and modules)."""
    _subs: Counter[str] = field(default_factory=Counter)
    """Subscribed topic strings (for prefix and pattern matching)."""
    _patterns: Counter[str] = field(default_factory=Counter)
    """Subscribed topics holding ``*`` (patterns)."""
    _wrap: WrapperJoin = field(default_factory=WrapperJoin)
    _wrap_patterns: set[str] = field(default_factory=set)
    _json: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-file JSON, built on first :meth:`to_json` and dropped when the file changes."""
    _bulk: bool = False
    """In a bulk load (:meth:`begin_bulk`): count only, evaluate at the end."""

    # -- queries -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.files)

    def __contains__(self, path: object) -> bool:
        return path in self.files

    def orphans(self) -> frozenset[Channel]:
        return frozenset(self._orphans)

    def is_orphan(self, channel: Channel) -> bool:
        return channel in self._orphans

    # -- updates -------------------------------------------------------------------------
    def begin_bulk(self) -> None:
        """Start a bulk load (an initial scan): updates only count, and every channel that
        may be an orphan is evaluated once, by :meth:`end_bulk`, instead of the channels
        each file touches after each file (quadratic in the tree)."""
        self._bulk = True
        self._wrap.begin_bulk()

    def end_bulk(self) -> OrphanDelta:
        """End a bulk load; the orphan changes of all its updates together. Every produced
        channel and every orphan so far is evaluated: the state file-by-file updates
        reach, since whether a channel is an orphan depends on the counts alone."""
        return self._reevaluate(set(self.end_bulk_channels()))

    def end_bulk_channels(self) -> list[Channel]:
        """End a bulk load, leaving its evaluation to the caller: every channel to pass
        to :meth:`reevaluate` (in parts, to hand the event loop back in between)."""
        self._bulk = False
        self._track_patterns(self._wrap.end_bulk())
        channels = {*self._producer_files, *self._guarded, *self._attr_guarded, *self._orphans}
        channels.update(Channel(ChannelKind.TOPIC, t) for t in self._wrap.produced)
        for name in self._emit_refs:
            channels.update(
                Channel(ChannelKind.TOPIC, v) for v in self._values_of_name.get(name, ()))
        return sorted(channels)

    def reevaluate(self, channels: Iterable[Channel]) -> OrphanDelta:
        """Whether each of ``channels`` is an orphan now (a channel's state depends on the
        counts alone, so any part of them can be evaluated on its own)."""
        return self._reevaluate(set(channels))

    def update(
        self, path: str, flows: FileFlows, packed: PackedFlows | None = None
    ) -> OrphanDelta:
        """Replace ``path``'s flows with ``flows``; the orphan changes this caused. With
        ``packed`` (the same flows, packed) the index keeps that instead of ``flows``."""
        head = self.files.get(path)
        old = head.flows if head is not None else None
        if old == flows:
            if head is not None and packed is not None and head.source is not packed:
                self._rehead(path, flows, packed)  # the old packed facts are not kept
            return OrphanDelta()
        return self._replace(path, old, flows, packed)

    def remove(self, path: str) -> OrphanDelta:
        """Forget ``path`` (deleted or moved away); the orphan changes this caused."""
        head = self.files.get(path)
        if head is None:
            return OrphanDelta()
        return self._replace(path, head.flows, None)

    def _rehead(self, path: str, flows: FileFlows, packed: PackedFlows) -> None:
        head = self.files[path] = FileHead.of(flows, packed)
        self._wrap.rehead(path, flows, head)

    def _replace(
        self, path: str, old: FileFlows | None, new: FileFlows | None,
        packed: PackedFlows | None = None,
    ) -> OrphanDelta:
        if self._bulk:
            self._recount(path, old, new, packed)
            return OrphanDelta()
        touched: set[Channel] = set()
        attrs: set[str] = set()
        refs: set[str] = set()
        for flows in (old, new):
            if flows is not None:
                _touched_by(flows, touched, attrs)
                refs.update(flows.topic_refs)
        modules_before = len(self._modules)
        subs_before = set(self._subs)
        before = {a: self._attr_state(a) for a in attrs}
        refs_before = {r: self._topic_refs[r] > 0 for r in refs}
        for topic in self._recount(path, old, new, packed):
            touched.add(Channel(ChannelKind.TOPIC, topic))
            touched.update(self._matching(topic))
        if len(self._modules) != modules_before:
            touched.update(self._guarded)
            touched.update(self._attr_guarded)
        for sub in subs_before.symmetric_difference(self._subs):
            touched.update(self._matching(sub))
        for flows in (old, new):
            if flows is not None:
                for name in flows.emit_refs:
                    touched.update(
                        Channel(ChannelKind.TOPIC, v) for v in self._values_of_name.get(name, ())
                    )
        loose_here = {*(old.loose_consumed if old else ()), *(new.loose_consumed if new else ())}
        for attr, state in before.items():
            if attr in loose_here or self._attr_state(attr) != state:
                touched.update(
                    Channel(ChannelKind.ATTRIBUTE, c) for c in self._by_attr.get(attr, ())
                )
        for ref, state in refs_before.items():
            if (self._topic_refs[ref] > 0) != state:
                touched.update(
                    Channel(ChannelKind.TOPIC, v) for v in self._values_of_name.get(ref, ())
                )
        return self._reevaluate(touched)

    def _recount(
        self, path: str, old: FileFlows | None, new: FileFlows | None,
        packed: PackedFlows | None,
    ) -> set[str]:
        """Swap ``path``'s counts from ``old`` to ``new``; the wrapper topics that changed."""
        self._json.pop(path, None)
        head = None
        if old is not None:
            self._count(path, old, -1)
            del self.files[path]
        if new is not None:
            self._count(path, new, +1)
            head = self.files[path] = FileHead.of(new, packed)
        return self._track_patterns(self._wrap.replace(path, old, new, head))

    def _track_patterns(self, topics: set[str]) -> set[str]:
        """Keep :attr:`_wrap_patterns` for ``topics`` (changed through wrappers)."""
        for topic in topics:
            if self._wrap.consumed[topic] > 0 and "*" in topic:
                self._wrap_patterns.add(topic)
            else:
                self._wrap_patterns.discard(topic)
        return topics

    def _attr_state(self, attr: str) -> tuple[bool, bool]:
        return (self._loose[attr] > 0, self._exact_by_attr[attr] > 0)

    def _count(self, path: str, flows: FileFlows, sign: int) -> None:
        _bump(self._modules, flows.module, sign)
        _bump(self._tops, flows.module.split(".", 1)[0], sign)
        for name in flows.topics_produced:
            channel = Channel(ChannelKind.TOPIC, name)
            guard = flows.topic_guards.get(name)
            self._count_producer(channel, path, sign, counted=guard is None)
            if guard is not None:
                table = self._guarded.setdefault(channel, {})
                if sign > 0:
                    table[path] = guard
                else:
                    table.pop(path, None)
                    if not table:
                        del self._guarded[channel]
        for name in flows.topics_consumed:
            self._consumed.change(Channel(ChannelKind.TOPIC, name), path, sign)
            _bump(self._subs, name, sign)
            if "*" in name:
                _bump(self._patterns, name, sign)
        for name in flows.emit_refs:
            _bump(self._emit_refs, name, sign)
            self._ref_files.change(name, path, sign)
        for name in flows.attrs_produced:
            self._count_producer(Channel(ChannelKind.ATTRIBUTE, name), path, sign)
        for name in flows.attrs_consumed:
            self._consumed.change(Channel(ChannelKind.ATTRIBUTE, name), path, sign)
            _bump(self._exact_by_attr, attribute_of(name), sign)
        for name in flows.inherited:
            _bump(self._inherited, name, sign)
        for attr in flows.loose_consumed:
            _bump(self._loose, attr, sign)
            self._loose_readers.change(attr, path, sign)
        for ref in flows.topic_refs:
            _bump(self._topic_refs, ref, sign)
        for name, value in flows.constants.items():
            self._names_of_value.bump(value, name, sign)
            self._values_of_name.bump(name, value, sign)

    def _count_producer(
        self, channel: Channel, path: str, sign: int, *, counted: bool = True
    ) -> None:
        if counted:
            _bump(self._produced, channel, sign)
        self._producer_files.change(channel, path, sign)
        if channel.kind is ChannelKind.ATTRIBUTE:
            attr = attribute_of(channel.name)
            if channel in self._producer_files:
                self._by_attr.add(attr, channel.name)
            else:
                self._by_attr.discard(attr, channel.name)

    def _is_orphan(self, channel: Channel) -> bool:
        if channel.kind is ChannelKind.TOPIC:
            return self._topic_orphan(channel)
        if self._produced[channel] <= 0 or channel in self._consumed:
            return False
        attr = attribute_of(channel.name)
        files = self._producer_files.get(channel, ())
        modules = {self.files[p].module for p in files}
        for path in files:
            flows = self.files[path]
            cls = channel.name[len(flows.module) + 1 : -len(attr) - 1]
            bases = flows.class_bases.get(cls, ())
            if bases:
                self._attr_guarded.add(channel)
            for base in bases:
                if not self._in_tree(base):
                    return False  # a base from another library may read it
                modules.add(self._normalized(base) or base)
        readers = self._loose_readers.get(attr)
        if any(self._reaches(self.files[p], modules) for p in readers):
            return False
        return not (self._inherited[channel.name] > 0 and self._exact_by_attr[attr] > 0)

    def _reaches(self, reader: FileHead, modules: set[str]) -> bool:
        """A loose read reaches the channels of its own module and package, of the
        modules (or classes) it imports, and of their sibling modules (a package passes
        its objects around; an import of one module of it is a sign of that)."""
        if reader.module in modules:
            return True
        own = reader.module.rpartition(".")[0]
        if own and any(m.rpartition(".")[0] == own for m in modules):
            return True  # a module of the same package
        for source in reader.imports:
            name = self._normalized(source)
            if name is None:
                continue
            for module in modules:
                package = module.rpartition(".")[0]
                if name == module or name.startswith(module + ".") or module.startswith(name + "."):
                    return True
                if package and (name == package or name.startswith(package + ".")):
                    return True
        return False

    def _normalized(self, source: str) -> str | None:
        """An import source as a module name of the tree (``src.pkg.mod.C`` ->
        ``pkg.mod.C`` when ``pkg`` is a top-level package of the tree), else None."""
        parts = source.lstrip(".").split(".")
        for i, part in enumerate(parts):
            if part in self._tops:
                return ".".join(parts[i:])
        return None

    def _reevaluate(self, channels: set[Channel]) -> OrphanDelta:
        appeared: list[Channel] = []
        resolved: list[Channel] = []
        for channel in channels:
            now = self._is_orphan(channel)
            if now and channel not in self._orphans:
                self._orphans.add(channel)
                appeared.append(channel)
            elif not now and channel in self._orphans:
                self._orphans.discard(channel)
                resolved.append(channel)
        return OrphanDelta(tuple(sorted(appeared)), tuple(sorted(resolved)))


def _bump(counter: Counter[Any], key: Any, sign: int) -> None:
    value = counter[key] + sign
    if value > 0:
        counter[key] = value
    else:
        del counter[key]


def _touched_by(flows: FileFlows, channels: set[Channel], attrs: set[str]) -> None:
    channels.update(Channel(ChannelKind.TOPIC, v) for v in flows.constants.values())
    channels.update(Channel(ChannelKind.TOPIC, n) for n in flows.topics_produced)
    channels.update(Channel(ChannelKind.TOPIC, n) for n in flows.topics_consumed)
    channels.update(Channel(ChannelKind.ATTRIBUTE, n) for n in flows.attrs_produced)
    channels.update(Channel(ChannelKind.ATTRIBUTE, n) for n in flows.attrs_consumed)
    channels.update(Channel(ChannelKind.ATTRIBUTE, n) for n in flows.inherited)
    attrs.update(flows.loose_consumed)
    attrs.update(attribute_of(n) for n in flows.attrs_consumed)


__all__ = [
    "Channel",
    "ChannelKind",
    "FlowIndex",
    "OrphanDelta",
    "ProducerSite",
    "Site",
]
