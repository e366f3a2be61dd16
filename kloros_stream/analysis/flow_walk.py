"""One walk of a parsed module for the flow analysis (pure, iterative).

:func:`walk` visits every node once and returns what the two halves of the analysis
need, so neither walks the tree again:

- ``out``: the nodes the flow analyzer handles (of attributes, the reads that are not
  a method called; of subscripts, the stores), in the order it handles them (parent
  first, in source order; a definition's decorators before its arguments, then its
  scope's ``ENTER`` marker, its body, ``LEAVE``), without annotations and return types;
- ``post``: the facts :func:`~.flow_module.scan_module` records (calls per function,
  definitions, nested classes, imports, ``self.x = ...`` in classes) in post-order, so
  that ``reversed(post)`` is the order of a depth-first walk taking the last child
  first (the order the module scan was defined by), annotations included;
- ``dynamic``: classes that read ``self.__dict__`` / ``__slots__``.

Children come from getters compiled once per node type from the AST's own field types
(no per-node lists, no getattr by name); names, constants and other leaves are popped
and dropped without work (or not pushed at all where the parent is handled here).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from typing import Any

CALL, DEF, CLASS, IMPORT, ASSIGN = range(5)
"""Kinds of ``post`` facts, all 4-tuples: (CALL, node, function or "", class),
(DEF, node, qualname, None), (CLASS, node, qualname, None), (IMPORT, node, None, None),
(ASSIGN, node, class, None)."""

_NOT_NODES = frozenset(
    {"identifier", "int", "string", "constant", "expr_context", "boolop", "operator",
     "unaryop", "cmpop", "type_ignore"}
)  # fmt: skip
"""Field types that hold no node the analysis reads (names, operators, contexts)."""
_DUNDER = frozenset({"__dict__", "__slots__"})
Getter = Callable[[Any], tuple[Any, ...]]


class _Marker:
    """A scope boundary in ``out``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


class _Enter(_Marker):
    __slots__ = ()


class _Leave(_Marker):
    __slots__ = ()


ENTER = _Enter("ENTER")
"""Enter the scope of the definition handled last (its frame was made then)."""
LEAVE = _Leave("LEAVE")
"""Leave the innermost scope."""

# Codes of the main loop (see walk()).
_PLAIN, _HANDLED, _ATTR, _CALL, _ASSIGN, _ANN, _DEF, _CLASSDEF, _LAMBDA, _IMPORT, _ARG = range(11)
_SUBSCRIPT, _ARGUMENTS, _MARK = 11, 12, 13
_CODES: dict[type, int] = {
    ast.Attribute: _ATTR,
    ast.Call: _CALL,
    ast.Assign: _ASSIGN,
    ast.AnnAssign: _ANN,
    ast.FunctionDef: _DEF,
    ast.AsyncFunctionDef: _DEF,
    ast.ClassDef: _CLASSDEF,
    ast.Lambda: _LAMBDA,
    ast.Import: _IMPORT,
    ast.ImportFrom: _IMPORT,
    ast.arg: _ARG,
    ast.arguments: _ARGUMENTS,
    ast.Subscript: _SUBSCRIPT,
    tuple: _MARK,
}
HANDLED: frozenset[type] = frozenset(
    {ast.AugAssign, ast.For, ast.AsyncFor, ast.ListComp, ast.SetComp,
     ast.GeneratorExp, ast.DictComp, ast.Compare}
)  # fmt: skip
"""Types the analyzer handles besides those with their own code above."""


def _node_fields(kind: type) -> list[tuple[str, str]] | None:
    """(field, "*" a list | "?" optional | "") of the fields of ``kind`` that can hold
    nodes, from the signature in its docstring (``Call(expr func, expr* args, keyword*
    keywords)``); None if it cannot be read."""
    match = re.fullmatch(r"\w+\((.*)\)", (kind.__doc__ or "").strip(), re.S)
    fields = getattr(kind, "_fields", None)
    if match is None or fields is None:
        return None
    out: list[tuple[str, str]] = []
    for part in filter(None, (p.strip() for p in match.group(1).split(","))):
        typ, _, name = part.rpartition(" ")
        if typ.rstrip("*?") not in _NOT_NODES:
            out.append((name, typ[-1] if typ[-1] in "*?" else ""))
    return out if {n for n, _ in out} <= set(fields) else None


def _generic(kind: type) -> Getter:
    fields = tuple(getattr(kind, "_fields", ()))

    def children(node: Any) -> tuple[Any, ...]:
        found: list[Any] = []
        for name in fields:
            value = getattr(node, name, None)
            if type(value) is list:
                found.extend(v for v in value if isinstance(v, ast.AST))
            elif isinstance(value, ast.AST):
                found.append(value)
        return tuple(reversed(found))

    return children


def _getter(kind: type) -> Getter | None:
    """A function returning the children of a ``kind`` node, last first (None entries
    possible in lists), or None for a leaf."""
    fields = _node_fields(kind)
    if fields is None:
        return _generic(kind)
    if not fields:
        return None
    parts = [
        f"*n.{name}[::-1]"
        if how == "*"
        else f"*(() if n.{name} is None else (n.{name},))"
        if how == "?"
        else f"n.{name}"
        for name, how in reversed(fields)
    ]
    # Our own code, compiled once per node type: the names were checked against _fields.
    getter: Getter = eval(f"lambda n: ({', '.join(parts)},)")
    return getter


_SPECS: dict[type, tuple[int, Getter | None]] = {type(None): (_PLAIN, None)}


def _spec(kind: type) -> tuple[int, Getter | None]:
    spec = _SPECS.get(kind)
    if spec is None:
        code = _CODES.get(kind, _HANDLED if kind in HANDLED else _PLAIN)
        spec = _SPECS[kind] = (code, None if code == _MARK else _getter(kind))
    return spec


for _kind in [tuple, *(k for k in vars(ast).values() if isinstance(k, type))]:
    if _kind is tuple or issubclass(_kind, ast.AST):
        _spec(_kind)  # every node type known up front


class Walked:
    """The result of :func:`walk`."""

    __slots__ = ("dynamic", "out", "post")

    def __init__(self, out: list[Any], post: list[tuple[Any, ...]], dynamic: set[str]) -> None:
        self.out = out
        self.post = post
        self.dynamic = dynamic


_OUT, _CTX, _SCAN, _CLOSE = 10, 11, 12, 13
"""Stack markers besides the facts themselves (recorded when popped: after the node's
children): (_OUT, ENTER|LEAVE), (_CTX, record, class, function), (_SCAN, nodes): walk
``nodes`` for the module scan only, (_CLOSE, record, class, function, fact | None): the
end of a definition (its scope left, the outer context back, its fact recorded)."""
_ENTER_OUT = (_OUT, ENTER)
_LEAVE_OUT = (_OUT, LEAVE)
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def walk(tree: ast.Module) -> Walked:
    """Walk ``tree`` once (see the module docstring)."""
    out: list[Any] = []
    post: list[tuple[Any, ...]] = []
    dynamic: set[str] = set()
    drop = [].append  # the module scan's facts of a decorator's first (analyzer's) visit
    top = {id(s) for s in tree.body if type(s) is ast.ClassDef}
    members: set[int] = set()  # definitions directly in the body of a resolved class
    cls: str | None = None
    fn: str | None = ""  # the enclosing function ("": none)
    emit, record = out.append, post.append
    specs = _SPECS
    load, name_t, attr_t, call_t = ast.Load, ast.Name, ast.Attribute, CALL  # locals: hot loop
    plain, attr, call, mark, handled, assign = _PLAIN, _ATTR, _CALL, _MARK, _HANDLED, _ASSIGN
    stack: list[Any] = [tree]
    pop, push, ext = stack.pop, stack.append, stack.extend
    while True:
        try:
            node = pop()
        except IndexError:
            break
        try:
            code, kids = specs[type(node)]
        except KeyError:
            code, kids = _spec(type(node))
        if code == plain:
            if kids is not None:
                ext(kids(node))
        elif code == attr:
            if type(node.ctx) is load:  # the analyzer reads no stored attribute
                emit(node)
            if cls is not None and node.attr in _DUNDER:
                dynamic.add(cls)
            if type(node.value) is not name_t:  # nothing to do with a name
                push(node.value)
        elif code == call:
            emit(node)
            push((call_t, node, fn, cls))
            ext(reversed(node.keywords))
            ext(reversed(node.args))
            func = node.func
            if type(func) is attr_t:  # a method, not a data attribute read: not emitted
                if cls is not None and func.attr in _DUNDER:
                    dynamic.add(cls)
                if type(func.value) is not name_t:
                    push(func.value)
            elif type(func) is not name_t:
                push(func)
        elif code == mark:
            op = node[0]
            if op < _OUT:
                record(node)
            elif op == _CLOSE:
                _, record, cls, fn, fact = node
                emit(LEAVE)
                if fact is not None:
                    record(fact)
            elif op == _CTX:
                _, record, cls, fn = node
            elif op == _OUT:
                emit(node[1])
            else:
                _scan_only(node[1], record, cls, fn, dynamic)
        elif code == handled:
            emit(node)
            ext(kids(node))  # type: ignore[misc]
        elif code == assign:  # its fact now: no ASSIGN or CLASS fact can be inside it
            emit(node)
            if cls is not None:
                record((ASSIGN, node, cls, None))
            ext(kids(node))  # type: ignore[misc]
        elif code == _SUBSCRIPT:
            if type(node.ctx) is ast.Store:  # the analyzer handles stores only
                emit(node)
            ext(kids(node))  # type: ignore[misc]
        elif code == _ARGUMENTS:  # the annotations of the arguments for the scan only
            _annotations(node, record, cls, fn, dynamic)
            ext(reversed(node.defaults))
            extra = node.kwarg
            if extra is not None and extra.annotation is not None:
                push((_SCAN, (extra.annotation,)))
            ext(reversed(node.kw_defaults))
        elif code == _ANN:
            emit(node)
            if cls is not None:
                record((ASSIGN, node, cls, None))
            if node.value is not None:
                push(node.value)
            push((_SCAN, (node.annotation,)))
            push(node.target)
        elif code == _IMPORT:
            record((IMPORT, node, None, None))
        elif code == _DEF:
            inner = f"{cls}.{node.name}" if cls and id(node) in members else node.name
            emit(node)
            push((_CLOSE, record, cls, fn, (DEF, node, inner, None)))
            if node.returns is not None:
                push((_SCAN, (node.returns,)))
            args = node.args
            quiet = not args.defaults and not any(args.kw_defaults)
            if _scope(stack, node, [args], quiet, (record, cls, inner), drop):
                emit(ENTER)
                fn = inner
        elif code == _CLASSDEF:
            qual: str | None = None
            fact = None
            if id(node) in top:
                qual = node.name
            elif cls and id(node) in members:
                qual = f"{cls}.{node.name}"
                fact = (CLASS, node, qual, None)
            push((_CLOSE, record, cls, fn, fact))
            emit(node)
            outer = [*node.bases, *node.keywords]
            quiet = all(type(n) is name_t for n in outer)
            if _scope(stack, node, outer, quiet, (record, qual, fn), drop):
                emit(ENTER)
                cls = qual
            if qual is not None:
                members.update(id(s) for s in node.body if isinstance(s, _DEFS))
        elif code == _LAMBDA:
            emit(node)
            push(_LEAVE_OUT)
            push(node.body)
            push(_ENTER_OUT)
            push(node.args)
    return Walked(out, post, dynamic)


def _scope(
    stack: list[Any],
    node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef,
    outer: list[Any],
    quiet: bool,
    ctx: tuple[Any, str | None, str | None],
    drop: Any,
) -> bool:
    """Queue a definition's children. The analyzer takes the decorators first, then
    ``outer`` (arguments; bases and keywords), then the body in the new scope; the module
    scan takes ``outer``, the body, then the decorators: so the decorators are walked
    twice, once for each (the other's facts dropped). True if the new scope and context
    ``ctx`` are to be entered right away (no decorators, and ``outer`` is ``quiet``: it
    holds nothing for the analyzer)."""
    push = stack.append
    decorators = node.decorator_list
    if decorators:
        push((_SCAN, decorators))
    stack.extend(reversed(node.body))
    if quiet and not decorators:
        stack.extend(reversed(outer))
        return True
    push(_ENTER_OUT)
    stack.extend(reversed(outer))
    push((_CTX, *ctx))
    if decorators:
        stack.extend(reversed(decorators))
        push((_CTX, drop, None, None))
    return False


def _annotations(
    node: ast.arguments, record: Any, cls: str | None, fn: str | None, dynamic: set[str]
) -> None:
    """The scan's facts of the annotations of the arguments before the defaults."""
    for arg in (*node.posonlyargs, *node.args):
        if arg.annotation is not None:
            _scan_only((arg.annotation,), record, cls, fn, dynamic)
    if node.vararg is not None and node.vararg.annotation is not None:
        _scan_only((node.vararg.annotation,), record, cls, fn, dynamic)
    for arg in node.kwonlyargs:
        if arg.annotation is not None:
            _scan_only((arg.annotation,), record, cls, fn, dynamic)


def _scan_only(roots: Any, record: Any, cls: str | None, fn: str | None, dynamic: set[str]) -> None:
    """The module scan's facts of expressions the analyzer does not read (annotations,
    return types, a second visit of decorators): calls and ``__dict__`` reads."""
    found: list[tuple[Any, ...]] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        kind = type(node)
        if kind is ast.Call:
            found.append((CALL, node, fn, cls))
        elif kind is ast.Attribute and cls is not None and node.attr in _DUNDER:
            dynamic.add(cls)
        kids = (_SPECS.get(kind) or _spec(kind))[1]
        if kids is not None:
            stack.extend(reversed(kids(node)))
    for fact in reversed(found):
        record(fact)
