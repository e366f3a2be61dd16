"""Executable lookup, module resolution without import, and the import index."""

from __future__ import annotations

import os
import pickle
import random
import sys
from pathlib import Path, PurePath

import pytest

from kloros_stream.analysis.capabilities import (
    FileImports,
    ImportIndex,
    LocalModules,
    ModuleResolver,
    file_imports,
    find_executable,
    path_dirs,
    read_imports,
    relative,
    site_dirs,
)
from kloros_stream.analysis.pysource import SourceError


def _tool(directory: Path, name: str, mode: int = 0o755) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(mode)
    return path


def test_path_dirs_order_and_repeats() -> None:
    assert path_dirs(f"/a{os.pathsep}{os.pathsep}/b{os.pathsep}/a") == [Path("/a"), Path("/b")]
    assert path_dirs(None) == []


def test_find_executable_first_match_and_mode(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    _tool(first, "tool", 0o644)  # not executable: skipped
    found = _tool(second, "tool")
    assert find_executable("tool", [first, second]) == found
    assert find_executable("absent", [first, second]) is None
    (first / "adir").mkdir()
    assert find_executable("adir", [first]) is None
    assert find_executable(str(found), []) == found


def test_resolver_stdlib_installed_missing() -> None:
    resolver = ModuleResolver()
    assert resolver.resolves("json") and resolver.resolves("sys")
    assert resolver.resolves("pydantic")
    assert resolver.resolves("os.path")  # os is a plain module: path is its attribute
    assert resolver.resolves("email.mime")
    assert not resolver.resolves("email.no_such_submodule_here")
    assert not resolver.resolves("kloros_no_such_lib_xyz")


def test_resolver_sees_install_and_uninstall_after_invalidate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    resolver = ModuleResolver()
    assert not resolver.resolves("fakelib_kloros")
    pkg = tmp_path / "fakelib_kloros"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise SystemExit('must never be imported')\n")
    assert not resolver.resolves("fakelib_kloros")  # cached until invalidated
    resolver.invalidate()
    assert resolver.resolves("fakelib_kloros")
    assert "fakelib_kloros" not in sys.modules
    (pkg / "__init__.py").unlink()
    pkg.rmdir()
    resolver.invalidate()
    assert not resolver.resolves("fakelib_kloros")


def test_resolver_ignores_sys_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ghost_module_kloros", type(sys)("ghost_module_kloros"))
    assert not ModuleResolver().resolves("ghost_module_kloros")


def test_site_dirs_skip_stdlib_and_relative(tmp_path: Path) -> None:
    stdlib = str(Path(os.__file__).parent)
    dirs = site_dirs(
        ["", "rel", stdlib, f"{stdlib}/lib-dynload", str(tmp_path), "/x.zip", str(tmp_path)]
    )
    assert dirs == [tmp_path]


def test_file_imports_required_and_optional() -> None:
    src = b"""
import os, numpy.linalg
from requests import get
from . import sibling
from __future__ import annotations
try:
    import ujson as json
except ImportError:
    import json
if TYPE_CHECKING:
    import mypy_extensions
def f():
    import lazy_only
"""
    imports = file_imports(src, "x.py")
    assert imports.required == {"os", "numpy", "requests"}
    assert imports.optional == {"ujson", "json"}
    with pytest.raises(SourceError):
        file_imports(b"def broken(:\n", "bad.py")
    assert read_imports(b"def broken(:\n", "bad.py") is None


def test_local_modules_visibility() -> None:
    local = LocalModules()
    assert local.add("/r", PurePath("pkg/sub/mod.py")) == {"pkg", "sub", "mod"}
    local.add("/r", PurePath("scripts/helper.py"))
    local.add("/r", PurePath("ext/fast.cpython-311-x86_64-linux-gnu.so"))
    assert local.visible("pkg", "/r", PurePath("scripts/run.py"))  # root top level
    assert local.visible("helper", "/r", PurePath("scripts/run.py"))  # own directory
    assert not local.visible("helper", "/r", PurePath("pkg/x.py"))
    assert local.visible("fast", "/r", PurePath("ext/use.py"))
    assert local.visible("pkg", "/other", PurePath("a.py"))  # any root's top level
    assert local.discard("/r", PurePath("scripts/helper.py")) == {"scripts", "helper"}
    assert not local.visible("helper", "/r", PurePath("scripts/run.py"))


def test_a_root_is_importable_by_its_own_name() -> None:
    """benchmarks/ importing tests.support (both roots of one repository) is no gap."""
    local = LocalModules()
    local.add("/repo/tests", PurePath("support/service.py"))
    local.add("/repo/benchmarks", PurePath("bench_x.py"))
    assert local.visible("tests", "/repo/benchmarks", PurePath("bench_x.py"))
    assert not local.visible("elsewhere", "/repo/benchmarks", PurePath("bench_x.py"))


def test_import_index_missing_and_updates(tmp_path: Path) -> None:
    index = ImportIndex(ModuleResolver())
    root = str(tmp_path)
    a = file_imports(b"import os\nimport kloros_missing_one\nimport mypkg\n", "a.py")
    affected = index.set_file(root, PurePath("app/a.py"), a)
    assert {"kloros_missing_one", "mypkg", "os", "app", "a"} <= affected
    assert index.missing() == {
        "kloros_missing_one": [f"{root}/app/a.py"],
        "mypkg": [f"{root}/app/a.py"],
    }
    # the tree grows the module itself: no longer missing
    index.set_file(root, PurePath("mypkg/__init__.py"), file_imports(b"", "i.py"))
    assert index.missing_for("mypkg") == []
    # a second importer; the first drops the import; a syntax error keeps old imports
    index.set_file(root, PurePath("b.py"), file_imports(b"import kloros_missing_one\n", "b"))
    index.set_file(root, PurePath("app/a.py"), file_imports(b"import os\n", "a.py"))
    assert index.missing_for("kloros_missing_one") == [f"{root}/b.py"]
    index.set_file(root, PurePath("b.py"), None)
    assert index.missing_for("kloros_missing_one") == [f"{root}/b.py"]
    assert index.remove_file(root, PurePath("b.py")) >= {"kloros_missing_one"}
    assert index.missing() == {}
    assert index.remove_file(root, PurePath("never.py")) == set()


def test_dotted_imports_of_the_roots_are_checked_at_full_depth() -> None:
    index = ImportIndex(ModuleResolver())
    root = "/r/src"
    for rel in ("pkg/__init__.py", "pkg/sub/__init__.py", "pkg/sub/mod.py", "pkg/plain.py"):
        index.set_file(root, PurePath(rel), file_imports(b"", rel))
    src = (b"import pkg.sub.mod\nfrom pkg.sub.gone import x\nfrom pkg.plain.attr import y\n"
           b"from src.pkg.sub import mod\nfrom src.pkg.nothere import z\nimport os.path\n"
           b"import json.decoder\n")
    affected = index.set_file(root, PurePath("app/main.py"), file_imports(src, "main.py"))
    assert {"pkg.sub.gone", "src.pkg.nothere"} <= affected
    assert index.missing() == {
        "pkg.sub.gone": ["/r/src/app/main.py"],
        "src.pkg.nothere": ["/r/src/app/main.py"],
    }
    # The module appears: the dotted import resolves.
    changed = index.set_file(root, PurePath("pkg/sub/gone.py"), file_imports(b"", "gone.py"))
    assert "pkg.sub.gone" in changed and index.missing_for("pkg.sub.gone") == []


def test_a_file_does_not_make_its_own_name_visible_to_itself() -> None:
    index = ImportIndex(ModuleResolver())
    root = "/r/pkg"
    index.set_file(root, PurePath("extensions/__init__.py"), file_imports(b"", "i.py"))
    src = b"from kloros_missing_lib import Visitor\n"
    index.set_file(root, PurePath("extensions/kloros_missing_lib.py"), file_imports(src, "m.py"))
    assert index.missing() == {"kloros_missing_lib": ["/r/pkg/extensions/kloros_missing_lib.py"]}
    index.set_file(root, PurePath("extensions/user.py"), file_imports(src, "user.py"))
    assert index.missing_for("kloros_missing_lib") == [
        "/r/pkg/extensions/kloros_missing_lib.py"
    ]  # a sibling file sees the local module


def test_a_module_turning_into_a_package_rechecks_dotted_imports_below_it() -> None:
    """``pkg.py`` makes ``pkg.sub`` an attribute (resolves); a first file in ``pkg/``
    makes ``pkg`` a package without ``sub`` (missing), and its removal undoes that: both
    changes are reported, so the monitor checks ``pkg.sub`` again."""
    index = ImportIndex(ModuleResolver())
    root = "/src"
    index.set_file(root, PurePath("pkg.py"), file_imports(b"", "pkg.py"))
    index.set_file(root, PurePath("user.py"), file_imports(b"import pkg.sub\n", "user.py"))
    assert index.missing_for("pkg.sub") == []
    affected = index.set_file(root, PurePath("pkg/other.py"), file_imports(b"", "o.py"))
    assert "pkg.sub" in affected
    assert index.missing_for("pkg.sub") == ["/src/user.py"]
    assert "pkg.sub" in index.remove_file(root, PurePath("pkg/other.py"))
    assert index.missing_for("pkg.sub") == []


class _Installed:
    """A resolver of a fixed set of installed modules (unit tests of the index's logic)."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def resolves(self, name: str) -> bool:
        return name in self.names

    def invalidate(self) -> None:
        pass


_FILES = [("/w/r1", rel) for rel in (
    "pkg/__init__.py", "pkg/sub/__init__.py", "pkg/sub/mod.py", "pkg/mccabe.py", "x.py",
    "x/y.py", "tools/run.py", "tools/pkg.py", "mod.py", "deep/a/b/c.py")] + [
    ("/w/r2", rel) for rel in ("lib/__init__.py", "lib/pkg/z.py", "r1.py", "solo.py")]
_NAMES = ["pkg", "pkg.sub", "pkg.sub.mod", "pkg.gone", "pkg.sub.mod.attr", "x", "x.y", "x.z",
          "mccabe", "mod", "r1", "r1.pkg", "lib.pkg.z", "lib.nope", "tools", "c", "a.b",
          "os", "os.path", "json", "nothere", "nothere.deep", "solo", "sub"]


def _imports(rng: random.Random) -> FileImports:
    names = rng.sample(_NAMES, rng.randint(0, 6))
    return FileImports(required=frozenset(n.split(".")[0] for n in names),
                       optional=frozenset(), dotted=frozenset(n for n in names if "." in n))


def _missing(index: ImportIndex) -> dict[str, list[str]]:
    return {m: index.missing_for(m) for m in sorted(index.modules | set(_NAMES))}


def test_the_kept_answers_of_an_index_are_always_those_of_a_fresh_fold() -> None:
    """Edits, adds, removals and syntax errors (imports kept) in random order: after each,
    the index answers what an index built afresh from the files present answers, though
    it keeps answers between changes; so does a copy pickled and loaded midway."""
    rng = random.Random(12)
    installed = _Installed({"os", "os.path", "json"})
    index = ImportIndex(installed)
    present: dict[tuple[str, str], FileImports] = {}
    for step in range(400):
        root, rel = key = rng.choice(_FILES if step >= 60 else _FILES[10:])  # r1 comes later
        if key in present and rng.random() < 0.3:
            index.remove_file(root, rel)
            del present[key]
        elif key in present and rng.random() < 0.2:
            index.set_file(root, rel, None)  # does not parse: its imports stay
        else:
            present[key] = _imports(rng)
            index.set_file(root, rel, present[key])
        if step == 200:
            index = pickle.loads(pickle.dumps(index))
            index.resolver = installed
        fresh = ImportIndex(installed)
        for (r, p), imports in sorted(present.items()):
            fresh.set_file(r, p, imports)
        assert _missing(index) == _missing(fresh), step
        # nothing outlives the files that import it: the index is the size of a fresh one
        assert index._importers == fresh._importers, step
        assert index._dotted_by_part == fresh._dotted_by_part, step
    assert any(_missing(index).values())  # the sequence did reach missing modules


def test_relative_is_relative_to_as_posix() -> None:
    for path, root in (("/w/r/a/b.py", "/w/r"), ("/w/r/b.py", "/w/r"), ("/a.py", "/"),
                       ("/w/rr/x.py", "/w/rr")):
        assert relative(path, root) == PurePath(path).relative_to(root).as_posix()
    with pytest.raises(ValueError):
        relative("/w/rx/a.py", "/w/r")  # a sibling sharing the prefix is not under it
