"""The watched system's interpreter for a corpus: ``[settings] python_version = "3.13"``.

A corpus of code that targets another Python than the one running the harness is judged
the way the monitor judges it with ``[monitors.capability_discovery] python``: by that
interpreter. It is found among pyenv installs and ``pythonX.Y`` on PATH; an empty venv of
it (no packages: the watched system's installs are the corpus's business) is made once
under the quality cache.
"""

from __future__ import annotations

import subprocess

from tests.support import pythons

from .corpora import CorpusError, cache_dir


def find_python(version: str) -> str:
    """A working ``python`` of ``version`` (``"3.13"``); CorpusError if there is none."""
    found = pythons.find_python(version)
    if found is None:
        raise CorpusError(f"no Python {version} on this machine (pyenv or python{version} on PATH)")
    return found


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
