"""The flow analysis walk (``analyze_tree``) against a bare ``ast.parse`` of the same files.

``make bench`` row: over the first ``FILES`` real files of the source-index corpus
(stdlib, site-packages, dist-packages), the seconds of ``ast.parse`` and of
``analyze_tree`` on the parsed trees, same run, the cyclic collector off (median of
``ROUNDS`` rounds).

Equivalence (not part of ``make bench``): ``python -m benchmarks.bench_flow_walk dump DIR``
writes a digest of every file's ``FileFlows.to_json()`` (orjson, sorted keys and insertion
order, two flow configs) over ``corpus(10000)`` and the KLoROS tree (if present);
``... compare DIR`` recomputes them and lists the files whose flows differ.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import gc
import hashlib
import json
import sys
import time
from pathlib import Path, PurePath
from typing import Any

import orjson

from kloros_stream.analysis.flows import FlowConfig, analyze_tree
from kloros_stream.analysis.pysource import SourceError, module_name, parse_module

from .bench_source_index import corpus
from .common import Report, median

FILES = 2000
ROUNDS = 3
KLOROS = Path("/work/corpora/kloros")
CONFIGS = {
    "default": FlowConfig(),
    "wide": FlowConfig.of(
        {"emit", "publish", "send", "put", "notify"},
        {"subscribe", "ChemSub", "UMNSub", "on", "connect", "listen"},
        ("Sub", "Subscriber", "Listener"),
    ),
}


def files(n: int) -> list[tuple[str, str, bytes]]:
    """(key, module name, source bytes) of the first ``n`` corpus files."""
    out = []
    for src, rel in corpus(n):
        module = module_name(PurePath(rel), PurePath(rel.parts[0]))
        out.append((str(rel), module, src.read_bytes()))
    return out


def kloros_files() -> list[tuple[str, str, bytes]]:
    if not KLOROS.is_dir():
        return []
    out = []
    for path in sorted(KLOROS.rglob("*.py")):
        if path.is_file():
            key = f"kloros/{path.relative_to(KLOROS)}"
            out.append((key, module_name(path, KLOROS), path.read_bytes()))
    return out


def parse_all(sources: list[tuple[str, str, bytes]]) -> tuple[float, list[tuple[str, Any]]]:
    """Seconds to parse every file, and (module, tree) of those that parse."""
    trees = []
    started = time.perf_counter()
    for key, module, source in sources:
        with contextlib.suppress(SyntaxError, ValueError):
            trees.append((module, ast.parse(source, filename=key)))
    return time.perf_counter() - started, trees


def measure(n: int = FILES, rounds: int = ROUNDS) -> dict[str, float]:
    sources = files(n)
    parse_s, walk_s = [], []
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            seconds, trees = parse_all(sources)
            parse_s.append(seconds)
            config = FlowConfig()
            started = time.perf_counter()
            for module, tree in trees:
                analyze_tree(tree, module, config)
            walk_s.append(time.perf_counter() - started)
            del trees
            gc.collect()
    finally:
        if enabled:
            gc.enable()
    return {"files": len(sources), "parse": median(parse_s), "walk": median(walk_s)}


def run(report: Report) -> None:
    got = measure()
    ratio = got["walk"] / got["parse"]
    report.add(
        "flow_walk",
        f"analyze_tree over {got['files']:.0f} real files (gc off, median of {ROUNDS})",
        f"{got['walk']:.2f} s ({ratio:.2f}x ast.parse)",
        f"ast.parse of the same files: {got['parse']:.2f} s",
        "python -m benchmarks flow_walk",
    )


def _dumps(data: Any, *, sort: bool) -> bytes:
    """orjson; the standard library's json for strings orjson refuses (lone surrogates)."""
    try:
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS if sort else None)
    except TypeError:
        return json.dumps(data, sort_keys=sort).encode()


def digests(n: int) -> dict[str, str]:
    """Per file and config: sha256 of the flows JSON (sorted keys | insertion order)."""
    out: dict[str, str] = {}
    for key, module, source in files(n) + kloros_files():
        try:
            tree = parse_module(source, key)
        except SourceError:
            continue
        for name, config in CONFIGS.items():
            data = analyze_tree(tree, module, config).to_json()
            a = hashlib.sha256(_dumps(data, sort=True)).hexdigest()
            b = hashlib.sha256(_dumps(data, sort=False)).hexdigest()
            out[f"{name}:{key}"] = f"{a}|{b}"
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_flow_walk")
    parser.add_argument("action", choices=("dump", "compare", "time"))
    parser.add_argument("directory", nargs="?", type=Path, default=Path("/tmp/flow-walk"))
    parser.add_argument("-n", type=int, default=10_000)
    args = parser.parse_args(argv)
    if args.action == "time":
        got = measure(args.n)
        print(
            f"{got['files']:.0f} files: ast.parse {got['parse']:.2f} s, analyze_tree "
            f"{got['walk']:.2f} s, ratio {got['walk'] / got['parse']:.2f}"
        )
        return 0
    target = args.directory / "digests.json"
    found = digests(args.n)
    if args.action == "dump":
        args.directory.mkdir(parents=True, exist_ok=True)
        target.write_bytes(orjson.dumps(found, option=orjson.OPT_SORT_KEYS))
        print(f"{len(found)} digests written to {target}")
        return 0
    before = orjson.loads(target.read_bytes())
    differ = sorted(k for k in before.keys() | found.keys() if before.get(k) != found.get(k))
    order_only = [
        k for k in differ if before.get(k, "|").split("|")[0] == found.get(k, "|").split("|")[0]
    ]
    for key in differ[:50]:
        print("DIFFERS", key, "(insertion order only)" if key in order_only else "")
    print(
        f"{len(found)} compared (of {len(before)} before), {len(differ)} differ, "
        f"{len(order_only)} of them in dict insertion order only"
    )
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
