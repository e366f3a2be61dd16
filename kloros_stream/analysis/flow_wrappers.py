"""Wrappers across modules: calls in one file to a bus wrapper defined in another.

A file exports its wrappers (functions that pass a parameter on as the topic of a bus
call) by bare name, and keeps the topic-like arguments of calls whose callee it could not
resolve. :class:`WrapperJoin` joins the two across the tree, incrementally: per callee
name it keeps the topics that name's calls publish and subscribe, recomputed only when a
file with wrappers or calls of that name changes.

Every caller is kept as its flow index head (its flows possibly packed); the calls
themselves are kept decoded only for the names some file defines a wrapper of (decoded
once, when the name gets its first wrapper): joins, sites and queries never decode a
file. Pure, no I/O.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .flow_model import FileFlows, FileHead

Spec = tuple[str, int, str, str]
"""(kind, position, parameter, template) of a wrapper."""
Calls = tuple[tuple[str, str, str, int], ...]
"""A file's calls of one callee name: (argument position or keyword, value, function,
line)."""
Site = tuple[str, str, str, int]
"""(path, module, function, line) of a call through a wrapper."""


@dataclass(slots=True)
class WrapperJoin:
    produced: Counter[str] = field(default_factory=Counter)
    """Topics published through wrappers defined in other files (per call)."""
    consumed: Counter[str] = field(default_factory=Counter)
    _specs: dict[str, Counter[Spec]] = field(default_factory=dict)
    _files: dict[str, dict[str, FileHead]] = field(default_factory=dict)
    """Callee name -> files calling it (path -> the file's head in the flow index)."""
    _calls: dict[str, dict[str, tuple[str, Calls]]] = field(default_factory=dict)
    """Wrapper name (one with specs) -> its callers' (module, calls of that name)."""
    _joined: dict[str, tuple[Counter[str], Counter[str]]] = field(default_factory=dict)
    _stale: set[str] | None = None
    """In a bulk load: names whose wrappers changed, joined once at :meth:`end_bulk`."""

    def begin_bulk(self) -> None:
        """Defer every join over a name's callers to :meth:`end_bulk` (a callee defined
        in many files is joined once, not once per file)."""
        self._stale = set()

    def end_bulk(self) -> set[str]:
        """Join the names whose wrappers changed in the bulk load; the topics touched."""
        stale, self._stale = self._stale or set(), None
        touched: set[str] = set()
        for name in sorted(stale):
            touched |= self._rejoin(name)
        return touched

    def callers(self, paths: set[str]) -> set[str]:
        """Which of ``paths`` call a wrapper defined in another file."""
        return {p for name in self._joined for p in paths if p in self._files.get(name, ())}

    def replace(
        self, path: str, old: FileFlows | None, new: FileFlows | None, head: FileHead | None
    ) -> set[str]:
        """Account for ``path`` changing from ``old`` to ``new`` (``head``: what the flow
        index keeps of ``new``); the topics whose production or consumption through
        wrappers may have changed. A name whose wrappers changed is joined again over all
        its callers; a name only called here has just this file's share swapped (a
        popular callee costs no more than a rare one)."""
        assert new is None or head is not None, "a new file's head is kept for its calls"
        respecced: set[str] = set()
        called: set[str] = set()
        for flows, sign in ((old, -1), (new, +1)):
            if flows is None:
                continue
            for name, spec in flows.wrappers.items():
                counter = self._specs.setdefault(name, Counter())
                counter[spec] += sign
                if counter[spec] <= 0:
                    del counter[spec]
                if not counter:
                    del self._specs[name]
                respecced.add(name)
            for name, calls in flows.calls.items():
                files = self._files.setdefault(name, {})
                held = self._calls.get(name)
                if sign > 0 and head is not None:
                    files[path] = head
                    if held is not None:
                        held[path] = (flows.module, calls)
                else:
                    files.pop(path, None)
                    if held is not None:
                        held.pop(path, None)
                    if not files:
                        del self._files[name]
                called.add(name)
        touched: set[str] = set()
        if self._stale is not None:
            self._stale |= respecced
        else:
            for name in respecced:
                touched |= self._rejoin(name)
        for name in called - respecced - (self._stale or set()):
            touched |= self._swap_share(name, old, new)
        return touched

    def rehead(self, path: str, flows: FileFlows, head: FileHead) -> None:
        """``path`` is kept as ``head`` now (its flows unchanged)."""
        for name in flows.calls:
            self._files[name][path] = head

    def _rejoin(self, name: str) -> set[str]:
        old_p, old_c = self._joined.pop(name, (Counter(), Counter()))
        self.produced.subtract(old_p)
        self.consumed.subtract(old_c)
        if name not in self._specs:
            self._calls.pop(name, None)
        elif name not in self._calls:  # a name's first wrapper: its callers decoded once
            self._calls[name] = {
                path: (head.module, head.flows.calls.get(name, ()))
                for path, head in self._files.get(name, {}).items()
            }
        new_p, new_c = self._join(name)
        self.produced.update(new_p)
        self.consumed.update(new_c)
        for counter in (self.produced, self.consumed):
            for topic in [t for t in (*old_p, *old_c) if counter[t] <= 0]:
                del counter[topic]
        if new_p or new_c:
            self._joined[name] = (new_p, new_c)
        return {*old_p, *old_c, *new_p, *new_c}

    def _swap_share(self, name: str, old: FileFlows | None, new: FileFlows | None) -> set[str]:
        specs = self._specs.get(name)
        if not specs:
            return set()
        old_p, old_c = _share(old.calls.get(name, ()) if old else (), specs)
        new_p, new_c = _share(new.calls.get(name, ()) if new else (), specs)
        if not (old_p or old_c or new_p or new_c):
            return set()
        joined = self._joined.setdefault(name, (Counter(), Counter()))
        for mine, total, minus, plus in (
            (joined[0], self.produced, old_p, new_p), (joined[1], self.consumed, old_c, new_c)
        ):
            for counter in (mine, total):
                counter.subtract(minus)
                counter.update(plus)
                for topic in [t for t in minus if counter[t] <= 0]:
                    del counter[topic]
        if not joined[0] and not joined[1]:
            del self._joined[name]
        return {*old_p, *old_c, *new_p, *new_c}

    def _join(self, name: str) -> tuple[Counter[str], Counter[str]]:
        produced: Counter[str] = Counter()
        consumed: Counter[str] = Counter()
        specs = self._specs.get(name)
        if not specs:
            return produced, consumed
        for _module, calls in self._calls.get(name, {}).values():
            p, c = _share(calls, specs)
            produced.update(p)
            consumed.update(c)
        return produced, consumed

    def sites(self, topic: str, limit: int, *, consumed: bool = False) -> list[Site]:
        """(path, module, function, line) of the calls publishing (or subscribing to)
        ``topic`` through wrappers."""
        out: list[Site] = []
        side = 1 if consumed else 0
        for name in sorted(n for n, joined in self._joined.items() if topic in joined[side]):
            for path, (module, calls) in sorted(self._calls.get(name, {}).items()):
                for _key, value, function, line in calls:
                    if value in topic:
                        out.append((path, module, function, line))
                        if len(out) >= limit:
                            return out
        return out


def _share(calls: Calls, specs: Counter[Spec]) -> tuple[Counter[str], Counter[str]]:
    """The topics a file's ``calls`` of one name publish and subscribe through it."""
    produced: Counter[str] = Counter()
    consumed: Counter[str] = Counter()
    for key, value, _function, _line in calls:
        for kind, index, param, template in specs:
            if key == str(index) or key == param:
                try:
                    topic = template.format(value)
                except (ValueError, IndexError, KeyError):
                    continue
                (produced if kind == "emit" else consumed)[topic] += 1
    return produced, consumed
