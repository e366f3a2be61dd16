"""The knowledge index format and the unindexed / stale rules."""

from __future__ import annotations

import pytest

from kloros_stream.analysis.knowledge import (
    CodeIndex,
    IndexInvalid,
    code_mentions,
    index_status,
    is_doc,
    normalise_rel,
    parse_index,
    sha256_hex,
    stale_code,
    stale_due,
)

DAY = 86_400.0
HASH = sha256_hex(b"hello\n")


def test_parse_index_valid_and_normalised() -> None:
    raw = b'{"documents": {"./guide/intro.md": "%s", "b.rst": "%s"}, "extra": 1}' % (
        HASH.upper().encode(),
        HASH.encode(),
    )
    index = parse_index(raw)
    assert index.documents == {"guide/intro.md": HASH, "b.rst": HASH}
    assert index.problems == ()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "not valid JSON"),
        (b'{"documents": {"a.md": "ab', "not valid JSON"),
        (b"[]", "top level must be an object"),
        (b'{"docs": {}}', 'missing key "documents"'),
        (b'{"documents": ["a.md"]}', '"documents" must be an object'),
    ],
)
def test_parse_index_rejects_unusable_files(raw: bytes, message: str) -> None:
    with pytest.raises(IndexInvalid, match=message):
        parse_index(raw)


def test_parse_index_skips_bad_entries_with_reasons() -> None:
    raw = (
        b'{"documents": {"/abs.md": "%s", "../up.md": "%s", "short.md": "abc", "n.md": 3,'
        b' "ok.md": "%s"}}' % (HASH.encode(), HASH.encode(), HASH.encode())
    )
    index = parse_index(raw)
    assert index.documents == {"ok.md": HASH}
    assert len(index.problems) == 4
    assert any("'short.md'" in p and "sha256" in p for p in index.problems)
    assert any("'../up.md'" in p and "relative path" in p for p in index.problems)


def test_status_new_changed_indexed() -> None:
    index = {"a.md": HASH}
    assert index_status("b.md", HASH, index) == "new"
    assert index_status("a.md", sha256_hex(b"other"), index) == "changed"
    assert index_status("a.md", HASH, index) is None


def test_doc_names_and_paths() -> None:
    assert is_doc("a.md") and is_doc("B.RST") and is_doc("notes.txt")
    assert not is_doc("a.py") and not is_doc(".a.md.swp") and not is_doc(".hidden.md")
    assert normalise_rel("a/../b.md") is None and normalise_rel("") is None
    assert normalise_rel("a\\b.md") is None and normalise_rel("./a/b.md") == "a/b.md"


def test_code_mentions() -> None:
    text = (
        "See `kloros_stream/config.py` and ./tools/run.py, the class "
        "kloros_stream.monitors.base.Monitor, e.g. config.toml; version 3.11; "
        "https://example.com/x.py is a url."
    )
    mentions = code_mentions(text)
    assert {
        "kloros_stream/config.py",
        "tools/run.py",
        "kloros_stream.monitors.base.Monitor",
    } <= mentions
    assert "3.11" not in mentions
    assert len(code_mentions(" ".join(f"m{i}.x{i}" for i in range(500)), limit=10)) == 10


def test_code_index_resolves_paths_and_dotted_names() -> None:
    code = CodeIndex()
    code.add_file("/repo/src", "kloros_stream/config.py", 100.0)
    code.add_file("/repo/src", "kloros_stream/monitors/__init__.py", 100.0)
    code.add_file("/repo/src", "kloros_stream/monitors/base.py", 100.0)
    code.add_file("/repo/tools", "run.py", 100.0)
    assert code.resolve("kloros_stream/config.py") == {("/repo/src", "kloros_stream/config.py")}
    assert code.resolve("src/kloros_stream/config.py") == {("/repo/src", "kloros_stream/config.py")}
    assert code.resolve("config.py") == {("/repo/src", "kloros_stream/config.py")}
    assert code.resolve("other/config.py") == set()
    assert code.resolve("kloros_stream.monitors.base.Monitor") == {
        ("/repo/src", "kloros_stream/monitors/base.py")
    }
    assert code.resolve("kloros_stream.monitors") == {
        ("/repo/src", "kloros_stream/monitors/__init__.py")
    }
    assert code.resolve("config.toml") == set()
    assert code.referenced(["tools/run.py", "nothing.here"]) == {("/repo/tools", "run.py")}
    code.remove_file("/repo/tools", "run.py")
    assert code.resolve("tools/run.py") == set()


def test_stale_rule() -> None:
    now = 1000 * DAY
    doc_mtime = now - 200 * DAY
    code = {("/r", "a.py"): now - 10 * DAY, ("/r", "b.py"): now - 300 * DAY}
    assert stale_code(doc_mtime, code, now, 180 * DAY) == ["/r/a.py"]
    assert stale_code(doc_mtime, code, now, 250 * DAY) == []  # doc not old enough
    assert stale_code(doc_mtime, {("/r", "b.py"): now - 300 * DAY}, now, 180 * DAY) == []
    assert stale_due(doc_mtime, code, now, 250 * DAY) == doc_mtime + 250 * DAY
    assert stale_due(doc_mtime, code, now, 180 * DAY) is None  # already stale
    assert stale_due(doc_mtime, {("/r", "b.py"): 0.0}, now, 250 * DAY) is None
