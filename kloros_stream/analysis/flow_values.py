"""Literal values an expression can take, as far as the code makes them plain.

Pure helpers for :mod:`.flows`: a topic is often not a string literal at the call but a
variable assigned one, a loop over a list/tuple/dict of literals, a lookup in a literal
table, an f-string over such a table, a module or class constant, or an ``Enum`` member
(or its ``.value``). :func:`values` returns every value an expression can take (a list),
or None when it cannot be known without running the code. Bounded: at most
``MAX_VALUES`` values per expression.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Callable
from typing import Any

MAX_VALUES = 64


class _Unknown:
    """An element of a display whose value cannot be known (``("event", self.handler)``)."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()
Lookup = Callable[[ast.expr], "list[Any] | None"]
"""Resolves a Name or Attribute (scopes, constants); None if unknown."""


def values(node: ast.expr | None, lookup: Lookup) -> list[Any] | None:
    """Every value ``node`` can take, or None."""
    if node is None:
        return None
    kind = type(node)  # the commonest shapes first
    if kind is ast.Constant:
        return [node.value]
    if kind is ast.Name or kind is ast.Attribute:
        return lookup(node)
    if kind is ast.Call:
        func = node.func
        if type(func) is ast.Attribute and func.attr == "get" and node.args:
            return _lookup_in(values(func.value, lookup), node.args[0], lookup)
        return None
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        items: list[Any] = []
        for elt in node.elts:
            if isinstance(elt, ast.Starred):
                return None
            vals = values(elt, lookup)
            items.append(vals[0] if vals is not None and len(vals) == 1 else UNKNOWN)
        return [tuple(items) if isinstance(node, ast.Tuple) else items]
    if isinstance(node, ast.Dict):
        table: dict[Any, Any] = {}
        for key, value in zip(node.keys, node.values, strict=True):
            k = values(key, lookup) if key is not None else None
            v = values(value, lookup)
            if k is None or v is None or len(k) != 1 or len(v) != 1:
                return None
            try:
                table[k[0]] = v[0]
            except TypeError:
                return None
        return [table]
    if isinstance(node, ast.Name | ast.Attribute):
        return lookup(node)
    if isinstance(node, ast.Subscript):
        return _subscript(node, lookup)
    if isinstance(node, ast.JoinedStr):
        return _fstring(node, lookup)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        return _percent(node, lookup)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = values(node.left, lookup), values(node.right, lookup)
        if left is None or right is None:
            return None
        out = [a + b for a, b in itertools.product(left, right) if _addable(a, b)]
        return out[:MAX_VALUES] if out else None
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and node.args
    ):
        return _lookup_in(values(node.func.value, lookup), node.args[0], lookup)
    return None


def iter_values(node: ast.expr, lookup: Lookup) -> list[Any] | None:
    """The items a ``for`` loop over ``node`` can bind (``d.items()``, ``.keys()``,
    ``.values()``, lists, tuples, sets, dicts), or None."""
    method = None
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("items", "keys", "values")
        and not node.args
    ):
        method, node = node.func.attr, node.func.value
    containers = values(node, lookup)
    if containers is None:
        return None
    out: list[Any] = []
    for container in containers:
        if isinstance(container, dict):
            if method == "items":
                out.extend(container.items())
            elif method == "values":
                out.extend(container.values())
            else:
                out.extend(container)
        elif isinstance(container, list | tuple | set | frozenset) and method is None:
            out.extend(container)
        else:
            return None
    return out[:MAX_VALUES]


def bind(target: ast.expr, items: list[Any], out: dict[str, list[Any]]) -> None:
    """Bind a loop/assignment ``target`` to ``items`` (unpacking tuples) into ``out``."""
    if isinstance(target, ast.Name):
        merged = out.setdefault(target.id, [])
        for item in items:
            if item not in merged and len(merged) < MAX_VALUES:
                merged.append(item)
        return
    if isinstance(target, ast.Tuple | ast.List):
        width = len(target.elts)
        rows = [r for r in items if isinstance(r, tuple | list) and len(r) == width]
        for i, elt in enumerate(target.elts):
            if rows:
                bind(elt, [r[i] for r in rows], out)


def strings(vals: list[Any] | None, *, flatten: bool = False) -> list[str]:
    """The non-empty strings among ``vals`` (and inside lists/tuples when ``flatten``)."""
    out: list[str] = []
    for v in vals or ():
        if isinstance(v, str):
            out.append(v)
        elif flatten and isinstance(v, list | tuple | set | frozenset):
            out.extend(x for x in v if isinstance(x, str))
    return [s for s in dict.fromkeys(out) if s]


_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\*|\d+)?(?:\.\d+)?[diouxXeEfFgGcrsa]")
_BRACES = re.compile(r"\{[^{}]*\}")


def pattern(node: ast.expr) -> str | None:
    """A string built with a constant part and unknown parts -> a pattern with ``*``:
    ``f"job_state:{s}"``, ``"muc::%s::presence" % room``, ``"menu:{}".format(x)``,
    ``"prefix." + name``. None if there is no constant part."""
    text = _pattern(node)
    if text is None:
        return None
    text = re.sub(r"\*+", "*", text)
    fixed = text.replace("*", "")
    if "*" in text and (len(fixed) < 3 or not any(c.isalnum() for c in fixed)):
        return None  # "%s_%s": too little to match anything by
    return text or None


def _pattern(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, ast.JoinedStr):
        return "".join(
            v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "*"
            for v in node.values
        )
    if isinstance(node, ast.BinOp) and isinstance(node.left, ast.Constant):
        left = node.left.value
        if isinstance(node.op, ast.Mod) and isinstance(left, str):
            return _PERCENT.sub("*", left).replace("%%", "%")
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _pattern(node.left), _pattern(node.right)
        if left is None and right is None:
            return None
        return (left if left is not None else "*") + (right if right is not None else "*")
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
        and isinstance(node.func.value, ast.Constant)
        and isinstance(node.func.value.value, str)
    ):
        return _BRACES.sub("*", node.func.value.value)
    return None


def _percent(node: ast.BinOp, lookup: Lookup) -> list[Any] | None:
    """``"fmt %s" % x`` with ``x`` (or each item of a tuple) known."""
    fmts, args = values(node.left, lookup), values(node.right, lookup)
    if fmts is None or args is None:
        return None
    out: list[Any] = []
    for fmt, arg in itertools.product(fmts, args):
        if not isinstance(fmt, str) or (isinstance(arg, tuple) and UNKNOWN in arg):
            return None
        try:
            out.append(fmt % arg)
        except (TypeError, ValueError, KeyError):
            return None
    return out[:MAX_VALUES] or None


def _addable(a: Any, b: Any) -> bool:
    return isinstance(a, str) and isinstance(b, str)


def _subscript(node: ast.Subscript, lookup: Lookup) -> list[Any] | None:
    return _lookup_in(values(node.value, lookup), node.slice, lookup)


def _lookup_in(containers: list[Any] | None, key: ast.expr, lookup: Lookup) -> list[Any] | None:
    if containers is None:
        return None
    keys = values(key, lookup)
    out: list[Any] = []
    for container in containers:
        if isinstance(container, dict):
            if keys is not None and all(_hashable(k) and k in container for k in keys):
                out.extend(container[k] for k in keys)
            else:
                out.extend(container.values())
        elif isinstance(container, list | tuple):
            ints = [k for k in keys or () if isinstance(k, int)]
            if keys is not None and ints and len(ints) == len(keys):
                out.extend(container[k] for k in ints if -len(container) <= k < len(container))
            else:
                out.extend(container)
        else:
            return None
    return out[:MAX_VALUES] or None


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _fstring(node: ast.JoinedStr, lookup: Lookup) -> list[Any] | None:
    choices: list[list[str]] = []
    for part in node.values:
        if isinstance(part, ast.Constant):
            choices.append([str(part.value)])
        elif isinstance(part, ast.FormattedValue) and part.format_spec is None:
            vals = values(part.value, lookup)
            if vals is None or not all(isinstance(v, str | int) for v in vals):
                return None
            choices.append([str(v) for v in vals])
        else:
            return None
    out = ["".join(p) for p in itertools.islice(itertools.product(*choices), MAX_VALUES)]
    return out or None
