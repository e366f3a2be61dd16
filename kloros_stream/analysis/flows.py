"""Data flows of one Python file: which channels it fills and which it reads.

Pure: an AST (or source bytes) in, a :class:`FileFlows` out; no I/O, nothing imported
or executed. Two kinds of channel:

- **topics**: bus topics. A call is a publish or a subscription by what it is (see
  :mod:`.flow_calls`: configured names, ``*Sub``/``*Subscriber`` classes, wrappers that
  pass a parameter on as the topic; a local function that only shares the name ``emit``
  is not one; a toolkit widget's own ``emit`` is not one). Its topic is whatever the code
  makes plain (see :mod:`.flow_values`: literals, variables, loops over literal tables,
  table lookups, f-strings, module and class constants, ``Enum`` members); an f-string
  with unknown parts is a pattern (``job_state:*``); a name that does not resolve here is
  a reference to a constant of another module. A comparison of a message's signal field
  with literals (``msg.get("signal") == "X"``, a history replay) consumes them, except
  in tests.
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
  ["kloros"]``, ``[]``, constants) and never mutated has no producer;
- only an attribute the class initialises as a collection (a display, a comprehension,
  ``deque()``/``Queue()``/``defaultdict()``..., ``field(default_factory=list)``, a
  collection annotation) is a queue: ``self.client.add(x)`` on a client object is not.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import flow_values as fv
from .flow_model import MAX_SITES, FileFlows, FlowConfig, Site, attribute_of
from .flow_module import ModuleInfo, absolute_imports, external_bases, scan_module
from .flow_shapes import call_name as _call_name
from .flow_shapes import is_collection as _is_collection
from .flow_shapes import is_derived as _is_derived
from .flow_shapes import is_runtime_collection as _is_runtime_collection
from .flow_shapes import is_staticmethod as _is_staticmethod
from .flow_topics import TopicRules, is_test_module
from .flow_walk import ENTER, LEAVE, walk
from .pysource import parse_module

PRODUCE_METHODS = frozenset(
    {"append", "appendleft", "extend", "extendleft", "insert", "put", "put_nowait", "add", "update"}
)
NEUTRAL_METHODS = frozenset({"clear", "sort", "reverse"})


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
    env: dict[str, list[Any]] = field(default_factory=dict)
    """Local names bound to literal values (assignments, loops over literal tables)."""
    signal_vars: set[str] = field(default_factory=set)
    """Local names holding a message's signal field (``s = msg.get("signal")``)."""
    params: frozenset[str] = frozenset()
    """Parameters of the function (a topic taken from one comes from the callers)."""
    path: str = ""
    """Names of the scopes down to this one, dotted (set on entering it)."""
    lead: str = ""
    """Names of the leading class scopes down to this one, dotted (``Outer.Inner``)."""
    all_class: bool = True
    """Every scope down to this one is a class."""


_COLLECTION_SHAPES = frozenset(
    {ast.List, ast.Set, ast.Dict, ast.ListComp, ast.SetComp, ast.DictComp}
)
"""The only node types a run-time collection can be (a cheap test first)."""

_Resolved = tuple[str, str, bool]
"""(channel, attribute, exact): exact channels are class-qualified, loose ones are not."""


class _Analyzer(TopicRules):
    """Handles the nodes of one :func:`~.flow_walk.walk` (type-keyed dispatch, no
    recursion: no nesting depth the parser accepts can exhaust the interpreter's
    recursion limit). Nodes are handled parent first, in source order."""

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
        self.pending: list[_Frame] = []
        """Frames of definitions handled whose scope is not entered yet."""
        self.info = ModuleInfo()
        self.is_test = is_test_module(module)
        """Comparisons in tests check what was published; they consume nothing."""
        self.emit_refs: dict[str, list[Site]] = {}
        self.guards: dict[str, set[str]] = {}
        self.unguarded: set[str] = set()
        self.deferred: dict[str, list[tuple[str, str, str, int]]] = {}
        self.consumed_sites: dict[str, Site] = {}

    def run(self, tree: ast.Module) -> None:
        walked = walk(tree)
        self.info = scan_module(
            tree,
            self.config.emit_calls,
            self.config.subscribe_calls,
            self.config.subscriber_suffixes,
            walked,
        )
        self.constants = {
            k: v for k, v in self.info.constants.items() if isinstance(v, str) and k.isupper()
        }
        for cname, cinfo in self.info.classes.items():
            for key, value in cinfo.constants.items():
                if isinstance(value, str) and key.isupper():
                    self.constants[f"{cname}.{key}"] = value
        classes = [s for s in tree.body if isinstance(s, ast.ClassDef)]
        self.module_classes = {c.name for c in classes}
        self.derived = {c.name for c in classes if _is_derived(c)}
        handlers = _HANDLERS
        for item in walked.out:
            handlers[type(item)](self, item)

    def result(self) -> FileFlows:
        for channel in self.attrs_produced:  # read dynamically: vars(self), fields(self)...
            if self._class_of(channel) in self.info.dynamic:
                self.attrs_consumed.add(channel)
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
            emit_refs={k: tuple(v) for k, v in self.emit_refs.items()},
            topic_guards={
                t: tuple(sorted(g)) for t, g in self.guards.items() if t not in self.unguarded
            },
            wrappers={
                qual.rsplit(".", 1)[-1]: (w.kind, w.index, w.param, w.template)
                for qual, w in self.info.wrappers.items()
            },
            calls={k: tuple(v) for k, v in self.deferred.items()},
            consumed_sites=self.consumed_sites,
            imports=frozenset(absolute_imports(self.info, self.module)),
            class_bases=self._class_bases(),
        )

    def _class_bases(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {}
        for channel in self.attrs_produced:
            cls = self._class_of(channel)
            if cls in self.info.classes and cls not in out:
                sources = external_bases(self.info, cls)
                if sources:
                    out[cls] = tuple(sources)
        return out

    # -- scopes --------------------------------------------------------------------------
    def _qualname(self) -> str:
        return self.frames[-1].path or "<module>"

    def _site(self, node: ast.AST) -> Site:
        return (self._qualname(), getattr(node, "lineno", 0))

    def enter(self, _marker: Any) -> None:
        """Enter the scope of the definition handled last."""
        frame = self.pending.pop()
        parent = self.frames[-1]
        frame.path = f"{parent.path}.{frame.name}" if parent.path else frame.name
        frame.all_class = parent.all_class and frame.is_class
        if frame.all_class:
            frame.lead = f"{parent.lead}.{frame.name}" if parent.lead else frame.name
        else:
            frame.lead = parent.lead
        self.frames.append(frame)
        if frame.derived:
            self.derived.add(self._qualname())

    def leave(self, _marker: Any) -> None:
        self.frames.pop()

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        frame = _Frame(node.name, True, dict(self.frames[-1].bindings), _is_derived(node))
        self.pending.append(frame)  # entered after its decorators, bases and keywords

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        outer = self.frames[-1]
        args = node.args
        params = [a.arg for a in args.args]
        if args.posonlyargs:
            params[:0] = [a.arg for a in args.posonlyargs]
        all_params = set(params)
        if args.kwonlyargs:
            all_params.update(a.arg for a in args.kwonlyargs)
        for extra in (args.vararg, args.kwarg):
            if extra is not None:
                all_params.add(extra.arg)
        bindings = {k: v for k, v in outer.bindings.items() if k not in all_params}
        if outer.is_class and params and not _is_staticmethod(node):
            bindings[params[0]] = self._qualname()
        self.pending.append(_Frame(node.name, False, bindings, params=frozenset(all_params)))

    def visit_Lambda(self, node: ast.Lambda) -> None:
        outer = self.frames[-1]
        names = {a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)}
        bindings = {k: v for k, v in outer.bindings.items() if k not in names}
        self.pending.append(_Frame("<lambda>", False, bindings))

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
        channel, attr, exact = self._resolve(node)
        if not exact:
            return
        cls = self.info.classes.get(self._class_of(channel))
        if cls is not None and attr in cls.assigned and attr not in cls.collections:
            return  # only an attribute the code initialises as a collection is a queue
        sites = self.attrs_produced.setdefault(channel, [])
        if len(sites) < MAX_SITES:
            sites.append(self._site(site_node))
        if self._class_of(channel) in self.derived:
            self.inherited.add(channel)

    def _consume_attr(self, node: ast.Attribute) -> None:
        owner, attr = node.value, node.attr  # self._resolve(node), inline: a hot path
        cls = None
        if type(owner) is ast.Name:
            cls = self.frames[-1].bindings.get(owner.id)
            if cls is None and owner.id in self.module_classes:
                cls = owner.id
        if cls is None:
            self.loose.add(attr)
            return
        channel = f"{self.module}.{cls}.{attr}"
        self.attrs_consumed.add(channel)
        if channel not in self.consumed_sites:
            self.consumed_sites[channel] = self._site(node)
        if self._class_of(channel) in self.derived:
            self.loose.add(attr)

    def visit_Call(self, node: ast.Call) -> None:
        self.bus_call(node)
        func = node.func
        if type(func) is ast.Attribute:  # a method: not a read (the walk leaves it out)
            target = func.value
            if isinstance(target, ast.Attribute):
                if func.attr in PRODUCE_METHODS:
                    self._produce_attr(target, node)
                    self.handled.add(id(target))
                elif func.attr in NEUTRAL_METHODS:
                    self.handled.add(id(target))
        elif _call_name(func) == "getattr" and len(node.args) >= 2:
            attr = node.args[1]
            if isinstance(attr, ast.Constant) and isinstance(attr.value, str):
                fake = ast.Attribute(value=node.args[0], attr=attr.value, ctx=ast.Load())
                self._consume_attr(fake)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, ast.Store):
            base = node.value
            while isinstance(base, ast.Subscript):  # self.x[a][b] = v mutates self.x
                base = base.value
            if isinstance(base, ast.Attribute):
                self._produce_attr(base, node)
                self.handled.add(id(base))

    def visit_Assign(self, node: ast.Assign) -> None:
        frame = self.frames[-1]
        value = node.value
        if not frame.is_class:
            names = [t for t in node.targets if type(t) is ast.Name]
            if names:  # values and signal reads only bind names
                vals = fv.values(value, self.lookup)
                signal = self._is_signal_read(value)
                for target in names:
                    if vals is not None:
                        fv.bind(target, vals, frame.env)
                    if signal:
                        frame.signal_vars.add(target.id)
                        self.signals_bound = True
        if type(value) in _COLLECTION_SHAPES and _is_runtime_collection(value):
            for target in node.targets:
                if isinstance(target, ast.Attribute):
                    self._produce_attr(target, node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if (
            node.value is not None
            and isinstance(node.target, ast.Attribute)
            and _is_runtime_collection(node.value)
        ):
            self._produce_attr(node.target, node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if (
            isinstance(node.target, ast.Attribute)
            and isinstance(node.op, ast.Add | ast.BitOr)
            and _is_collection(node.value)
        ):
            self._produce_attr(node.target, node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if id(node) not in self.handled and isinstance(node.ctx, ast.Load):
            target = node.value
            if isinstance(target, ast.Attribute) and node.attr in PRODUCE_METHODS:
                # A bound producer passed along: call_soon(self.queue.put_nowait, item).
                self._produce_attr(target, node)
                self.handled.add(id(target))
            self._consume_attr(node)


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
    ast.For: _Analyzer.visit_For,
    ast.AsyncFor: _Analyzer.visit_For,
    ast.ListComp: _Analyzer.visit_Comp,
    ast.SetComp: _Analyzer.visit_Comp,
    ast.GeneratorExp: _Analyzer.visit_Comp,
    ast.DictComp: _Analyzer.visit_Comp,
    ast.Compare: _Analyzer.visit_Compare,
    type(ENTER): _Analyzer.enter,
    type(LEAVE): _Analyzer.leave,
}
"""What the analyzer does with each item of :attr:`~.flow_walk.Walked.out`."""


__all__ = ["MAX_SITES", "FileFlows", "FlowConfig", "Site", "analyze_source", "attribute_of"]
