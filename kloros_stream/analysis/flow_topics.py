"""Topic rules of the flow analysis: values the code makes plain, bus calls, history reads.

A mixin of :class:`~.flows._Analyzer` (which holds the scopes, the module facts and the
results): the bus half of the walk, kept apart from the attribute (queue) half.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from . import flow_values as fv
from .flow_calls import call_kind, receiver_guard, topic_arg, wrapper_template
from .flow_model import MAX_SITES

MAX_DEFERRED = 400
"""Calls to callees unknown here kept per file (for wrappers defined elsewhere)."""
MAX_DEFERRED_ARGS = 3
NOT_WRAPPERS = frozenset(
    {
        "get", "pop", "setdefault", "join", "split", "startswith", "endswith", "replace",
        "format", "encode", "decode", "strip", "info", "debug", "warning", "error",
        "exception", "critical", "log", "print", "append", "add", "extend", "remove",
        "discard", "getattr", "setattr", "hasattr", "isinstance", "open", "getenv", "Path",
        "compile", "match", "search", "sub", "findall", "write", "read", "execute",
        "getLogger", "get_logger", "str", "int", "float", "dict", "list", "set", "tuple",
    }
)  # fmt: skip
"""Callees that are never wrappers: their calls are not kept."""
_TOPIC_TYPES = frozenset(
    {ast.Constant, ast.JoinedStr, ast.BinOp, ast.Name, ast.Attribute, ast.Subscript}
)
_SPACE = re.compile(r"\s")
"""Whitespace as ``str.isspace`` has it (a value holding some is no topic)."""
SIGNAL_FIELDS = ("signal", "topic", "channel", "subject")
"""Message fields holding the topic (``msg.get("signal") == "X"`` consumes X)."""


class TopicRules:
    """Bus topics: produced, consumed, referenced through constants of other modules."""

    frames: list[Any]
    info: Any
    is_test: bool
    topics_produced: dict[str, list[Any]]
    topics_consumed: set[str]
    topic_refs: set[str]
    emit_refs: dict[str, list[Any]]
    guards: dict[str, set[str]]
    unguarded: set[str]
    deferred: dict[str, list[tuple[str, str, str, int]]]
    consumed_sites: dict[str, Any]
    _deferred_count: int = 0
    signals_bound: bool = False
    """Some scope has bound a local name to a message's signal field."""

    def _site(self, node: ast.AST) -> Any:  # provided by the analyzer
        raise NotImplementedError

    def _top_class(self) -> str | None:
        """The enclosing class (``Outer.Inner`` for a nested one), if the module scan knows
        it (classes inside functions are not resolved)."""
        lead = self.frames[-1].lead
        return lead if lead in self.info.classes else None

    def lookup(self, node: ast.expr) -> list[Any] | None:
        """Literal values of a Name/Attribute: local bindings, then module/class constants."""
        if type(node) is ast.Name:
            name = node.id
            for frame in reversed(self.frames):
                if name in frame.env:
                    return frame.env[name]
            constants = self.info.constants
            return [constants[name]] if name in constants else None
        return self.info.lookup_constant(node, self._top_class())

    def _bind(self, target: ast.expr, items: list[Any] | None) -> None:
        if items:
            fv.bind(target, items, self.frames[-1].env)

    def _is_signal_read(self, node: ast.expr) -> bool:
        """``msg.get("signal")``, ``msg["signal"]`` or a local name holding one."""
        kind = type(node)
        if kind is ast.Name:
            return self.signals_bound and any(node.id in f.signal_vars for f in self.frames)
        if kind is ast.Call:
            func = node.func
            if type(func) is not ast.Attribute or func.attr != "get" or not node.args:
                return False
            key = node.args[0]
        elif kind is ast.Subscript:
            key = node.slice
        else:
            return False
        return type(key) is ast.Constant and key.value in SIGNAL_FIELDS

    # -- patterns ------------------------------------------------------------------------
    def _topic_values(self, arg: ast.expr | None, *, subscribe: bool, template: str) -> list[str]:
        """Topics named by ``arg``; unresolved names become references, f-strings with
        unknown parts topic patterns (``job_state:*``)."""
        if arg is None:
            return []
        found = fv.strings(fv.values(arg, self.lookup), flatten=subscribe)
        if not found:
            elts = (
                arg.elts if subscribe and isinstance(arg, ast.List | ast.Tuple | ast.Set) else [arg]
            )
            for elt in elts:
                pattern = fv.pattern(elt)
                if pattern is not None:
                    found.append(pattern)
                elif isinstance(elt, ast.Name | ast.Attribute):
                    ref = _ref_name(elt)
                    if ref:
                        if subscribe:
                            self.topic_refs.add(ref)
                        elif template == "{}":
                            sites = self.emit_refs.setdefault(ref, [])
                            if len(sites) < MAX_SITES:
                                sites.append(self._site(elt))
        if template != "{}":
            found = [template.format(t) for t in found]
        return found

    def bus_call(self, node: ast.Call) -> None:
        """A publish or a subscription: record its topics."""
        lead = self.frames[-1].lead  # self._top_class(), inline: this runs for every call
        cls = lead if lead in self.info.classes else None
        kind, index, keyword = call_kind(node, self.info, cls)
        if kind is None:
            if index == 0:
                self._defer(node)
            return
        template = wrapper_template(node, self.info, cls)
        arg = topic_arg(node, index, keyword, kind)
        if self._from_params(arg) and (
            not isinstance(arg, ast.JoinedStr) or self._function_qual() in self.info.called
        ):
            arg = None  # a wrapper: its callers name the topic (an f-string: a pattern)
        if kind != "emit":
            args = [arg]
            if keyword is None and index == 0:  # subscribe("A", "B", handler): every topic
                args += [a for a in node.args[1:] if not isinstance(a, ast.Starred)]
            for one in args:
                self._consume_topics(
                    self._topic_values(one, subscribe=True, template=template), node
                )
            return
        publish, guard = receiver_guard(self.info, cls, node.func)
        if not publish:
            return
        for topic in self._topic_values(arg, subscribe=False, template=template):
            sites = self.topics_produced.setdefault(topic, [])
            if len(sites) < MAX_SITES:
                sites.append(self._site(node))
            if guard is None:
                self.unguarded.add(topic)
            else:
                self.guards.setdefault(topic, set()).update(guard.split("|"))

    def _consume_topics(self, topics: list[str], node: ast.AST) -> None:
        site = self._site(node)
        for topic in topics:
            self.topics_consumed.add(topic)
            self.consumed_sites.setdefault(topic, site)

    def _defer(self, node: ast.Call) -> None:
        """Keep the topic-like arguments of a call to a callee unknown here: it may be a
        wrapper defined in another module (the index joins them)."""
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if not name or name in NOT_WRAPPERS or self._deferred_count >= MAX_DEFERRED:
            return
        keywords = node.keywords
        if not node.args and not keywords:
            return
        args: list[tuple[Any, ast.expr]] = list(enumerate(node.args[:MAX_DEFERRED_ARGS]))
        if keywords:
            args += [(k.arg, k.value) for k in keywords if k.arg is not None]
        params = self.frames[-1].params
        site = None
        for key, arg in args:
            kind = type(arg)  # the commonest shapes inline (as _deferred_values has them)
            if kind is ast.Constant:
                value = arg.value
                if not isinstance(value, str) or not value:
                    continue
                vals: list[str] = [value]
            elif kind is ast.Name:  # self.lookup(arg), inline: a hot path
                ident = arg.id
                if ident in params:
                    continue
                for frame in reversed(self.frames):
                    if ident in frame.env:
                        found = frame.env[ident]
                        break
                else:
                    if ident not in self.info.constants:
                        continue
                    found = [self.info.constants[ident]]
                vals = fv.strings(found)
            elif kind is ast.Attribute:
                found = self.lookup(arg)
                if found is None:
                    continue
                vals = fv.strings(found)
            else:
                vals = self._deferred_values(arg)
            for value in vals:
                if len(value) <= 200 and _SPACE.search(value) is None:
                    if site is None:
                        site = self._site(node)
                        bucket = self.deferred.get(name)
                        if bucket is None:
                            bucket = self.deferred[name] = []
                    bucket.append((str(key), value, *site))
                    self._deferred_count += 1

    def _deferred_values(self, arg: ast.expr) -> list[str]:
        """The topics a topic-like argument of a call can carry (none when it comes from
        the function's parameters)."""
        kind = type(arg)
        if kind is ast.Constant:  # its value if a non-empty string
            value = arg.value
            return [value] if isinstance(value, str) and value else []
        if kind is ast.Name or kind is ast.Attribute:  # no pattern in a bare name
            if kind is ast.Name and arg.id in self.frames[-1].params:
                return []
            found = self.lookup(arg)
            return fv.strings(found) if found is not None else []
        if kind not in _TOPIC_TYPES or self._from_params(arg):
            return []
        vals = fv.strings(fv.values(arg, self.lookup))
        if not vals:
            pattern = fv.pattern(arg)
            vals = [pattern] if pattern else []
        return vals

    def _function_qual(self) -> str:
        """``Class.method`` for a method (as the module scan names it), else the name."""
        frames = self.frames
        if len(frames) >= 3 and frames[-2].is_class and all(f.is_class for f in frames[1:-1]):
            return ".".join(f.name for f in frames[1:])
        return frames[-1].name

    def _from_params(self, arg: ast.expr | None) -> bool:
        params = self.frames[-1].params
        if not params or arg is None:
            return False
        if isinstance(arg, ast.JoinedStr):
            names = [v.value for v in arg.values if isinstance(v, ast.FormattedValue)]
        else:
            names = [arg]
        return any(isinstance(n, ast.Name) and n.id in params for n in names)

    def visit_For(self, node: ast.For | ast.AsyncFor | ast.comprehension) -> None:
        self._bind(node.target, fv.iter_values(node.iter, self.lookup))

    def visit_Comp(
        self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp
    ) -> None:
        for gen in node.generators:  # bind the loop variables before the element is read
            self._bind(gen.target, fv.iter_values(gen.iter, self.lookup))

    def visit_Compare(self, node: ast.Compare) -> None:
        if self.is_test:
            return
        sides = [node.left, *node.comparators]
        for side in sides:
            if self._is_signal_read(side):
                break
        else:
            return
        for expr in sides:
            self._consume_topics(fv.strings(fv.values(expr, self.lookup), flatten=True), node)


def is_test_module(module: str) -> bool:
    parts = module.split(".")
    return any(p in ("tests", "test", "conftest") or p.startswith("test_") for p in parts) or (
        parts[-1].endswith("_test")
    )


def _ref_name(node: ast.expr) -> str | None:
    """``X``, ``mod.X`` -> ``X``; ``Enum.MEMBER(.value)`` -> ``Enum.MEMBER``: a name that
    may be a constant defined elsewhere in the tree (UPPER_CASE last part only)."""
    if isinstance(node, ast.Attribute) and node.attr == "value":
        node = node.value
    if isinstance(node, ast.Name):
        return node.id if node.id.isupper() else None
    if isinstance(node, ast.Attribute) and node.attr.isupper():
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id[:1].isupper() and not owner.id.isupper():
            return f"{owner.id}.{node.attr}"
        return node.attr
    return None
