"""Real interpreters other than the one running the tests (pyenv installs, PATH)."""

from __future__ import annotations

import glob
import shutil
import subprocess


def other_python(min_version: tuple[int, int]) -> str | None:
    """A working interpreter at least ``min_version``, or None on this machine."""
    candidates = sorted(glob.glob("/root/.pyenv/versions/3.*/bin/python3"), reverse=True)
    candidates += [p for n in ("python3.14", "python3.13", "python3.12") if (p := shutil.which(n))]
    for path in candidates:
        try:
            out = subprocess.run(
                [path, "-c", "import sys; print(*sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
        except OSError:
            continue
        parts = out.stdout.split()
        if out.returncode == 0 and len(parts) == 2 and tuple(map(int, parts)) >= min_version:
            return path
    return None
