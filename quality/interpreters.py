"""The watched system's interpreter for a corpus: ``[settings] python_version = "3.13"``.

A corpus of code that targets another Python than the one running the harness is judged
the way the monitor judges it with ``[monitors.capability_discovery] python``: by that
interpreter. It is found among pyenv installs and ``pythonX.Y`` on PATH; an empty venv of
it (no packages: the watched system's installs are the corpus's business) is made once
under the quality cache.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path

from .corpora import CorpusError, cache_dir


def find_python(version: str) -> str:
    """A working ``python`` of ``version`` (``"3.13"``); CorpusError if there is none."""
    pattern = f"versions/{version}.*/bin/python{version}"
    candidates = sorted(glob.glob(f"/root/.pyenv/{pattern}"))
    candidates += sorted(glob.glob(f"{Path.home()}/.pyenv/{pattern}"))
    if found := shutil.which(f"python{version}"):
        candidates.append(found)
    for path in candidates:
        try:
            out = subprocess.run(
                [path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip() == version:
            return path
    raise CorpusError(f"no Python {version} on this machine (pyenv or python{version} on PATH)")


def empty_venv(version: str) -> str:
    """The ``bin/python`` of an empty venv of Python ``version`` (made once)."""
    venv = cache_dir() / "venvs" / f"empty-{version}"
    python = venv / "bin" / "python"
    if not python.exists():
        base = find_python(version)
        venv.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [base, "-m", "venv", "--without-pip", "--clear", str(venv)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise CorpusError(f"cannot make a Python {version} venv: {done.stderr.strip()}")
    return str(python)
