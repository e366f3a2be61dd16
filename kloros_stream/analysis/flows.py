"""Data flows of one Python file: which channels it fills and which it reads.

Pure: an AST (or source bytes) in, a :class:`FileFlows` out; no I/O, nothing imported
or executed. Two kinds of channel:

- **topics**: bus topics named by a string literal. ``emit("X")``, ``emit(signal="X")``,
  ``publish("X")`` produce; ``ChemSub("X")``, ``UMNSub("X")``, ``subscribe("X")`` consume
  (the call names come from the config; a call is matched by its last name, so
  ``self.bus.emit`` counts). A topic may be an UPPER_CASE module-level string constant of
  the same file (``emit(CAPABILITY_GAP)``); a subscription through a name that does not
  resolve here (``ChemSub(signals.CAPABILITY_GAP)``) is kept as a reference, and consumes
  the value of every module-level constant of that name in the tree.
- **attributes**: queue-like attributes keyed ``module.Class.attribute``, so two classes
  with ``self.buffer`` never collide. Producers: ``append``/``appendleft``/``extend``/
  ``extendleft``/``insert``/``put``/``put_nowait``/``add``/``update``, item assignment
  (``self.x[k] = v``, ``self.x[k][j] = v``, ``self.x[k] += 1``), ``self.x += [...]``, and
  assigning a collection built at run time (``self.x = [job]``, a comprehension). Consumers: every
  other read (``pop``, ``get``, ``popleft``, iteration, subscripts, ``len()``, passing,
  returning, membership, truthiness, ``getattr(obj, "x")``); ``clear``/``sort``/
  ``reverse`` are neither.

Conservative rules, because a false "orphaned queue" costs more than a missed one:

- an ``obj.x`` read whose owner cannot be resolved (not ``self``/``cls``/a class of this
  module) is a *loose* consumer of every channel whose attribute is ``x``, in any file;
- a consumer in a class with real base classes is also loose (the attribute may be
  inherited), and a channel produced in such a class is consumed by a read of its
  attribute in any class (``inherited``);
- configuration is not a queue: an attribute only ever assigned literals (``self.words =
  ["kloros"]``, ``[]``, constants) and never mutated has no producer.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .pysource import parse_module

PRODUCE_METHODS = frozenset(
    {"append", "appendleft", "extend", "extendleft", "insert", "put", "put_nowait", "add", "update"}
)
NEUTRAL_METHODS = frozenset({"clear", "sort", "reverse"})
TOPIC_KEYWORDS = ("signal", "topic", "channel", "subject")
SUBSCRIBE_KEYWORDS = (*TOPIC_KEYWORDS, "signals", "topics", "channels")
TRIVIAL_BASES = frozenset({"object", "ABC", "Generic", "Protocol"})
MAX_SITES = 20
"""Producer sites kept per channel per file."""

Site = tuple[str, int]
"""(function qualname within the module, or ``<module>``; line)."""


@dataclass(frozen=True, slots=True)
class FlowConfig:
    """Call names that produce and consume bus topics."""

    emit_calls: frozenset[str] = frozenset({"emit", "publish"})
    subscribe_calls: frozenset[str] = frozenset({"ChemSub", "UMNSub", "subscribe"})

    @classmethod
    def of(cls, emit_calls: Iterable[str], subscribe_calls: Iterable[str]) -> FlowConfig:
        return cls(frozenset(emit_calls), frozenset(subscribe_calls))

    @classmethod
    def from_section(cls, section: Any) -> FlowConfig:
        """From an ``[monitors.integration]`` section (anything with its attributes)."""
        return cls.of(section.emit_calls, section.subscribe_calls)


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
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileFlows:
        """Inverse of :meth:`to_json`; raises KeyError/TypeError/ValueError if malformed."""

        def sites(raw: dict[str, Any]) -> dict[str, tuple[Site, ...]]:
            return {str(k): tuple((str(f), int(n)) for f, n in v) for k, v in raw.items()}

        return cls(
            module=str(data["module"]),
            topics_produced=sites(data["topics_produced"]),
            topics_consumed=frozenset(map(str, data["topics_consumed"])),
            attrs_produced=sites(data["attrs_produced"]),
            attrs_consumed=frozenset(map(str, data["attrs_consumed"])),
            loose_consumed=frozenset(map(str, data["loose_consumed"])),
            inherited=frozenset(map(str, data["inherited"])),
            constants={str(k): str(v) for k, v in data["constants"].items()},
            topic_refs=frozenset(map(str, data["topic_refs"])),
        )


def attribute_of(channel: str) -> str:
    """``module.Class.attr`` -> ``attr``."""
    return channel.rsplit(".", 1)[-1]


def analyze_source(
    source: bytes | str, module: str, config: FlowConfig | None = None, filename: str = ""
) -> FileFlows:
    """Parse and analyse; raises :class:`~.pysource.SourceError` if it does not parse."""
    return analyze_tree(parse_module(source, filename or module), module, config)


def analyze_tree(tree: ast.Module, module: str, config: FlowConfig | None = None) -> FileFlows:
    """The flows of one parsed module named ``module``."""
    analyzer = _Analyzer(module, config or FlowConfig())
    analyzer.run(tree)
    return analyzer.result()


@dataclass(slots=True)
class _Frame:
    name: str
    is_class: bool
    bindings: dict[str, str]
    """Local names bound to an enclosing class (``self``, ``cls``) -> class qualname."""
    derived: bool = False
    """A class with real base classes."""


_POP = object()
"""Stack marker: leave the innermost scope."""


_Resolved = tuple[str, str, bool]
"""(channel, attribute, exact): exact channels are class-qualified, loose ones are not."""


_SKIP_FIELDS = frozenset({"ctx", "op", "annotation", "returns", "type_comment", "type_ignores"})
"""Never data reads: expression contexts, operators, type annotations."""
_CHILD_FIELDS: dict[type, tuple[str, ...]] = {}


def _child_fields(cls: type) -> tuple[str, ...]:
    fields = _CHILD_FIELDS.get(cls)
    if fields is None:
        fields = tuple(f for f in getattr(cls, "_fields", ()) if f not in _SKIP_FIELDS)
        _CHILD_FIELDS[cls] = fields
    return fields


class _Analyzer:
    """A lean, iterative AST walk: type-keyed dispatch and an explicit stack, so it costs
    a fraction of the parse and no nesting depth the parser accepts can exhaust the
    interpreter's recursion limit. Nodes are handled parent first, in source order."""

    def __init__(self, module: str, config: FlowConfig) -> None:
        self.module = module
        self.config = config
        self.frames: list[_Frame] = [_Frame("", False, {})]
        self.module_classes: set[str] = set()
        self.constants: dict[str, str] = {}
        self.topic_refs: set[str] = set()
        self.derived: set[str] = set()
        self.handled: set[int] = set()
        self.topics_produced: dict[str, list[Site]] = {}
        self.topics_consumed: set[str] = set()
        self.attrs_produced: dict[str, list[Site]] = {}
        self.attrs_consumed: set[str] = set()
        self.loose: set[str] = set()
        self.inherited: set[str] = set()
        self.stack: list[Any] = []

    def run(self, tree: ast.Module) -> None:
        self.constants = _string_constants(tree)
        classes = [s for s in tree.body if isinstance(s, ast.ClassDef)]
        self.module_classes = {c.name for c in classes}
        self.derived = {c.name for c in classes if _is_derived(c)}
        stack = self.stack = [tree]
        while stack:
            item = stack.pop()
            if item is _POP:
                self.frames.pop()
            elif type(item) is _Frame:
                self.frames.append(item)
                if item.derived:
                    self.derived.add(self._qualname())
            else:
                handler = _HANDLERS.get(type(item))
                if handler is None:
                    self.children(item)
                else:
                    handler(self, item)

    def result(self) -> FileFlows:
        return FileFlows(
            module=self.module,
            topics_produced={k: tuple(v) for k, v in self.topics_produced.items()},
            topics_consumed=frozenset(self.topics_consumed),
            attrs_produced={k: tuple(v) for k, v in self.attrs_produced.items()},
            attrs_consumed=frozenset(self.attrs_consumed),
            loose_consumed=frozenset(self.loose),
            inherited=frozenset(self.inherited),
            constants=self.constants,
            topic_refs=frozenset(self.topic_refs),
        )

    # -- scopes --------------------------------------------------------------------------
    def _qualname(self) -> str:
        return ".".join(f.name for f in self.frames[1:]) or "<module>"

    def _site(self, node: ast.AST) -> Site:
        return (self._qualname(), getattr(node, "lineno", 0))

    def children(self, node: ast.AST) -> None:
        """Queue ``node``'s children (so that they are handled in source order)."""
        push = self.stack.append
        for name in reversed(_child_fields(type(node))):
            value = getattr(node, name, None)
            if type(value) is list:
                for item in reversed(value):
                    if isinstance(item, ast.AST):
                        push(item)
            elif isinstance(value, ast.AST):
                push(value)

    def _enter(self, frame: _Frame, body: list[Any], *outer: Any) -> None:
        """Queue ``outer`` nodes (in the current scope), then ``body`` inside ``frame``."""
        stack = self.stack
        stack.append(_POP)
        stack.extend(reversed(body))
        stack.append(frame)
        stack.extend(reversed(outer))

    def visit_leaf(self, node: ast.AST) -> None:
        """Names and constants hold no attribute reads."""

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        frame = _Frame(node.name, True, dict(self.frames[-1].bindings), _is_derived(node))
        keywords = [k.value for k in node.keywords]
        self._enter(frame, node.body, *node.decorator_list, *node.bases, *keywords)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        outer = self.frames[-1]
        params = [a.arg for a in (*node.args.posonlyargs, *node.args.args)]
        all_params = {*params, *(a.arg for a in node.args.kwonlyargs)}
        for extra in (node.args.vararg, node.args.kwarg):
            if extra is not None:
                all_params.add(extra.arg)
        bindings = {k: v for k, v in outer.bindings.items() if k not in all_params}
        if outer.is_class and params and not _is_staticmethod(node):
            bindings[params[0]] = self._qualname()
        frame = _Frame(node.name, False, bindings)
        self._enter(frame, node.body, *node.decorator_list, node.args)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        outer = self.frames[-1]
        names = {a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)}
        bindings = {k: v for k, v in outer.bindings.items() if k not in names}
        self._enter(_Frame("<lambda>", False, bindings), [node.body], node.args)

    # -- resolution ----------------------------------------------------------------------
    def _resolve(self, node: ast.Attribute) -> _Resolved:
        owner = node.value
        if isinstance(owner, ast.Name):
            cls = self.frames[-1].bindings.get(owner.id)
            if cls is None and owner.id in self.module_classes:
                cls = owner.id
            if cls is not None:
                return (f"{self.module}.{cls}.{node.attr}", node.attr, True)
        return (node.attr, node.attr, False)

    def _class_of(self, channel: str) -> str:
        return channel[len(self.module) + 1 : channel.rfind(".")]

    def _produce_attr(self, node: ast.Attribute, site_node: ast.AST) -> None:
        channel, _attr, exact = self._resolve(node)
        if not exact:
            return
        sites = self.attrs_produced.setdefault(channel, [])
        if len(sites) < MAX_SITES:
            sites.append(self._site(site_node))
        if self._class_of(channel) in self.derived:
            self.inherited.add(channel)

    def _consume_attr(self, node: ast.Attribute) -> None:
        channel, attr, exact = self._resolve(node)
        if not exact:
            self.loose.add(attr)
            return
        self.attrs_consumed.add(channel)
        if self._class_of(channel) in self.derived:
            self.loose.add(attr)

    # -- patterns ------------------------------------------------------------------------
    def _topics(self, node: ast.Call, keywords: tuple[str, ...], *, subscribe: bool) -> list[str]:
        """Topics named by the first positional argument or a topic keyword: string
        literals, or constants of this module. For a subscription, a list of them, and
        names that do not resolve here are kept as references."""
        values: list[ast.expr] = [node.args[0]] if node.args else []
        values += [k.value for k in node.keywords if k.arg in keywords]
        if subscribe:
            values = [
                e
                for v in values
                for e in (v.elts if isinstance(v, ast.List | ast.Tuple | ast.Set) else [v])
            ]
        topics: list[str] = []
        for value in values:
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                topics.append(value.value)
            elif isinstance(value, ast.Name) and value.id in self.constants:
                topics.append(self.constants[value.id])
            elif subscribe and isinstance(value, ast.Name | ast.Attribute):
                name = _call_name(value)
                if name and name.isupper():
                    self.topic_refs.add(name)
        return [t for t in topics if t]

    def visit_Call(self, node: ast.Call) -> None:
        name = _call_name(node.func)
        if name in self.config.emit_calls:
            for topic in self._topics(node, TOPIC_KEYWORDS, subscribe=False):
                sites = self.topics_produced.setdefault(topic, [])
                if len(sites) < MAX_SITES:
                    sites.append(self._site(node))
        if name in self.config.subscribe_calls:
            self.topics_consumed.update(self._topics(node, SUBSCRIBE_KEYWORDS, subscribe=True))
        func = node.func
        if isinstance(func, ast.Attribute):
            self.handled.add(id(func))  # a method call is not a read of a data attribute
            target = func.value
            if isinstance(target, ast.Attribute):
                if func.attr in PRODUCE_METHODS:
                    self._produce_attr(target, node)
                    self.handled.add(id(target))
                elif func.attr in NEUTRAL_METHODS:
                    self.handled.add(id(target))
        elif name == "getattr" and len(node.args) >= 2:
            attr = node.args[1]
            if isinstance(attr, ast.Constant) and isinstance(attr.value, str):
                fake = ast.Attribute(value=node.args[0], attr=attr.value, ctx=ast.Load())
                self._consume_attr(fake)
        self.children(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, ast.Store):
            base = node.value
            while isinstance(base, ast.Subscript):  # self.x[a][b] = v mutates self.x
                base = base.value
            if isinstance(base, ast.Attribute):
                self._produce_attr(base, node)
                self.handled.add(id(base))
        self.children(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        if _is_runtime_collection(node.value):
            for target in node.targets:
                if isinstance(target, ast.Attribute):
                    self._produce_attr(target, node)
        self.children(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if (
            node.value is not None
            and isinstance(node.target, ast.Attribute)
            and _is_runtime_collection(node.value)
        ):
            self._produce_attr(node.target, node)
        self.children(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if (
            isinstance(node.target, ast.Attribute)
            and isinstance(node.op, ast.Add | ast.BitOr)
            and _is_collection(node.value)
        ):
            self._produce_attr(node.target, node)
        self.children(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if id(node) not in self.handled and isinstance(node.ctx, ast.Load):
            target = node.value
            if isinstance(target, ast.Attribute) and node.attr in PRODUCE_METHODS:
                # A bound producer passed along: call_soon(self.queue.put_nowait, item).
                self._produce_attr(target, node)
                self.handled.add(id(target))
            self._consume_attr(node)
        self.children(node)


_HANDLERS: dict[type, Callable[[_Analyzer, Any], None]] = {
    ast.ClassDef: _Analyzer.visit_ClassDef,
    ast.FunctionDef: _Analyzer.visit_FunctionDef,
    ast.AsyncFunctionDef: _Analyzer.visit_FunctionDef,
    ast.Lambda: _Analyzer.visit_Lambda,
    ast.Call: _Analyzer.visit_Call,
    ast.Subscript: _Analyzer.visit_Subscript,
    ast.Assign: _Analyzer.visit_Assign,
    ast.AnnAssign: _Analyzer.visit_AnnAssign,
    ast.AugAssign: _Analyzer.visit_AugAssign,
    ast.Attribute: _Analyzer.visit_Attribute,
    ast.Name: _Analyzer.visit_leaf,
    ast.Constant: _Analyzer.visit_leaf,
}


def _call_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _base_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Subscript):
        node = node.value
    return _call_name(node)


def _is_derived(node: ast.ClassDef) -> bool:
    """Has a base class that may define attributes (anything but object/ABC/Generic/...)."""
    return any(_base_name(b) not in TRIVIAL_BASES for b in node.bases)


def _is_staticmethod(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(_call_name(d) == "staticmethod" for d in node.decorator_list)


def _string_constants(tree: ast.Module) -> dict[str, str]:
    """``NAME = "value"`` at module level, UPPER_CASE names only."""
    out: dict[str, str] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        else:
            continue
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            for target in targets:
                if isinstance(target, ast.Name) and target.id.isupper():
                    out[target.id] = value.value
    return out


def _is_collection(node: ast.expr) -> bool:
    return isinstance(
        node, ast.List | ast.Set | ast.Tuple | ast.Dict | ast.ListComp | ast.SetComp | ast.DictComp
    )


def _is_runtime_collection(node: ast.expr) -> bool:
    """A list/set/dict built at run time: a comprehension, or a display holding at least
    one non-literal. Empty and literal-only displays are configuration or initialisation."""
    if isinstance(node, ast.ListComp | ast.SetComp | ast.DictComp):
        return True
    if isinstance(node, ast.List | ast.Set):
        return any(not _is_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return any(
            (k is not None and not _is_literal(k)) or not _is_literal(v)
            for k, v in zip(node.keys, node.values, strict=True)
        )
    return False


def _is_literal(node: ast.expr | None) -> bool:
    """Constants, displays of constants, and UPPER_CASE names (constants by convention)."""
    if node is None or isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.UnaryOp):
        return _is_literal(node.operand)
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return all(_is_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        pairs = zip(node.keys, node.values, strict=True)
        return all(_is_literal(k) and _is_literal(v) for k, v in pairs)
    if isinstance(node, ast.JoinedStr):
        return all(isinstance(v, ast.Constant) for v in node.values)
    if isinstance(node, ast.Starred):
        return False
    name = _call_name(node) if isinstance(node, ast.Name | ast.Attribute) else None
    return bool(name) and name.isupper()
