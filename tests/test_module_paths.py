"""PathResolver: modules found on another interpreter's search path by files alone."""

from __future__ import annotations

from pathlib import Path

from kloros_stream.analysis.module_paths import PathResolver, install_dirs


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_packages_modules_extensions_and_namespaces(tmp_path: Path) -> None:
    site, extra = tmp_path / "site", tmp_path / "extra"
    touch(site / "pkg" / "__init__.py")
    touch(site / "pkg" / "sub" / "mod.py")
    touch(site / "plain.py")
    touch(site / "fast.cpython-313-x86_64-linux-gnu.so")
    touch(site / "ns" / "a.py")
    touch(extra / "ns" / "b.py")
    resolver = PathResolver([str(site), str(extra), ""], ["os", "tomllib"])
    for name in (
        "pkg",
        "pkg.sub",
        "pkg.sub.mod",
        "plain",
        "plain.attr",
        "fast",
        "ns.a",
        "ns.b",
        "os.path",
        "tomllib",
    ):
        assert resolver.resolves(name), name
    for name in ("missing", "pkg.nope", "pkg.sub.gone", "ns.c"):
        assert not resolver.resolves(name), name
    touch(site / "missing" / "__init__.py")
    assert not resolver.resolves("missing")  # cached until invalidated
    resolver.invalidate()
    assert resolver.resolves("missing")


def test_editable_installs_map_to_their_source(tmp_path: Path) -> None:
    touch(tmp_path / "src" / "proj" / "core.py")
    resolver = PathResolver([], [], {"proj": str(tmp_path / "src" / "proj")})
    assert resolver.resolves("proj.core") and not resolver.resolves("proj.other")


def test_install_dirs_skip_the_standard_library_but_not_site_packages(tmp_path: Path) -> None:
    lib = tmp_path / "lib" / "python3.13"
    entries = [
        str(lib),
        str(lib / "lib-dynload"),
        str(lib / "site-packages"),
        "rel",
        str(tmp_path / "x.zip"),
        str(lib / "site-packages"),
    ]
    assert install_dirs(entries, [str(lib)]) == [lib / "site-packages"]
