"""Real interpreters other than the one running the tests or the quality harness (pyenv
installs, ``pythonX.Y`` on PATH), each asked for its version by running it."""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path


def interpreter_version(path: str) -> tuple[int, int] | None:
    """``(major, minor)`` of the interpreter at ``path``; None if it does not run."""
    try:
        out = subprocess.run(
            [path, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = out.stdout.split()
    if out.returncode != 0 or len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def _candidates(versions: str, names: list[str]) -> list[str]:
    """pyenv installs matching ``versions`` (a glob such as ``3.*``), newest first, then
    ``names`` found on PATH."""
    found: list[str] = []
    for home in dict.fromkeys(("/root", str(Path.home()))):
        found += sorted(glob.glob(f"{home}/.pyenv/versions/{versions}/bin/python3"), reverse=True)
    found += [p for n in names if (p := shutil.which(n))]
    return list(dict.fromkeys(found))


def find_python(version: str) -> str | None:
    """A working interpreter of exactly ``version`` (``"3.13"``), or None."""
    wanted = tuple(int(p) for p in version.split("."))
    for path in _candidates(f"{version}.*", [f"python{version}"]):
        if interpreter_version(path) == wanted:
            return path
    return None


def other_python(min_version: tuple[int, int]) -> str | None:
    """A working interpreter at least ``min_version``, or None on this machine."""
    for path in _candidates("3.*", ["python3.14", "python3.13", "python3.12"]):
        version = interpreter_version(path)
        if version is not None and version >= min_version:
            return path
    return None
