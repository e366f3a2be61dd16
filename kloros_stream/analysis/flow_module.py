"""What one module declares that decides how its calls and attributes read.

Pure, one pass over a parsed module before :mod:`.flows` walks it: constants (module and
class level, ``Enum`` members and their ``.value``), imports, classes (bases, methods,
what each ``self.x`` is built from), and the module's own functions, with the ones that
pass a parameter on as the topic of a bus call (*wrappers*: calling one is a bus call).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

from . import flow_values as fv
from .flow_walk import ASSIGN, CALL, CLASS, DEF, Walked, walk

COLLECTION_CALLS = frozenset(
    {
        "list", "dict", "set", "deque", "defaultdict", "OrderedDict", "Counter", "Queue",
        "SimpleQueue", "LifoQueue", "PriorityQueue", "JoinableQueue", "WeakSet",
        "WeakValueDictionary", "WeakKeyDictionary", "bytearray", "array",
    }
)  # fmt: skip
"""Calls that build a collection: an attribute initialised by one is a possible queue."""
ENUM_BASES = frozenset({"Enum", "StrEnum", "IntEnum", "Flag", "IntFlag"})


@dataclass(slots=True)
class ClassInfo:
    name: str
    bases: list[str]
    """Dotted names of the bases as written (``Gtk.Box``, ``Observable``)."""
    methods: set[str] = field(default_factory=set)
    constants: dict[str, Any] = field(default_factory=dict)
    built_from: dict[str, set[str]] = field(default_factory=dict)
    """``self.x = Cls(...)`` -> x: {"Cls"} (the called name, dotted)."""
    literal_attrs: dict[str, list[str]] = field(default_factory=dict)
    """``self.x = "literal"`` -> the literals assigned (when nothing else ever is)."""
    collections: set[str] = field(default_factory=set)
    """Attributes initialised as a collection somewhere in the class."""
    assigned: set[str] = field(default_factory=set)
    """Attributes assigned anything somewhere in the class."""
    enum: bool = False


@dataclass(slots=True)
class ModuleInfo:
    constants: dict[str, Any] = field(default_factory=dict)
    imports: dict[str, str] = field(default_factory=dict)
    """Local name -> dotted source (``from a.b import C`` -> C: a.b.C; relative: ``.b.C``)."""
    classes: dict[str, ClassInfo] = field(default_factory=dict)
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = field(default_factory=dict)
    """Module-level functions, and methods as ``Class.method``."""
    wrappers: dict[str, Any] = field(default_factory=dict)
    """Qualname -> :class:`~.flow_calls.Wrapper`."""
    emit_calls: frozenset[str] = frozenset()
    subscribe_calls: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    dynamic: set[str] = field(default_factory=set)
    """Classes that read their attributes dynamically (``vars(self)``, ``self.__dict__``,
    ``fields(self)``, ``asdict(self)``, ``getattr(self, name)``, ``__slots__``)."""
    called: set[str] = field(default_factory=set)
    """Wrappers called in this module (their topics come from those calls)."""

    def lookup_constant(self, node: ast.expr, cls: str | None = None) -> list[Any] | None:
        """A module constant, ``Cls.X``/``self.X`` (class constants, Enum members and
        their ``.value``)."""
        if isinstance(node, ast.Name):
            if node.id in self.constants:
                return [self.constants[node.id]]
            return None
        if not isinstance(node, ast.Attribute):
            return None
        if node.attr == "value" and isinstance(node.value, ast.Attribute):
            return self.lookup_constant(node.value, cls)
        owner = node.value
        owner_cls = None
        if isinstance(owner, ast.Name):
            if owner.id in ("self", "cls") and cls is not None:
                owner_cls = cls
            elif owner.id in self.classes:
                owner_cls = owner.id
        info = self.classes.get(owner_cls or "")
        if info is not None and node.attr in info.constants:
            return [info.constants[node.attr]]
        if info is not None and owner_cls == cls and node.attr in info.literal_attrs:
            return list(info.literal_attrs[node.attr])  # self.x only ever set to literals
        return None


def scan_module(
    tree: ast.Module,
    emit_calls: frozenset[str],
    sub_calls: frozenset[str],
    suffixes: tuple[str, ...] = (),
    walked: Walked | None = None,
) -> ModuleInfo:
    """The module's facts, in the order of a depth-first walk taking the last child first
    (the enclosing class and function of each node known): from ``walked`` (the
    :func:`~.flow_walk.walk` of ``tree``), walked here if not given."""
    from .flow_calls import find_wrapper  # flow_calls needs ModuleInfo: imported here

    if walked is None:
        walked = walk(tree)
    info = ModuleInfo(emit_calls=emit_calls, subscribe_calls=sub_calls, suffixes=suffixes)
    lookup = info.lookup_constant
    for stmt in tree.body:
        if isinstance(stmt, ast.ClassDef):
            info.classes[stmt.name] = _scan_class(stmt, lookup)
        elif not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            _constant(stmt, info.constants, lookup)
    calls: dict[str, list[ast.Call]] = {}
    classes, functions, imports, dynamic = info.classes, info.functions, info.imports, info.dynamic
    dynamic.update(walked.dynamic)
    for kind, node, where, cls in reversed(walked.post):
        if kind == CALL:  # where: the enclosing function ("" at module level)
            bucket = calls.get(where)
            if bucket is None:
                calls[where] = [node]
            else:
                bucket.append(node)
            if cls is not None and node.args and _dynamic_read(node):
                dynamic.add(cls)
        elif kind == ASSIGN:  # where: the enclosing class
            if where in classes:
                _self_assign(node, classes[where])
        elif kind == DEF:  # where: the function's qualname
            if where not in functions:
                functions[where] = node
        elif kind == CLASS:  # where: the nested class's qualname
            classes[where] = _scan_class(node, lookup)
        elif type(node) is ast.Import:
            for alias in node.names:
                local = alias.asname or alias.name.split(".")[0]
                imports[local] = alias.name if alias.asname else local
        else:
            base = "." * node.level + (node.module or "")
            for alias in node.names:
                imports[alias.asname or alias.name] = f"{base}.{alias.name}"
    for _ in range(3):  # wrappers of wrappers
        changed = False
        for qual, found_calls in calls.items():
            if qual and qual not in info.wrappers:
                found = find_wrapper(info.functions[qual], qual, found_calls, info)
                if found is not None:
                    info.wrappers[qual] = found
                    changed = True
        if not changed:
            break
    for qual, found_calls in calls.items() if info.wrappers else ():
        cls = qual.rsplit(".", 1)[0] if "." in qual else None
        for call in found_calls:
            func = call.func
            if isinstance(func, ast.Name) and func.id in info.wrappers:
                info.called.add(func.id)
            elif (
                isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name)
                and func.value.id in ("self", "cls")
                and f"{cls}.{func.attr}" in info.wrappers
            ):
                info.called.add(f"{cls}.{func.attr}")
    return info


def _self_assign(node: ast.Assign | ast.AnnAssign, info: ClassInfo) -> None:
    """``self.x = ...`` in a class: assigned, a collection, or built from a call."""
    if isinstance(node, ast.Assign):
        targets, value = node.targets, node.value
    elif node.value is not None:
        targets, value = [node.target], node.value
    else:
        return
    for target in targets:
        if (
            isinstance(target, ast.Attribute)
            and isinstance(target.value, ast.Name)
            and target.value.id in ("self", "cls")
        ):
            literals = info.literal_attrs
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                if target.attr not in info.assigned or target.attr in literals:
                    values = literals.setdefault(target.attr, [])
                    if value.value not in values:
                        values.append(value.value)
            else:
                literals.pop(target.attr, None)
            info.assigned.add(target.attr)
            if _is_collection_value(value):
                info.collections.add(target.attr)
            elif isinstance(value, ast.Call):
                name = _dotted(value.func)
                if name:
                    info.built_from.setdefault(target.attr, set()).add(name)


def _constant(stmt: ast.stmt, out: dict[str, Any], lookup: fv.Lookup) -> None:
    if isinstance(stmt, ast.Assign):
        targets, value = stmt.targets, stmt.value
    elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
        targets, value = [stmt.target], stmt.value
    else:
        return
    vals = fv.values(value, lookup)
    if vals is None or len(vals) != 1:
        return
    for target in targets:
        if isinstance(target, ast.Name):
            out[target.id] = vals[0]


def _scan_class(node: ast.ClassDef, lookup: Any) -> ClassInfo:
    bases = [b for b in (_dotted(b) for b in node.bases) if b]
    info = ClassInfo(node.name, bases, enum=any(b.rsplit(".", 1)[-1] in ENUM_BASES for b in bases))
    for stmt in node.body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            info.methods.add(stmt.name)
        else:
            _constant(stmt, info.constants, lambda n: lookup(n, node.name))
            target = stmt.target if isinstance(stmt, ast.AnnAssign) else None
            if isinstance(target, ast.Name) and _is_collection_annotation(stmt):
                info.collections.add(target.id)
                info.assigned.add(target.id)
    if info.enum:
        for name, value in list(info.constants.items()):
            if not isinstance(value, str):
                del info.constants[name]
    return info


def _is_collection_annotation(stmt: ast.AnnAssign) -> bool:
    ann = stmt.annotation
    base = ann.value if isinstance(ann, ast.Subscript) else ann
    name = (_dotted(base) or "").rsplit(".", 1)[-1].lower()
    return name in {"list", "dict", "set", "deque", "defaultdict", "queue", "counter"} or (
        stmt.value is not None and _is_collection_value(stmt.value)
    )


def _is_collection_value(node: ast.expr) -> bool:
    if isinstance(node, ast.List | ast.Dict | ast.Set | ast.ListComp | ast.DictComp | ast.SetComp):
        return True
    if isinstance(node, ast.Call):
        name = (_dotted(node.func) or "").rsplit(".", 1)[-1]
        if name in COLLECTION_CALLS:
            return True
        if name == "field":  # dataclasses.field(default_factory=list)
            return any(
                k.arg == "default_factory" and _is_collection_factory(k.value)
                for k in node.keywords
            )
    if isinstance(node, ast.BoolOp):  # x or []
        return any(_is_collection_value(v) for v in node.values)
    return False


def _is_collection_factory(node: ast.expr) -> bool:
    if isinstance(node, ast.Lambda):
        return _is_collection_value(node.body)
    return (_dotted(node) or "").rsplit(".", 1)[-1] in COLLECTION_CALLS


def _dotted(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Subscript):
        return _dotted(node.value)
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


DYNAMIC_CALLS = frozenset({"vars", "fields", "asdict", "astuple", "getattr", "dir"})


def _dynamic_read(call: ast.Call) -> bool:
    """``vars(self)``, ``fields(self)``, ``asdict(self)``, ``getattr(self, name)`` with a
    name that is not a literal."""
    if not call.args:
        return False
    first = call.args[0]
    if not (isinstance(first, ast.Name) and first.id in ("self", "cls")):
        return False
    name = (_dotted(call.func) or "").rsplit(".", 1)[-1]
    if name not in DYNAMIC_CALLS:
        return False
    if name == "getattr":
        return len(call.args) > 1 and not isinstance(call.args[1], ast.Constant)
    return True


def absolute_imports(info: ModuleInfo, module: str) -> set[str]:
    """The import sources of a module, relative ones made absolute."""
    out: set[str] = set()
    package = module.split(".")
    for source in info.imports.values():
        if source.startswith("."):
            level = len(source) - len(source.lstrip("."))
            base = package[: max(len(package) - level, 0)]
            source = ".".join([*base, source.lstrip(".")]).strip(".")
        out.add(source)
    return out


def external_bases(info: ModuleInfo, cls: str) -> list[str]:
    """Import sources of the bases of ``cls`` and of its in-file ancestors."""
    out: list[str] = []
    seen: set[str] = set()
    todo = [cls]
    while todo:
        name = todo.pop()
        if name in seen or name not in info.classes:
            continue
        seen.add(name)
        for base in info.classes[name].bases:
            if base in info.classes:
                todo.append(base)
            else:
                head, _, rest = base.partition(".")
                source = info.imports.get(head)
                if source is not None:
                    out.append(f"{source}.{rest}" if rest else source)
    return out
