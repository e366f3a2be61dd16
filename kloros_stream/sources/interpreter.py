"""The watched system's Python interpreter, asked as a subprocess (never imported into ours).

* :func:`probe` runs it once (``python -E``: the service's own ``PYTHON*`` variables do not
  leak into the answer; that interpreter's ``site`` processing and ``.pth`` files apply as
  they would for the watched system) and returns its version,
  ``sys.path``, standard-library module names and directory, and the module names that
  setuptools' editable-install finders map to source directories.
* :func:`check_syntax` asks it whether one file parses: the child reads the file and calls
  ``ast.parse`` on it. Nothing of the file is imported or executed.

Both are bounded by a timeout and return a clear error instead of raising on any failure of
the child (missing binary, crash, garbage output).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PROBE_TIMEOUT_S = 20.0
CHECK_TIMEOUT_S = 20.0
MAX_OUTPUT_BYTES = 8 * 1024 * 1024

_PROBE = r"""
import json, sys, sysconfig
names = set(getattr(sys, "stdlib_module_names", ())) | set(sys.builtin_module_names)
editable = {}
for finder in sys.meta_path:
    mod = sys.modules.get(getattr(finder, "__module__", "") or "")
    mapping = getattr(mod, "MAPPING", None)
    if isinstance(mapping, dict):
        editable.update({str(k): str(v) for k, v in mapping.items()})
paths = sysconfig.get_paths()
print(json.dumps({
    "executable": sys.executable,
    "version": list(sys.version_info[:3]),
    "path": [p for p in sys.path if isinstance(p, str)],
    "stdlib_names": sorted(names),
    "stdlib_dirs": sorted({paths.get("stdlib", ""), paths.get("platstdlib", "")} - {""}),
    "editable": editable,
}))
"""

_CHECK = r"""
import ast, json, sys
path = sys.argv[1]
try:
    with open(path, "rb") as f:
        source = f.read()
    ast.parse(source, path)
    print(json.dumps({"ok": True}))
except SyntaxError as err:
    print(json.dumps({"ok": False, "message": err.msg, "line": err.lineno}))
except (OSError, ValueError) as err:
    print(json.dumps({"ok": None, "message": str(err)}))
"""


class InterpreterError(Exception):
    """The interpreter could not be run or did not answer sensibly."""


@dataclass(frozen=True, slots=True)
class InterpreterInfo:
    executable: str
    version: tuple[int, ...]
    path: tuple[str, ...]
    stdlib_names: frozenset[str]
    stdlib_dirs: tuple[str, ...]
    editable: dict[str, str] = field(default_factory=dict)

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))


def _run(argv: list[str], timeout: float) -> dict[str, object]:
    try:
        proc = subprocess.run(
            argv, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise InterpreterError(f"{argv[0]}: no such interpreter") from None
    except PermissionError:
        raise InterpreterError(f"{argv[0]}: not executable") from None
    except subprocess.TimeoutExpired:
        raise InterpreterError(f"{argv[0]}: no answer within {timeout:.0f}s") from None
    except OSError as err:
        raise InterpreterError(f"{argv[0]}: {err}") from None
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise InterpreterError(f"{argv[0]} exited {proc.returncode}: {tail[0]}")
    try:
        data = json.loads(proc.stdout[:MAX_OUTPUT_BYTES].decode("utf-8", "replace"))
    except ValueError:
        raise InterpreterError(f"{argv[0]}: unreadable answer") from None
    if not isinstance(data, dict):
        raise InterpreterError(f"{argv[0]}: unreadable answer")
    return data


def probe(python: str, timeout: float = PROBE_TIMEOUT_S) -> InterpreterInfo:
    """Run ``python`` once and read its module search path (see the module docstring)."""
    data = _run([python, "-E", "-c", _PROBE], timeout)
    try:
        version = tuple(int(v) for v in data["version"])  # type: ignore[union-attr]
        path = tuple(str(p) for p in data["path"])  # type: ignore[union-attr]
        names = frozenset(str(n) for n in data["stdlib_names"])  # type: ignore[union-attr]
        stdlib_dirs = tuple(str(p) for p in data["stdlib_dirs"])  # type: ignore[union-attr]
        editable = {str(k): str(v) for k, v in dict(data.get("editable") or {}).items()}  # type: ignore[call-overload]
    except (KeyError, TypeError, ValueError):
        raise InterpreterError(f"{python}: unexpected probe answer") from None
    return InterpreterInfo(
        executable=str(data.get("executable") or python),
        version=version,
        path=path,
        stdlib_names=names,
        stdlib_dirs=stdlib_dirs,
        editable=editable,
    )


@dataclass(frozen=True, slots=True)
class SyntaxVerdict:
    ok: bool | None
    """True: parses there; False: a syntax error there too; None: could not tell."""
    message: str = ""
    line: int | None = None


def check_syntax(python: str, path: Path, timeout: float = CHECK_TIMEOUT_S) -> SyntaxVerdict:
    """Whether ``python`` parses the file at ``path`` (``ast.parse`` in a child process)."""
    try:
        data = _run([python, "-I", "-c", _CHECK, str(path)], timeout)
    except InterpreterError as err:
        return SyntaxVerdict(None, str(err))
    ok = data.get("ok")
    line = data.get("line")
    return SyntaxVerdict(
        ok if isinstance(ok, bool) else None,
        str(data.get("message") or ""),
        line if isinstance(line, int) else None,
    )


MAX_NAMED = 50
"""Files named in /health as valid only for the watched interpreter (the count is exact)."""


class SyntaxConfirmer:
    """Asks the watched interpreter about files the service's own parser rejects.

    ``python`` "" means the service's own interpreter: its verdict is the service's, so
    nothing is asked. A verdict is cached per file content (mtime, size); a file that
    parses there is remembered in :attr:`valid_there` (for /health) until it changes,
    parses here, or goes away. An interpreter that cannot answer confirms the error (the
    service's verdict stands) and says why in :attr:`last_error`.
    """

    def __init__(self, python: str) -> None:
        self.python = python
        self.valid_there: dict[str, str] = {}
        """Path -> the interpreter's verdict text, for files valid there but not here."""
        self.last_error = ""
        self._cache: dict[str, tuple[tuple[int, int], bool]] = {}

    def is_error(self, path: str) -> bool:
        """True if ``path`` is a syntax error for the watched interpreter too."""
        if not self.python:
            return True
        try:
            st = os.stat(path)
            signature = (st.st_mtime_ns, st.st_size)
        except OSError:
            return True
        cached = self._cache.get(path)
        if cached is not None and cached[0] == signature:
            return cached[1]
        verdict = check_syntax(self.python, Path(path))
        if verdict.ok is None:
            self.last_error = verdict.message
        error = verdict.ok is not True
        self._cache[path] = (signature, error)
        if error:
            self.valid_there.pop(path, None)
        else:
            self.valid_there[path] = f"parses with {self.python}"
        return error

    def forget(self, path: str) -> None:
        self._cache.pop(path, None)
        self.valid_there.pop(path, None)

    def details(self, relative: Callable[[str], str]) -> dict[str, object]:
        names = sorted(relative(p) for p in self.valid_there)
        out: dict[str, object] = {
            "valid_for_watched_python": len(names),
            "valid_for_watched_python_files": names[:MAX_NAMED],
        }
        if self.last_error:
            out["watched_python_error"] = self.last_error
        return out
