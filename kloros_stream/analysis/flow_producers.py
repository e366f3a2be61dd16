"""Where channels are produced, for :class:`~.flow_index.FlowIndex` (a mixin): the
producer sites quoted in a question's evidence, their count, and which files produce a
channel at all."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .flow_model import Channel, ChannelKind, ProducerSite

if TYPE_CHECKING:
    from .compact import CountMap, SetMap
    from .flow_model import FileHead
    from .flow_wrappers import WrapperJoin

ALL_SITES = 1 << 30


class ProducerQueries:
    files: dict[str, FileHead]
    _producer_files: SetMap
    _names_of_value: CountMap
    _values_of_name: CountMap
    _ref_files: SetMap
    _wrap: WrapperJoin

    def producers(self, channel: Channel, limit: int = 10) -> list[ProducerSite]:
        """Up to ``limit`` producer sites of ``channel``: through constants (by name, path,
        line), through wrappers, then directly (by path, line). Never in the order of the
        edits that built the index: a restored index and a fresh fold list the same."""
        out: list[ProducerSite] = []
        if channel.kind is ChannelKind.TOPIC:
            for name in sorted(self._names_of_value.get(channel.name, ())):
                for path in sorted(self._ref_files.get(name, ())):
                    flows = self.files[path].flows
                    for function, line in flows.emit_refs.get(name, ()):
                        out.append(ProducerSite(path, flows.module, function, line))
            for path, module, function, line in self._wrap.sites(channel.name, limit):
                out.append(ProducerSite(path, module, function, line))
        for path in sorted(self._producer_files.get(channel, ())):
            flows = self.files[path].flows
            table = (
                flows.topics_produced if channel.kind is ChannelKind.TOPIC else flows.attrs_produced
            )
            for function, line in table.get(channel.name, ()):
                out.append(ProducerSite(path, flows.module, function, line))
                if len(out) >= limit:
                    return out
        return out

    def produced_by(self, paths: set[str]) -> set[Channel] | None:
        """Every channel :meth:`producers` may list one of ``paths`` for, from their
        current flows alone (cost: the size of those files, not of the tree); None when one
        of them calls a wrapper of another file (then use :meth:`producing_in`)."""
        if self._wrap.callers(paths):
            return None
        out: set[Channel] = set()
        for path in paths:
            head = self.files.get(path)
            if head is None:
                continue
            flows = head.flows
            out.update(Channel(ChannelKind.TOPIC, t) for t in flows.topics_produced)
            out.update(Channel(ChannelKind.ATTRIBUTE, a) for a in flows.attrs_produced)
            for name in flows.emit_refs:
                out.update(
                    Channel(ChannelKind.TOPIC, v) for v in self._values_of_name.get(name, ()))
        return out

    def producing_in(self, paths: set[str]) -> Callable[[Channel], bool]:
        """A test of whether one of ``paths`` is among the producers of a channel (what
        :meth:`producers` lists), by set lookups: a change of those files leaves the
        evidence of every other channel as it was."""
        callers = self._wrap.callers(paths)

        def test(channel: Channel) -> bool:
            if not paths.isdisjoint(self._producer_files.get(channel, ())):
                return True
            if channel.kind is not ChannelKind.TOPIC:
                return False
            for name in self._names_of_value.get(channel.name, ()):
                if not paths.isdisjoint(self._ref_files.get(name, ())):
                    return True
            return bool(callers) and any(
                site[0] in callers for site in self._wrap.sites(channel.name, ALL_SITES))

        return test

    def producer_count(self, channel: Channel) -> int:
        """Number of files producing ``channel``."""
        count = len(self._producer_files.get(channel, ()))
        if channel.kind is ChannelKind.TOPIC:
            for name in self._names_of_value.get(channel.name, ()):
                count += len(self._ref_files.get(name, ()))
            count += len({s[0] for s in self._wrap.sites(channel.name, 100)})
        return count
