"""How topics meet their consumers, for :class:`~.flow_index.FlowIndex` (a mixin).

A topic is consumed by a subscription to it, by a prefix of it (ZeroMQ SUB semantics,
when ``prefix_match``; an empty subscription is a tap, not a consumer), by a subscribed
pattern covering it (``job_state:*``), through a wrapper defined in another file, or
through a constant of its value named in a subscription. It is produced by a publish,
through a wrapper, through an imported constant defined once in the tree, or through a
receiver whose class comes from an import of the tree (a guard).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from .flow_model import Channel, ChannelKind, ProducerSite

if TYPE_CHECKING:
    from .compact import CountMap, SetMap
    from .flow_model import FileHead
    from .flow_wrappers import WrapperJoin


class TopicMatching:
    files: dict[str, FileHead]
    prefix_match: bool
    _produced: Counter[Channel]
    _consumed: SetMap
    _guarded: dict[Channel, dict[str, tuple[str, ...]]]
    _producer_files: SetMap
    _emit_refs: Counter[str]
    _topic_refs: Counter[str]
    _names_of_value: CountMap
    _values_of_name: CountMap
    _modules: Counter[str]
    _subs: Counter[str]
    _patterns: Counter[str]
    _wrap: WrapperJoin
    _wrap_patterns: set[str]

    def _topic_orphan(self, channel: Channel) -> bool:
        name = channel.name
        names = self._names_of_value.get(name, {})
        wrap = self._wrap
        produced = (
            self._produced[channel] > 0
            or wrap.produced[name] > 0
            or any(self._in_tree(g) for gs in self._guarded.get(channel, {}).values() for g in gs)
            or any(
                self._emit_refs[n] > 0 and len(self._values_of_name.get(n, ())) == 1 for n in names
            )
        )
        if not produced or channel in self._consumed or wrap.consumed[name] > 0:
            return False
        if any(self._topic_refs[n] > 0 for n in names):
            return False
        if self.prefix_match and any(
            name[:i] in self._subs or wrap.consumed[name[:i]] > 0 for i in range(1, len(name))
        ):
            return False
        for pattern in (*self._patterns, *self._wrap_patterns):
            if fnmatchcase(name, pattern) or ("*" in name and fnmatchcase(pattern, name)):
                return False
        return not ("*" in name and any(fnmatchcase(s, name) for s in self._subs))

    def _in_tree(self, dotted: str) -> bool:
        """Whether an import source names a module of the tree (relative imports do)."""
        if dotted.startswith("."):
            return True
        parts = dotted.split(".")
        return any(
            ".".join(parts[i:j]) in self._modules
            for i in range(len(parts))
            for j in range(i + 1, len(parts) + 1)
        )

    def _matching(self, sub: str) -> set[Channel]:
        """Produced topic channels a subscription to ``sub`` may newly match or unmatch."""
        out: set[Channel] = set()
        for channel in (*self._producer_files, *self._guarded):
            if channel.kind is ChannelKind.TOPIC and (
                channel.name.startswith(sub) or "*" in sub or "*" in channel.name
            ):
                out.add(channel)
        for topic in self._wrap.produced:
            if topic.startswith(sub) or "*" in sub or "*" in topic:
                out.add(Channel(ChannelKind.TOPIC, topic))
        for name in self._emit_refs:
            out.update(Channel(ChannelKind.TOPIC, v) for v in self._values_of_name.get(name, ()))
        return out

    def consumer(self, channel: Channel, first: Iterable[str] = ()) -> ProducerSite | None:
        """A site that consumes ``channel`` (exactly, by a prefix or pattern subscription,
        or through a wrapper), or None (a loose read, an inherited attribute...). The
        only files searched are the ones consuming it exactly, ``first`` (those just
        changed, where a new consumer usually is) before the others."""
        names = {channel.name}
        if channel.kind is ChannelKind.TOPIC:
            name = channel.name
            names |= {name[:i] for i in range(1, len(name)) if name[:i] in self._subs}
            names |= {p for p in self._patterns if fnmatchcase(name, p)}
            for path, module, function, line in self._wrap.sites(name, 1, consumed=True):
                return ProducerSite(path, module, function, line)
        consumers = {p for kind in ChannelKind for n in names
                     for p in self._consumed.get(Channel(kind, n))}
        firsts = sorted(p for p in first if p in consumers)
        for path in [*firsts, *sorted(consumers.difference(firsts))]:
            flows = self.files[path].flows
            for name in sorted(names):  # not in a set's order (it differs per process)
                site = flows.consumed_sites.get(name)
                if site is not None:
                    return ProducerSite(path, flows.module, site[0], site[1])
        return None
