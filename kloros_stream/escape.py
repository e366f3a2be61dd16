"""Text from outside made safe for UTF-8 JSON: logs, checkpoints, facts and the feed.

File names are bytes; Python decodes undecodable bytes to lone surrogates
(``surrogateescape``), which strict encoders (orjson, UTF-8) refuse. :func:`clean` turns
each such byte into the visible escape ``\\xff`` (other lone surrogates into ``\\udXXX``),
so one hostile name is shown, never a crash. Text that is valid already is returned as is
(the common case costs an ``isascii`` check or one encode).
"""

from __future__ import annotations

from typing import Any


def clean(text: str) -> str:
    """``text`` with undecodable bytes and lone surrogates as backslash escapes."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def clean_obj(value: Any) -> Any:
    """``value`` with every string (keys too) in nested dicts, lists and tuples cleaned."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {clean(k) if isinstance(k, str) else k: clean_obj(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_obj(v) for v in value]
    return value


def clean_facts(facts: dict[str, Any]) -> dict[str, Any]:
    """Facts as published on the bus: unchanged (same object) unless a string needs it."""
    for value in facts.values():
        if not _is_clean(value):
            return clean_obj(facts)  # type: ignore[no-any-return]
    return facts


def _is_clean(value: Any) -> bool:
    if isinstance(value, str):
        return value.isascii() or clean(value) is value
    if isinstance(value, dict):
        return all(_is_clean(k) and _is_clean(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_is_clean(v) for v in value)
    return True
