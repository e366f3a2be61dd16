"""Incremental flow index: orphans appear and resolve as files change, across files."""

from __future__ import annotations

import textwrap

from kloros_stream.analysis.flow_index import Channel, ChannelKind, FlowIndex
from kloros_stream.analysis.flows import FileFlows, analyze_source


def fl(module: str, source: str) -> FileFlows:
    return analyze_source(textwrap.dedent(source), module)


def attr(name: str) -> Channel:
    return Channel(ChannelKind.ATTRIBUTE, name)


def topic(name: str) -> Channel:
    return Channel(ChannelKind.TOPIC, name)


PRODUCER = """
class Worker:
    def feed(self, x):
        self.pending.append(x)
        emit("JOB_DONE")
"""
Q = attr("a.Worker.pending")


def test_orphan_appears_and_is_resolved_by_a_consumer_in_another_file() -> None:
    index = FlowIndex()
    delta = index.update("a.py", fl("a", PRODUCER))
    assert delta.appeared == (Q, topic("JOB_DONE"))
    assert not delta.resolved

    consumer = 'from a import Worker\nChemSub("JOB_DONE")\ndef f(w):\n    w.pending.pop()\n'
    delta = index.update("b.py", fl("b", consumer))
    assert delta.resolved == (Q, topic("JOB_DONE"))
    assert index.orphans() == frozenset()

    delta = index.remove("b.py")
    assert delta.appeared == (Q, topic("JOB_DONE"))


def test_changed_file_replaces_its_old_flows() -> None:
    index = FlowIndex()
    index.update("a.py", fl("a", PRODUCER))
    consumer_added = PRODUCER + "    def drain(self):\n        return self.pending.pop()\n"
    delta = index.update("a.py", fl("a", consumer_added))
    assert delta.resolved == (Q,)
    delta = index.update("a.py", fl("a", PRODUCER))
    assert delta.appeared == (Q,)


def test_producer_going_away_resolves_the_orphan() -> None:
    index = FlowIndex()
    index.update("a.py", fl("a", PRODUCER))
    delta = index.remove("a.py")
    assert set(delta.resolved) == {Q, topic("JOB_DONE")}
    assert len(index) == 0
    assert index.orphans() == frozenset()


def test_same_attribute_in_two_classes_is_two_channels() -> None:
    index = FlowIndex()
    src = """
    class A:
        def put(self, x):
            self.buffer.append(x)
    class B:
        def put(self, x):
            self.buffer.append(x)
        def get(self):
            return self.buffer.pop()
    """
    delta = index.update("m.py", fl("m", src))
    assert delta.appeared == (attr("m.A.buffer"),)


def test_exact_consumer_of_another_class_does_not_resolve() -> None:
    index = FlowIndex()
    index.update("a.py", fl("a", PRODUCER))
    other = "class Other:\n    def f(self):\n        self.pending.pop()\n"
    delta = index.update("b.py", fl("b", other))
    assert not delta
    assert index.is_orphan(Q)


def test_a_loose_read_reaches_only_its_own_module_and_the_modules_it_imports() -> None:
    index = FlowIndex()
    index.update("a.py", fl("a", PRODUCER))
    index.update("c.py", fl("c", "class C:\n    def f(self, x):\n        self.pending.add(x)\n"))
    assert index.orphans() >= {Q, attr("c.C.pending")}
    # An unresolved ``w.pending`` in a file that imports neither module reaches neither.
    assert not index.update("x.py", fl("x", "def drain(w):\n    return w.pending\n"))
    delta = index.update("b.py", fl("b", "import a\ndef drain(w):\n    return w.pending\n"))
    assert set(delta.resolved) == {Q}
    assert index.is_orphan(attr("c.C.pending"))
    # A second reader changes nothing; removing one of two keeps the channel consumed.
    assert not index.update(
        "d.py", fl("d", "from a import Worker\ndef d(w):\n    return w.pending\n")
    )
    assert not index.remove("b.py")
    assert set(index.remove("d.py").appeared) == {Q}
    # A read in the producing module itself reaches it.
    local = (
        "class C:\n    def f(self, x):\n        self.pending.add(x)\n"
        "def g(c):\n    return c.pending\n"
    )
    assert set(index.update("c.py", fl("c", local)).resolved) == {attr("c.C.pending")}


def test_a_file_keeps_its_imports_only_while_it_reads_attributes_loosely() -> None:
    """The imports are what a loose read reaches; a file without one keeps none."""
    index = FlowIndex()
    index.update("a.py", fl("a", PRODUCER))
    index.update("b.py", fl("b", "import a\nimport os\ndef drain(w):\n    return w.pending\n"))
    assert index.files["b.py"].imports == ("a", "os")
    assert index.files["a.py"].imports == ()
    assert not index.is_orphan(Q)
    index.update("b.py", fl("b", "import a\nimport os\ndef drain(w):\n    return 1\n"))
    assert index.files["b.py"].imports == ()
    assert index.is_orphan(Q)


def test_subscription_through_a_constant_defined_in_another_file() -> None:
    index = FlowIndex()
    index.update("a.py", fl("a", 'def go(bus):\n    bus.emit("CAPABILITY_GAP")\n'))
    gap = topic("CAPABILITY_GAP")
    assert index.is_orphan(gap)
    # The subscriber names a constant it imports; the value lives in another file.
    assert not index.update("c.py", fl("c", "ChemSub(signals.CAPABILITY_GAP, handle)\n"))
    delta = index.update("signals.py", fl("signals", 'CAPABILITY_GAP = "CAPABILITY_GAP"\n'))
    assert delta.resolved == (gap,)
    assert index.remove("c.py").appeared == (gap,)
    assert index.update("c.py", fl("c", "ChemSub(CAPABILITY_GAP)\n")).resolved == (gap,)
    assert index.remove("signals.py").appeared == (gap,)


def test_inheritance_in_both_directions_counts_as_consumed() -> None:
    index = FlowIndex()
    base = "class Base:\n    def add(self, x):\n        self.items.append(x)\n"
    index.update("base.py", fl("base", base))
    assert index.is_orphan(attr("base.Base.items"))
    child = (
        "from base import Base\n"
        "class Child(Base):\n    def drain(self):\n        return self.items.pop()\n"
    )
    delta = index.update("child.py", fl("child", child))
    assert delta.resolved == (attr("base.Base.items"),)

    index2 = FlowIndex()
    index2.update(
        "base.py",
        fl("base", "class Base:\n    def drain(self):\n        return self.items.pop()\n"),
    )
    delta = index2.update(
        "child.py",
        fl("child", "class Child(Base):\n    def add(self, x):\n        self.items.append(x)\n"),
    )
    assert not delta.appeared
    assert not index2.orphans()
    assert index2.remove("base.py").appeared == (attr("child.Child.items"),)


def test_identical_update_is_a_no_op() -> None:
    index = FlowIndex()
    flows = fl("a", PRODUCER)
    index.update("a.py", flows)
    assert not index.update("a.py", flows)
    assert not index.remove("missing.py")


def test_producer_sites_for_facts() -> None:
    index = FlowIndex()
    index.update("a.py", fl("a", PRODUCER))
    index.update("z.py", fl("z", 'def g():\n    publish("JOB_DONE")\n'))
    sites = index.producers(topic("JOB_DONE"))
    assert [(s.path, s.module, s.function, s.line) for s in sites] == [
        ("a.py", "a", "Worker.feed", 5),
        ("z.py", "z", "g", 2),
    ]
    assert index.producers(topic("JOB_DONE"), limit=1)[0].path == "a.py"
    assert index.producer_count(topic("JOB_DONE")) == 2


def test_json_round_trip_restores_orphans_and_skips_bad_entries() -> None:
    index = FlowIndex()
    index.update("a.py", fl("a", PRODUCER))
    index.update("b.py", fl("b", 'ChemSub("JOB_DONE")\n'))
    data = index.to_json()
    data["files"]["bad.py"] = {"module": "bad"}
    restored, skipped = FlowIndex.from_json(data)
    assert skipped == ["bad.py"]
    assert restored.orphans() == index.orphans() == frozenset({Q})
    assert set(restored.files) == {"a.py", "b.py"}


def test_from_json_of_garbage_is_empty() -> None:
    for data in (None, [], {"format": 99}, {"format": 1, "files": []}):
        restored, skipped = FlowIndex.from_json(data)
        assert len(restored) == 0
        assert skipped == []


def test_counts_return_to_zero_after_removing_everything() -> None:
    index = FlowIndex()
    sources = {
        "a.py": fl("a", PRODUCER),
        "b.py": fl("b", "def d(w):\n    return w.pending\n"),
        "c.py": fl("c", "class C(B):\n    def f(self, x):\n        self.pending.add(x)\n"),
        "d.py": fl("d", 'T = "t"\nemit("t")\nChemSub(mod.U)\n'),
    }
    for path, flows in sources.items():
        index.update(path, flows)
    for path in sources:
        index.remove(path)
    assert index.orphans() == frozenset()
    assert index.to_json()["files"] == {}
    assert not any(
        (
            index._produced,
            index._consumed,
            index._loose,
            index._inherited,
            index._exact_by_attr,
            index._producer_files,
            index._loose_readers,
            index._ref_files,
            index._by_attr,
            index._topic_refs,
            index._names_of_value,
            index._values_of_name,
            index._json,
        )
    )


def test_a_loose_read_in_a_module_of_the_same_package_reaches() -> None:
    index = FlowIndex()
    index.update("pkg/a.py", fl("pkg.a", PRODUCER))
    assert index.is_orphan(attr("pkg.a.Worker.pending"))
    delta = index.update("pkg/b.py", fl("pkg.b", "def drain(w):\n    return w.pending.pop()\n"))
    assert attr("pkg.a.Worker.pending") in delta.resolved
    assert not index.update("other/c.py", fl("other.c", "def f(w):\n    return w.pending\n"))


def _real_flows() -> list[tuple[str, FileFlows]]:
    """The flows of this repository's own package and tests: real, varied code."""
    from pathlib import Path

    from kloros_stream.analysis.pysource import SourceError

    repo = Path(__file__).resolve().parent.parent
    out = []
    for path in sorted([*repo.glob("kloros_stream/**/*.py"), *repo.glob("tests/**/*.py")]):
        module = ".".join(path.relative_to(repo).with_suffix("").parts)
        try:
            out.append((str(path), analyze_source(path.read_text(), module)))
        except SourceError:
            continue
    return out


def _state(index: FlowIndex) -> tuple[frozenset[Channel], dict[Channel, list[object]]]:
    return index.orphans(), {c: index.producers(c) for c in sorted(index.orphans())}


def test_a_bulk_load_ends_in_the_state_of_file_by_file_updates() -> None:
    files = _real_flows()
    assert len(files) > 100
    one_by_one = FlowIndex()
    for path, flows in files:
        one_by_one.update(path, flows)
    for path, _flows in files[::7]:
        one_by_one.remove(path)
    one_by_one.update("x.py", fl("x", PRODUCER))

    bulk = FlowIndex()
    bulk.update("x.py", fl("x", PRODUCER))  # state before the bulk load
    bulk.update("gone.py", fl("gone", PRODUCER.replace("JOB_DONE", "GONE")))
    bulk.begin_bulk()
    for path, flows in files:
        assert not bulk.update(path, flows)  # evaluated only at the end
    for path, _flows in files[::7]:
        bulk.remove(path)
    bulk.remove("gone.py")
    delta = bulk.end_bulk()
    assert topic("GONE") in delta.resolved
    assert _state(bulk) == _state(one_by_one)
    assert one_by_one.orphans()  # the comparison is not between two empty states


def test_producing_in_holds_for_every_listed_producer() -> None:
    """The cheap test the integration monitor filters evidence refreshes with: true for
    every file :meth:`producers` lists (never skips a refresh), false for most others."""
    index = FlowIndex()
    files = _real_flows()
    for path, flows in files:
        index.update(path, flows)
    wrapped = fl("w", "def send(topic):\n    emit(topic)\n")
    index.update("w.py", wrapped)
    index.update("u.py", fl("u", "from w import send\nsend('VIA_WRAPPER')\n"))
    orphans = sorted(index.orphans())
    assert topic("VIA_WRAPPER") in orphans
    skipped = 0
    for path in [p for p, _f in files[::5]] + ["u.py"]:
        test = index.producing_in({path})
        for channel in orphans:
            if path in {site.path for site in index.producers(channel, 10)}:
                assert test(channel), (path, channel)
            else:
                skipped += not test(channel)
    assert skipped > 0.9 * len(orphans) * (len(files[::5]) + 1) - len(orphans)


def test_wrapper_join_kept_incrementally_equals_a_fresh_join() -> None:
    from kloros_stream.analysis.flow_model import FileHead
    from kloros_stream.analysis.flow_wrappers import WrapperJoin

    def swap(join: WrapperJoin, path: str, old: FileFlows | None, new: FileFlows | None) -> None:
        join.replace(path, old, new, FileHead.of(new) if new is not None else None)

    wrapper = "def send(topic):\n    emit(topic)\n"
    caller = "from w import send\nsend('T{n}')\nsend('SHARED')\n"
    files = {f"c{n}.py": fl(f"c{n}", caller.format(n=n)) for n in range(30)}
    files["w.py"] = fl("w", wrapper)
    live = WrapperJoin()
    for path, flows in files.items():
        swap(live, path, None, flows)
    for n in range(0, 30, 3):  # edits and deletions of callers, the wrapper going and back
        path = f"c{n}.py"
        new = fl(f"c{n}", caller.format(n=n + 100))
        swap(live, path, files[path], new)
        files[path] = new
    swap(live, "w.py", files["w.py"], None)
    swap(live, "w.py", None, files["w.py"])
    for path in ("c1.py", "c2.py"):
        swap(live, path, files.pop(path), None)
    fresh = WrapperJoin()
    for path, flows in files.items():
        swap(fresh, path, None, flows)
    bulk = WrapperJoin()  # joins deferred to the end of a bulk load
    bulk.begin_bulk()
    for path, flows in files.items():
        swap(bulk, path, None, flows)
    assert "T103" in bulk.end_bulk()
    for join in (fresh, bulk):
        assert live.produced == join.produced and live.consumed == join.consumed
        assert live.sites("T103", 5) == join.sites("T103", 5)
    assert live.produced["SHARED"] == 28 and "T100" in live.produced and "T1" not in live.produced


def test_produced_by_lists_every_channel_a_file_is_a_listed_producer_of() -> None:
    index = FlowIndex()
    files = _real_flows()
    for path, flows in files:
        index.update(path, flows)
    orphans = sorted(index.orphans())
    checked = 0
    for path, _flows in files:
        here = index.produced_by({path})
        assert here is not None  # no wrapper calls in this code
        for channel in orphans:
            if path in {site.path for site in index.producers(channel, 10)}:
                assert channel in here, (path, channel)
                checked += 1
    assert checked > 0
    index.update("w.py", fl("w", "def send(topic):\n    emit(topic)\n"))
    index.update("u.py", fl("u", "from w import send\nsend('VIA_WRAPPER')\n"))
    assert index.produced_by({"u.py"}) is None


class CountingPacked:
    """A packed source that counts its decodes (the index must not decode to answer)."""

    decodes = 0

    def __init__(self, flows: FileFlows) -> None:
        self._flows = flows

    @property
    def flows(self) -> FileFlows:
        CountingPacked.decodes += 1
        return self._flows


def test_queries_through_wrappers_and_consumers_decode_no_bystander() -> None:
    index = FlowIndex()
    files = {"w.py": fl("w", "def send(topic):\n    emit(topic)\n")}
    files.update({f"c{n}.py": fl(f"c{n}", f"from w import send\nsend('T{n:03d}')\n")
                  for n in range(60)})
    files.update({f"s{n}.py": fl(f"s{n}", f"ChemSub('T{n:03d}', print)\n")
                  for n in range(0, 60, 2)})
    files["p.py"] = fl("p", "subscribe('T005', print)\n")
    index.begin_bulk()
    for path, flows in files.items():
        index.update(path, flows, packed=CountingPacked(flows))  # type: ignore[arg-type]
    index.end_bulk()
    assert Channel(ChannelKind.TOPIC, "T001") in index.orphans()
    CountingPacked.decodes = 0
    callers = {"c3.py"}
    produced_here = index.producing_in(callers)
    for n in range(60):
        channel = Channel(ChannelKind.TOPIC, f"T{n:03d}")
        sites = index.producers(channel)
        assert [s.path for s in sites] == [f"c{n}.py"] and sites[0].module == f"c{n}"
        assert index.producer_count(channel) == 1
        assert produced_here(channel) == (n == 3)
    assert CountingPacked.decodes == 0  # the wrapper's calls are kept decoded
    site = index.consumer(Channel(ChannelKind.TOPIC, "T004"))  # not among the changed files
    assert site is not None and site.path == "s4.py"
    site = index.consumer(Channel(ChannelKind.TOPIC, "T005"), first=["c5.py", "p.py"])
    assert site is not None and site.path == "p.py"
    assert CountingPacked.decodes == 2  # each consumer's own file, nothing else


def test_an_unchanged_update_keeps_the_new_packed_source_only() -> None:
    index = FlowIndex()
    flows = fl("c", "from w import send\nsend('T')\n")
    first, second = CountingPacked(flows), CountingPacked(flows)
    index.update("c.py", flows, packed=first)  # type: ignore[arg-type]
    index.update("c.py", flows, packed=second)  # type: ignore[arg-type]
    assert index.files["c.py"].source is second
    assert index._wrap._files["send"]["c.py"] is index.files["c.py"]
