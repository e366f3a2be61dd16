"""Small shape tests over AST nodes shared by the flow analysis (pure)."""

from __future__ import annotations

import ast

TRIVIAL_BASES = frozenset({"object", "ABC", "Generic", "Protocol"})


def call_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def base_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Subscript):
        node = node.value
    return call_name(node)


def is_derived(node: ast.ClassDef) -> bool:
    """Has a base class that may define attributes (anything but object/ABC/Generic/...)."""
    return any(base_name(b) not in TRIVIAL_BASES for b in node.bases)


def is_staticmethod(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(call_name(d) == "staticmethod" for d in node.decorator_list)


def is_collection(node: ast.expr) -> bool:
    return isinstance(
        node, ast.List | ast.Set | ast.Tuple | ast.Dict | ast.ListComp | ast.SetComp | ast.DictComp
    )


def is_runtime_collection(node: ast.expr) -> bool:
    """A list/set/dict built at run time: a comprehension, or a display holding at least
    one non-literal. Empty and literal-only displays are configuration or initialisation."""
    if isinstance(node, ast.ListComp | ast.SetComp | ast.DictComp):
        return True
    if isinstance(node, ast.List | ast.Set):
        return any(not is_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return any(
            (k is not None and not is_literal(k)) or not is_literal(v)
            for k, v in zip(node.keys, node.values, strict=True)
        )
    return False


def is_literal(node: ast.expr | None) -> bool:
    """Constants, displays of constants, and UPPER_CASE names (constants by convention)."""
    if node is None or isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.UnaryOp):
        return is_literal(node.operand)
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return all(is_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        pairs = zip(node.keys, node.values, strict=True)
        return all(is_literal(k) and is_literal(v) for k, v in pairs)
    if isinstance(node, ast.JoinedStr):
        return all(isinstance(v, ast.Constant) for v in node.values)
    if isinstance(node, ast.Starred):
        return False
    name = call_name(node) if isinstance(node, ast.Name | ast.Attribute) else None
    return bool(name) and name.isupper()
