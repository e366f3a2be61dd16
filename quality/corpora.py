"""Corpora: a label file (TOML) plus the recipe to get the code it labels.

A label file ``quality/labels/<gap_type>/<name>.toml`` holds::

    description = "what the code is and why it is in the set"
    [source]                      # where the code comes from (never stored in the repo)
    kind = "pypi"                 # "pypi": a pinned sdist; "local": a path in an env var;
    package = "blinker"           # "none": the gap module builds its own input
    version = "1.8.2"
    sha256 = "..."                # optional pin of the downloaded archive
    # kind = "local": env = "KLOROS_TREE", revision = "<commit the labels were made at>"
    roots = ["src"]               # sub-directories analysed (default: the whole tree)
    [settings]                    # gap-type specific (e.g. emit_calls for orphaned_queue)
    [[label]]
    name = "the gap name as the monitor reports it"
    verdict = "true"              # "true": a real gap; "false": a false alarm
    how = "how it was decided (what was read)"
    group = "bug id"              # optional: for gap types that group several items
    slice = true                  # optional: part of the quick slice `make test` runs
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LABELS_DIR = Path(__file__).resolve().parent / "labels"
VERDICTS = ("true", "false")


class CorpusError(Exception):
    """A label file is malformed, or its code cannot be fetched."""


@dataclass(frozen=True, slots=True)
class Label:
    name: str
    verdict: bool
    how: str
    group: str | None = None
    slice: bool = False


@dataclass(frozen=True, slots=True)
class Corpus:
    gap_type: str
    name: str
    description: str
    source: dict[str, Any]
    roots: tuple[str, ...]
    settings: dict[str, Any]
    labels: tuple[Label, ...]
    path: Path
    """The label file."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.source.get("kind", "none"))

    def label_map(self) -> dict[str, Label]:
        return {label.name: label for label in self.labels}


def load_corpus(path: Path) -> Corpus:
    """Parse one label file; raises CorpusError with the reason."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise CorpusError(f"{path}: {err}") from None
    labels: list[Label] = []
    seen: set[str] = set()
    for i, raw in enumerate(data.get("label", [])):
        try:
            name, verdict, how = str(raw["name"]), str(raw["verdict"]), str(raw["how"])
        except KeyError as err:
            raise CorpusError(f"{path}: label {i} lacks {err}") from None
        if verdict not in VERDICTS:
            raise CorpusError(f"{path}: label {name!r}: verdict must be one of {VERDICTS}")
        if name in seen:
            raise CorpusError(f"{path}: label {name!r} appears twice")
        seen.add(name)
        group = raw.get("group")
        labels.append(
            Label(
                name, verdict == "true", how, str(group) if group else None, bool(raw.get("slice"))
            )
        )
    source = dict(data.get("source", {}))
    known = {
        k: v for k, v in data.items() if k not in ("description", "source", "settings", "label")
    }
    return Corpus(
        gap_type=path.parent.name,
        name=path.stem,
        description=str(data.get("description", "")),
        source=source,
        roots=tuple(str(r) for r in source.get("roots", ["."])),
        settings=dict(data.get("settings", {})),
        labels=tuple(labels),
        path=path,
        extra=known,
    )


def discover(labels_dir: Path = LABELS_DIR) -> list[Corpus]:
    """Every label file, by gap type then name."""
    return [load_corpus(p) for p in sorted(labels_dir.glob("*/*.toml"))]


def cache_dir() -> Path:
    """Where downloaded sdists and their unpacked trees go (``var/quality`` by default)."""
    default = Path(__file__).resolve().parent.parent / "var" / "quality"
    return Path(os.environ.get("KLOROS_QUALITY_CACHE", default))


def locate(corpus: Corpus, overrides: dict[str, Path] | None = None) -> tuple[Path | None, str]:
    """The corpus tree on this machine, fetching it if needed; (None, why) when skipped."""
    if overrides and corpus.name in overrides:
        return overrides[corpus.name], "given on the command line"
    kind = corpus.kind
    if kind == "local":
        env = str(corpus.source.get("env", ""))
        value = os.environ.get(env) if env else None
        if not value:
            return None, f"set {env} to a checkout to include it"
        tree = Path(value)
        if not tree.is_dir():
            return None, f"{env}={value} is not a directory"
        return tree, f"{env}={value}"
    if kind == "pypi":
        return fetch_sdist(
            str(corpus.source["package"]),
            str(corpus.source["version"]),
            corpus.source.get("sha256"),
        ), "PyPI sdist"
    if kind == "none":
        return None, "built by its gap module"
    raise CorpusError(f"{corpus.path}: unknown source kind {kind!r}")


def fetch_sdist(package: str, version: str, sha256: str | None = None) -> Path:
    """Download ``package==version``'s sdist (once) and unpack it; the unpacked tree."""
    root = cache_dir()
    tree = root / "src" / f"{package}-{version}"
    if (tree / ".complete").exists():
        return tree
    downloads = root / "sdists"
    downloads.mkdir(parents=True, exist_ok=True)
    archive = _find_archive(downloads, package, version)
    if archive is None:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--dest",
            str(downloads),
            f"{package}=={version}",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        archive = _find_archive(downloads, package, version)
        if archive is None:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise CorpusError(f"pip download {package}=={version} failed: {' | '.join(tail)}")
    if sha256:
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if digest != sha256:
            raise CorpusError(f"{archive.name}: sha256 {digest} is not the pinned {sha256}")
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    _unpack(archive, tree)
    (tree / ".complete").write_text(archive.name + "\n")
    return tree


def _find_archive(downloads: Path, package: str, version: str) -> Path | None:
    stems = {f"{package}-{version}", f"{package.replace('-', '_')}-{version}"}
    stems |= {s.lower() for s in stems}
    for path in sorted(downloads.iterdir()):
        for suffix in (".tar.gz", ".zip", ".tar.bz2", ".tgz"):
            if path.name.endswith(suffix) and path.name[: -len(suffix)] in stems:
                return path
    return None


def _unpack(archive: Path, dest: Path) -> None:
    """Unpack into ``dest``, stripping the archive's single top directory; nothing outside."""
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                target = _stripped(dest, info.filename)
                if target is None or info.is_dir():
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(info))
        return
    with tarfile.open(archive) as tf:
        for member in tf.getmembers():
            if not member.isfile():
                continue
            target = _stripped(dest, member.name)
            src = tf.extractfile(member)
            if target is None or src is None:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(src.read())


def _stripped(dest: Path, name: str) -> Path | None:
    parts = [p for p in Path(name).parts[1:] if p not in ("", ".")]
    if not parts or ".." in parts or Path(name).is_absolute():
        return None
    return dest.joinpath(*parts)
