"""Which calls are bus calls, and where their topic is.

Pure helpers for :mod:`.flows`: a call is a publish or a subscription by its callee,
resolved where the code says: a function of this module is one only if it is a
*wrapper* (it passes a parameter on as the topic of a bus call; calling it is that bus
call), a configured name (``emit``, ``UMNSub``) or a class named ``*Sub``/``*Subscriber``
is one, and ``self.emit(...)`` in a class whose ``emit`` comes only from imported bases
(a GUI toolkit's ``GObject``) is a publish only if one of those imports is in the tree.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from .flow_module import ModuleInfo

TOPIC_KEYWORDS = ("signal", "topic", "channel", "subject", "event", "event_name", "signal_name")
LIST_KEYWORDS = ("signals", "topics", "channels")


@dataclass(frozen=True, slots=True)
class Wrapper:
    """A function that passes its parameter ``param`` (position ``index`` among the
    caller-visible parameters) as the topic of a bus call of ``kind``; ``template`` is
    the topic it builds around it (``"menu:{}"``) or ``"{}"``."""

    kind: str
    index: int
    param: str
    template: str = "{}"


def find_wrapper(
    fn: ast.FunctionDef | ast.AsyncFunctionDef, qual: str, calls: list[ast.Call], info: ModuleInfo
) -> Wrapper | None:
    params = [a.arg for a in (*fn.args.posonlyargs, *fn.args.args)]
    if (
        "." in qual
        and params
        and not any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list)
    ):
        params = params[1:]
    names = set(params) | {a.arg for a in fn.args.kwonlyargs}
    if not names:
        return None
    for call in calls:
        if not _may_name(call, names):
            continue
        kind, index, keyword = call_kind(
            call, info, qual.rsplit(".", 1)[0] if "." in qual else None
        )
        if kind is None:
            continue
        arg = topic_arg(call, index, keyword, kind)
        if isinstance(arg, ast.Name) and arg.id in names:
            pos = params.index(arg.id) if arg.id in params else -1
            return Wrapper(kind, pos, arg.id)
        if isinstance(arg, ast.JoinedStr):
            used = [
                v.value.id
                for v in arg.values
                if isinstance(v, ast.FormattedValue) and isinstance(v.value, ast.Name)
            ]
            if len(used) == 1 and used[0] in names and len(arg.values) <= 3:
                template = "".join(
                    v.value.replace("{", "{{").replace("}", "}}")
                    if isinstance(v, ast.Constant)
                    else "{}"
                    for v in arg.values
                )
                pos = params.index(used[0]) if used[0] in params else -1
                return Wrapper(kind, pos, used[0], template)
    return None


def _may_name(call: ast.Call, names: set[str]) -> bool:
    """Whether an argument of ``call`` is one of ``names`` or an f-string (a topic taken
    from a parameter can be nothing else)."""
    for arg in call.args:
        if (type(arg) is ast.Name and arg.id in names) or type(arg) is ast.JoinedStr:
            return True
    for k in call.keywords:
        arg = k.value
        if (type(arg) is ast.Name and arg.id in names) or type(arg) is ast.JoinedStr:
            return True
    return False


def call_kind(
    call: ast.Call, info: ModuleInfo, cls: str | None
) -> tuple[str | None, int, str | None]:
    """("emit"|"subscribe"|None, topic position, topic keyword) for a call in class
    ``cls`` (None at module level): local functions and wrappers resolved first. A call
    that is not a bus call has position -1 when its callee is known here (a function of
    this module), 0 when it is not (it may be a wrapper defined in another module)."""
    func = call.func
    emit_calls, sub_calls = info.emit_calls, info.subscribe_calls
    kind = type(func)
    if kind is ast.Name:
        name = func.id
        if name in info.functions:
            w = info.wrappers.get(name)
            return (w.kind, w.index, w.param) if w else (None, -1, None)
        if name in info.classes and f"{name}.__init__" in info.wrappers:
            w = info.wrappers[f"{name}.__init__"]
            return w.kind, w.index, w.param
    elif kind is ast.Attribute:
        name = func.attr
        owner = func.value
        if type(owner) is ast.Name and owner.id in ("self", "cls") and cls is not None:
            w = info.wrappers.get(f"{cls}.{name}")
            if w is not None:
                return w.kind, w.index, w.param
            if f"{cls}.{name}" in info.functions and name not in emit_calls | sub_calls:
                return None, -1, None
    else:
        return None, -1, None
    if name in emit_calls:
        return "emit", 0, None
    if name in sub_calls:
        return "subscribe", 0, None
    bare = name.lstrip("_")
    if info.suffixes and bare[:1].isupper() and bare.endswith(info.suffixes):
        return "subscribe", 0, None
    return None, 0, None


def topic_arg(call: ast.Call, index: int, keyword: str | None, kind: str) -> ast.expr | None:
    """The expression carrying the topic of a bus call."""
    for k in call.keywords:
        if k.arg is not None and (
            k.arg == keyword or (keyword is None and k.arg in TOPIC_KEYWORDS)
        ):
            return k.value
        if (
            k.arg is not None
            and kind == "subscribe"
            and keyword is None
            and k.arg in ("signals", "topics", "channels")
        ):
            return k.value
    if 0 <= index < len(call.args) and not isinstance(call.args[index], ast.Starred):
        return call.args[index]
    return None


def wrapper_template(call: ast.Call, info: ModuleInfo, cls: str | None) -> str:
    """The topic template of the wrapper ``call`` calls (``"{}"`` if none)."""
    func = call.func
    qual = None
    if isinstance(func, ast.Name):
        qual = func.id
    elif (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Name)
        and func.value.id in ("self", "cls")
    ):
        qual = f"{cls}.{func.attr}"
    wrapper = info.wrappers.get(qual or "")
    return wrapper.template if wrapper is not None else "{}"


def receiver_guard(info: ModuleInfo, cls: str | None, func: ast.expr) -> tuple[bool, str | None]:
    """(is a publish, guard) for ``self.emit(...)``: a class of this module that neither
    defines nor inherits (here) the method, with only imported bases, publishes only if
    one of those imports is part of the tree (the guard: import sources joined by ``|``);
    otherwise the method is a framework's own signal (a GUI toolkit widget's ``emit``).
    A bus client held in an attribute (``self.client.publish``) is a publish."""
    if (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Name)
        and func.value.id in ("self", "cls")
        and cls
    ):
        return _class_guard(info, cls, func.attr)
    return True, None


def _class_guard(
    info: ModuleInfo, cls: str, method: str, down: bool = True
) -> tuple[bool, str | None]:
    """Where ``cls`` gets ``method`` from: its classes in this module (a publish), an
    unknown base (a publish), imported bases (a guard), or, for a mixin with no bases,
    the classes of this module that mix it in."""
    classes = info.classes
    ancestors, todo, external = [], [cls], []
    while todo:
        name = todo.pop()
        if name in ancestors:
            continue
        ancestors.append(name)
        for base in classes[name].bases:
            if base in classes:
                todo.append(base)
            else:
                source = import_of(info, base)
                if source is None:
                    return True, None
                external.append(source)
    if any(method in classes[a].methods or method in classes[a].assigned for a in ancestors):
        return True, None  # its own method, or an attribute it sets (a callback)
    if external:
        return True, "|".join(external)
    if not down:
        return False, None
    subs = [c for c in classes if c != cls and cls in _ancestors(info, c)]
    if not subs:
        return True, None
    found = [_class_guard(info, c, method, down=False) for c in subs]
    if any(ok and g is None for ok, g in found):
        return True, None
    joined = "|".join(g for ok, g in found if ok and g)
    return (True, joined) if joined else (False, None)


def _ancestors(info: ModuleInfo, cls: str) -> set[str]:
    out: set[str] = set()
    todo = [cls]
    while todo:
        name = todo.pop()
        for base in info.classes[name].bases:
            if base in info.classes and base not in out:
                out.add(base)
                todo.append(base)
    return out


def import_of(info: ModuleInfo, dotted: str) -> str | None:
    """``Gtk.Box`` -> ``gi.repository.Gtk.Box`` through this module's imports."""
    head, _, rest = dotted.partition(".")
    source = info.imports.get(head)
    if source is None:
        return None
    return f"{source}.{rest}" if rest else source
