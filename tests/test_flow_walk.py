"""The single walk shared by the module scan and the flow analyzer (``flow_walk.walk``).

Checked two ways: against a plain recursive walk written here from the module's docstring
(``out``: the handled nodes, parent first in the AST's field order, scopes marked;
``post``: the scan's facts, whose reverse is a depth-first walk taking the last child
first; ``dynamic``), and through the flow analysis itself, whose results must not change
when it is handed the plain walk instead.
"""

from __future__ import annotations

import ast
import textwrap
from typing import Any

import pytest

from kloros_stream.analysis import flows as flows_module
from kloros_stream.analysis.flow_module import scan_module
from kloros_stream.analysis.flow_walk import (
    ASSIGN,
    CALL,
    CLASS,
    DEF,
    ENTER,
    IMPORT,
    LEAVE,
    Walked,
    walk,
)
from kloros_stream.analysis.flows import FlowConfig, analyze_tree

DUNDER = {"__dict__", "__slots__"}
DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)
HANDLED = {
    ast.AugAssign, ast.For, ast.AsyncFor, ast.ListComp, ast.SetComp, ast.GeneratorExp,
    ast.DictComp, ast.Compare,
}  # fmt: skip
"""Handed to the analyzer whole, besides the types with their own rule below."""


# -- the plain recursive walk the fast one must agree with ---------------------------------
def plain_out(node: Any, out: list[Any]) -> None:
    """The analyzer's nodes, parent first, children in field order (as ``generic_visit``)."""
    kind = type(node)
    if kind is ast.Attribute:
        if isinstance(node.ctx, ast.Load):
            out.append(node)
        plain_out(node.value, out)
    elif kind is ast.Call:
        out.append(node)
        func = node.func  # a called attribute is a method, not a read: its owner only
        plain_out(func.value if isinstance(func, ast.Attribute) else func, out)
        for child in [*node.args, *node.keywords]:
            plain_out(child, out)
    elif kind is ast.Subscript:
        if isinstance(node.ctx, ast.Store):
            out.append(node)
        for child in ast.iter_child_nodes(node):
            plain_out(child, out)
    elif kind in DEFS or kind is ast.ClassDef or kind is ast.Lambda:
        out.append(node)
        if kind is ast.Lambda:
            outer = [node.args]
        elif kind is ast.ClassDef:
            outer = [*node.decorator_list, *node.bases, *node.keywords]
        else:
            outer = [*node.decorator_list, node.args]  # the return type is left out
        for child in outer:
            plain_out(child, out)
        out.append(ENTER)
        for child in node.body if isinstance(node.body, list) else [node.body]:
            plain_out(child, out)
        out.append(LEAVE)
    elif kind is ast.arguments:  # defaults only: annotations are not the analyzer's
        for child in [*node.kw_defaults, *node.defaults]:
            if child is not None:
                plain_out(child, out)
    elif kind is ast.AnnAssign:
        out.append(node)
        plain_out(node.target, out)
        if node.value is not None:
            plain_out(node.value, out)
    elif kind is ast.Assign or kind in HANDLED:
        out.append(node)
        for child in ast.iter_child_nodes(node):
            plain_out(child, out)
    elif kind not in (ast.Import, ast.ImportFrom, ast.arg):
        for child in ast.iter_child_nodes(node):
            plain_out(child, out)


class PlainScan:
    """The module scan's facts in pre-order, last child first, with each node's class and
    function; the classes that read ``__dict__``/``__slots__``."""

    def __init__(self, tree: ast.Module) -> None:
        self.facts: list[tuple[Any, ...]] = []
        self.dynamic: set[str] = set()
        self.top = {id(s) for s in tree.body if isinstance(s, ast.ClassDef)}
        self.members: set[int] = set()
        self.visit(tree, None, "")

    def visit(self, node: Any, cls: str | None, fn: str) -> None:
        kind = type(node)
        if kind is ast.Call:
            self.facts.append((CALL, node, fn, cls))
        elif kind in (ast.Import, ast.ImportFrom):
            self.facts.append((IMPORT, node, None, None))
        elif kind in (ast.Assign, ast.AnnAssign) and cls is not None:
            self.facts.append((ASSIGN, node, cls, None))
        elif kind is ast.Attribute and cls is not None and node.attr in DUNDER:
            self.dynamic.add(cls)
        elif kind in DEFS:
            fn = f"{cls}.{node.name}" if cls and id(node) in self.members else node.name
            self.facts.append((DEF, node, fn, None))
        elif kind is ast.ClassDef:
            if id(node) in self.top:
                cls = node.name
            elif cls and id(node) in self.members:
                cls = f"{cls}.{node.name}"
                self.facts.append((CLASS, node, cls, None))
            else:
                cls = None  # a class in a function: not resolved
            if cls is not None:
                self.members.update(
                    id(s) for s in node.body if isinstance(s, (*DEFS, ast.ClassDef))
                )
        for child in reversed(list(ast.iter_child_nodes(node))):
            self.visit(child, cls, fn)


def plain_walk(tree: ast.Module) -> Walked:
    out: list[Any] = []
    plain_out(tree, out)
    scan = PlainScan(tree)
    return Walked(out, list(reversed(scan.facts)), scan.dynamic)


def split(facts: list[tuple[Any, ...]]) -> tuple[list[Any], list[Any]]:
    """Calls apart from the rest: an assignment's fact is recorded before the calls in
    its value (nothing the scan reads depends on that order), every other order is kept."""
    calls = [f for f in facts if f[0] == CALL]
    return calls, [f for f in facts if f[0] != CALL]


def summary(items: list[Any]) -> list[str]:
    """Readable ``out``: node types with the name or attribute they carry."""
    names = []
    for item in items:
        if item is ENTER or item is LEAVE:
            names.append(repr(item))
            continue
        label = getattr(item, "name", None) or getattr(item, "attr", None)
        if isinstance(item, ast.Call):
            label = ast.unparse(item.func)
        names.append(f"{type(item).__name__}:{label}" if label else type(item).__name__)
    return names


def facts_of(walked: Walked, kind: int) -> list[tuple[Any, ...]]:
    """``kind`` facts in the scan's order (``reversed(post)``), node shown as source."""
    return [
        (ast.unparse(node) if kind in (CALL, ASSIGN) else getattr(node, "name", None), where, cls)
        for k, node, where, cls in reversed(walked.post)
        if k == kind
    ]


def parse(source: str) -> ast.Module:
    return ast.parse(textwrap.dedent(source))


# -- modules that cover the syntax ---------------------------------------------------------
SAMPLES = {
    "bus and queues": """
        import asyncio
        from . import bus as b
        from ..core import Topic, emit

        TOPIC = "kloros.events"

        class Worker(Base, metaclass=Meta):
            KIND = "w"

            def __init__(self, q: asyncio.Queue[int] = make_queue()) -> None:
                self.queue = asyncio.Queue()
                self.items: list[str] = []
                self.name = "worker"
                self.table = {}

            async def run(self, *args: var_ann(), key: str = default_key(), **kw: extra()) -> None:
                while True:
                    item = await self.queue.get()
                    self.items.append(item)
                    self.table[item] = len(self.items)
                    emit(TOPIC, facts={"n": self.counter.value})
                    b.publish(f"{self.name}.done", item)

            def feed(self, x):
                self.queue.put_nowait(x)
                return [y for y in self.items if y.ok]
    """,
    "nested scopes": """
        class Outer:
            class Inner:
                size = compute()

                def method(self):
                    self.value = build()

                    def helper(a=default()):
                        class Local:
                            x = local_call()

                            def deep(self):
                                return self.__dict__

                        return Local

                    return helper

            @staticmethod
            @register(name=label())
            def decorated(a: Ann = dflt(), *, b: kw_ann() = kw_dflt()) -> ret():
                lam = lambda z=lam_default(): z.field + inner_call(z)
                return lam

        def module_function():
            for i, v in enumerate(source()):
                total += v.amount
            if left.attr < right.attr:
                pass
            return {k: v.x for k, v in pairs()}, {s.y for s in things()}, (g.z for g in gen())
    """,
    "statements": """
        from typing import Annotated

        class Slotted:
            __slots__ = ("a", "b")

            def read(self):
                return getattr(self, self.__slots__[0])

        async def handler(stream):
            async with open_stream() as s:
                async for line in s.lines():
                    data[line.key] = line.value
            try:
                risky()
            except (ValueError, KeyError) as err:
                log.warning("failed", error=err.args)
            finally:
                cleanup()
            match stream.kind:
                case "a" if guard(stream):
                    result = stream.payload["a"]
                case Point(x=0):
                    result = None
            x: Annotated[int, meta()] = (y := produce())
            del cache[x]
            return [*unpack(), *(z for z in range(3))], await other()
    """,
}


@pytest.mark.parametrize("name", list(SAMPLES))
def test_out_is_the_plain_walk_of_the_handled_nodes(name: str) -> None:
    tree = parse(SAMPLES[name])
    got, want = walk(tree).out, plain_walk(tree).out
    assert summary(got) == summary(want)
    assert all(a is b for a, b in zip(got, want, strict=True))


@pytest.mark.parametrize("name", list(SAMPLES))
def test_post_reversed_is_the_module_scan_order(name: str) -> None:
    tree = parse(SAMPLES[name])
    walked, plain = walk(tree), plain_walk(tree)
    got_calls, got_rest = split(list(reversed(walked.post)))
    want_calls, want_rest = split(list(reversed(plain.post)))
    assert [f[1:] for f in got_calls] == [f[1:] for f in want_calls]
    assert [(f[0], id(f[1]), *f[2:]) for f in got_rest] == [
        (f[0], id(f[1]), *f[2:]) for f in want_rest
    ]
    assert all(a[1] is b[1] for a, b in zip(got_calls, want_calls, strict=True))
    assert walked.dynamic == plain.dynamic


def test_only_node_types_the_analyzer_handles_are_handed_to_it() -> None:
    handlers = flows_module._HANDLERS
    for source in SAMPLES.values():
        out = walk(parse(source)).out
        assert {type(item) for item in out} <= set(handlers)


def test_method_calls_and_stored_attributes_are_not_reads() -> None:
    out = walk(parse("self.q.put(x)\nself.y = a.b\nv = self.d[k]\nself.d[k] = v\n")).out
    assert summary(out) == [
        "Call:self.q.put",
        "Attribute:q",  # self.q is read; .put is the method called
        "Assign",
        "Attribute:b",  # self.y is stored: not a read
        "Assign",
        "Attribute:d",  # a subscript load is not handed on, its owner is
        "Assign",
        "Subscript",  # a subscript store is
        "Attribute:d",
    ]


def test_a_definition_hands_decorators_then_defaults_then_its_scope() -> None:
    source = """
        @deco(arg())
        def f(a: ann() = default(), *, b=kw_default()) -> ret():
            x = body()
        after()
    """
    out = walk(parse(source)).out
    assert summary(out) == [
        "FunctionDef:f",
        "Call:deco",
        "Call:arg",
        "Call:kw_default",  # kw_defaults come before defaults in the AST's field order
        "Call:default",
        "ENTER",
        "Assign",
        "Call:body",
        "LEAVE",
        "Call:after",
    ]  # the annotation and the return type are the scan's only


def test_annotations_and_decorators_give_one_scan_fact_per_call() -> None:
    source = """
        @deco(arg())
        def f(a: ann() = default(), *, b=kw_default()) -> ret():
            x = body()
    """
    # last child first: the return type, the decorators, the body, then the arguments
    # (defaults, keyword defaults, annotations); each call once although the analyzer
    # and the scan both walk the decorators
    assert facts_of(walk(parse(source)), CALL) == [
        ("ret()", "f", None),
        ("deco(arg())", "f", None),
        ("arg()", "f", None),
        ("body()", "f", None),
        ("default()", "f", None),
        ("kw_default()", "f", None),
        ("ann()", "f", None),
    ]


def test_nested_classes_and_functions_get_their_qualified_names() -> None:
    walked = walk(parse(SAMPLES["nested scopes"]))
    assert facts_of(walked, DEF) == [
        ("module_function", "module_function", None),
        ("decorated", "Outer.decorated", None),
        ("method", "Outer.Inner.method", None),
        ("helper", "helper", None),
        ("deep", "deep", None),  # in a class inside a function: not resolved
    ]
    assert facts_of(walked, CLASS) == [("Inner", "Outer.Inner", None)]
    assert ("self.value = build()", "Outer.Inner", None) in facts_of(walked, ASSIGN)
    assert not any("local_call" in fact[0] for fact in facts_of(walked, ASSIGN))
    calls = {fact[0]: fact[1:] for fact in facts_of(walked, CALL)}
    assert calls["compute()"] == ("", "Outer.Inner")  # a class body: no function
    assert calls["build()"] == ("Outer.Inner.method", "Outer.Inner")
    assert calls["default()"] == ("helper", "Outer.Inner")
    assert calls["local_call()"] == ("helper", None)
    assert calls["lam_default()"] == ("Outer.decorated", "Outer")  # a lambda: no scope
    assert calls["source()"] == ("module_function", None)


def test_scopes_are_balanced_and_nested() -> None:
    for source in SAMPLES.values():
        tree = parse(source)
        depth, opened = 0, 0
        for item in walk(tree).out:
            if item is ENTER:
                depth += 1
                opened += 1
            elif item is LEAVE:
                depth -= 1
                assert depth >= 0
        assert depth == 0
        scopes = [n for n in ast.walk(tree) if isinstance(n, (*DEFS, ast.ClassDef, ast.Lambda))]
        assert opened == len(scopes)


def test_handled_nodes_come_in_source_order_within_a_body() -> None:
    source = """
        def f(self):
            a = self.one
            self.two.append(a)
            for x in self.three:
                self.four[x] = [y.five for y in x]
            return self.six == 6
    """
    out = [n for n in walk(parse(source)).out if n is not ENTER and n is not LEAVE]
    positions = [(n.lineno, n.col_offset) for n in out]
    assert positions == sorted(positions)
    assert [n.attr for n in out if isinstance(n, ast.Attribute)] == [
        "one", "two", "three", "four", "five", "six"
    ]  # fmt: skip


def test_imports_and_dynamic_reads() -> None:
    nested = walk(parse(SAMPLES["nested scopes"]))
    assert nested.dynamic == set()  # Local reads self.__dict__, but Local is not resolved
    statements = walk(parse(SAMPLES["statements"]))
    assert statements.dynamic == {"Slotted"}
    bus = walk(parse(SAMPLES["bus and queues"]))
    imports = [ast.unparse(f[1]) for f in reversed(bus.post) if f[0] == IMPORT]
    assert imports == [  # last statement first, like every scan fact
        "from ..core import Topic, emit",
        "from . import bus as b",
        "import asyncio",
    ]


def test_a_deep_tree_is_walked_without_recursion() -> None:
    depth = 50_000
    node: ast.expr = ast.Name("root", ast.Load())
    for _ in range(depth):
        node = ast.Attribute(node, "a", ast.Load())
    call = ast.Call(ast.Name("f", ast.Load()), [node], [])
    tree = ast.Module([ast.Expr(call)], [])
    walked = walk(tree)
    assert len(walked.out) == depth + 1
    assert sum(1 for fact in walked.post if fact[0] == CALL) == 1


CONFIGS = {
    "default": FlowConfig(),
    "wide": FlowConfig.of({"emit", "publish", "put"}, {"subscribe", "get"}, ("Sub",)),
}


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("name", list(SAMPLES))
def test_the_flow_analysis_is_unchanged_on_the_plain_walk(
    name: str, config: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = parse(SAMPLES[name])
    module = "pkg." + name.replace(" ", "_")
    fast = analyze_tree(tree, module, CONFIGS[config]).to_json()
    monkeypatch.setattr(flows_module, "walk", plain_walk)
    assert analyze_tree(tree, module, CONFIGS[config]).to_json() == fast
    if name == "bus and queues":  # real flows, not two empty results
        assert set(fast["topics_produced"]) == {"kloros.events", "worker.done"}
        assert "pkg.bus_and_queues.Worker.queue" in fast["attrs_produced"]


@pytest.mark.parametrize("name", list(SAMPLES))
def test_the_module_scan_is_unchanged_on_the_plain_walk(name: str) -> None:
    tree = parse(SAMPLES[name])
    emit, sub = frozenset({"emit", "publish"}), frozenset({"subscribe"})
    fast = scan_module(tree, emit, sub, (), walk(tree))
    assert scan_module(tree, emit, sub, (), plain_walk(tree)) == fast
    assert fast.classes and fast.functions
