"""Flow analysis of one file: every producer/consumer pattern, channel naming, filters."""

from __future__ import annotations

import textwrap

import pytest

from kloros_stream.analysis.flows import FileFlows, FlowConfig, analyze_source
from kloros_stream.analysis.pysource import SourceError

MOD = "pkg.mod"


def flows(source: str, config: FlowConfig | None = None) -> FileFlows:
    return analyze_source(textwrap.dedent(source), MOD, config)


def in_method(body: str, init: str = "self.q = []") -> FileFlows:
    """``body`` inside a method of class ``W`` whose ``__init__`` runs ``init``."""
    src = (
        "class W:\n    def __init__(self):\n        "
        + init
        + "\n    def work(self, x):\n"
        + textwrap.indent(textwrap.dedent(body), "        ")
    )
    return analyze_source(src, MOD)


CHANNEL = f"{MOD}.W.q"


# -- bus topics ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call",
    [
        'emit("X")',
        'emit(signal="X")',
        'publish("X")',
        'self.bus.emit("X", facts={})',
        'chem.publish(topic="X")',
    ],
)
def test_topic_producers(call: str) -> None:
    f = flows(f"def f(self):\n    {call}\n")
    assert set(f.topics_produced) == {"X"}
    assert f.topics_produced["X"] == (("f", 2),)


@pytest.mark.parametrize(
    "call",
    [
        'ChemSub("X", cb)',
        'UMNSub("X")',
        'bus.subscribe("X", handler)',
        'ChemSub(topic="X")',
        'subscribe(["X", "Y"])',
    ],
)
def test_topic_consumers(call: str) -> None:
    f = flows(f"{call}\n")
    assert "X" in f.topics_consumed
    assert not f.topics_produced


def test_non_literal_topics_are_ignored() -> None:
    f = flows("emit(name)\nsubscribe(handler)\npublish(x + y)\n")
    assert not f.topics_produced
    assert not f.topics_consumed


def test_topics_through_module_constants() -> None:
    f = flows(
        """
        CAPABILITY_GAP = "CAPABILITY_GAP"
        LOCAL: str = "LOCAL_TOPIC"
        lowercase = "not_a_constant"
        def go(bus):
            bus.emit(CAPABILITY_GAP, facts={})
            ChemSub(LOCAL)
            ChemSub([signals.VOICE_READY, OTHER])
            subscribe(handler)
            emit(IMPORTED)
        """
    )
    assert set(f.topics_produced) == {"CAPABILITY_GAP"}
    assert f.topics_consumed == {"LOCAL_TOPIC"}
    assert f.topic_refs == {"VOICE_READY", "OTHER"}
    assert f.constants == {"CAPABILITY_GAP": "CAPABILITY_GAP", "LOCAL": "LOCAL_TOPIC"}


def test_topic_call_names_come_from_config() -> None:
    config = FlowConfig.of(["send"], ["listen"], subscriber_suffixes=[])
    f = flows('send("A")\nemit("B")\nlisten("C")\nChemSub("D")\n', config)
    assert set(f.topics_produced) == {"A"}
    assert f.topics_consumed == {"C"}


# -- attribute producers ------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        "self.q.append(x)",
        "self.q.appendleft(x)",
        "self.q.extend([x])",
        "self.q.extendleft([x])",
        "self.q.insert(0, x)",
        "self.q.put(x)",
        "self.q.put_nowait(x)",
        "await self.q.put(x)",
        "self.q.add(x)",
        "self.q.update({x: 1})",
        "self.q[x] = 1",
        "self.q[x][0] = 1",
        "self.q[x] += 1",
        "self.q += [x]",
        "self.q = [x, 1]",
        "self.q = [y for y in x]",
        "self.q = {x: 1}",
        "loop.call_soon(self.q.put_nowait, x)",
    ],
)
def test_attribute_producers(body: str) -> None:
    f = in_method(body)
    assert CHANNEL in f.attrs_produced, body
    assert CHANNEL not in f.attrs_consumed, body
    function, line = f.attrs_produced[CHANNEL][0]
    assert line >= 4
    assert function in ("W.work", "W.work.<lambda>")


# -- attribute consumers ------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        "return self.q.pop()",
        "return self.q.popleft()",
        "return self.q.get()",
        "return await self.q.get()",
        "return self.q.get_nowait()",
        "for item in self.q:\n    print(item)",
        "return [i for i in self.q]",
        "return self.q[0]",
        "del self.q[0]",
        "return len(self.q)",
        "handle(self.q)",
        "handle(*self.q)",
        "return self.q",
        "return x in self.q",
        "if self.q:\n    pass",
        "batch = self.q",
        "return getattr(self, 'q')",
    ],
)
def test_attribute_consumers(body: str) -> None:
    f = in_method(body)
    assert CHANNEL in f.attrs_consumed, body


@pytest.mark.parametrize("body", ["self.q.clear()", "self.q.sort()", "self.q.reverse()"])
def test_neutral_methods_neither_produce_nor_consume(body: str) -> None:
    f = in_method(body)
    assert CHANNEL not in f.attrs_consumed
    assert CHANNEL not in f.attrs_produced


def test_method_call_on_self_is_not_a_data_read() -> None:
    f = in_method("self.process(x)")
    assert f"{MOD}.W.process" not in f.attrs_consumed


# -- channel naming -----------------------------------------------------------------------
def test_two_classes_with_the_same_attribute_do_not_collide() -> None:
    f = flows(
        """
        class Recorder:
            def add(self, x):
                self.buffer.append(x)

        class Player:
            def add(self, x):
                self.buffer.append(x)
            def drain(self):
                return self.buffer.pop()
        """
    )
    assert set(f.attrs_produced) == {f"{MOD}.Recorder.buffer", f"{MOD}.Player.buffer"}
    assert f.attrs_consumed == {f"{MOD}.Player.buffer"}


def test_cls_and_class_name_owners_resolve_to_the_class() -> None:
    f = flows(
        """
        class Registry:
            entries = []
            @classmethod
            def register(cls, x):
                cls.entries.append(x)

        def drain():
            return Registry.entries.pop()
        """
    )
    assert set(f.attrs_produced) == {f"{MOD}.Registry.entries"}
    assert f.attrs_consumed == {f"{MOD}.Registry.entries"}


def test_nested_classes_and_closures() -> None:
    f = flows(
        """
        class Outer:
            class Inner:
                def put(me, x):
                    me.items.append(x)
            def start(self):
                def callback(event):
                    self.events.append(event)
                return callback
            @staticmethod
            def helper(self):
                self.loose.append(1)
        """
    )
    assert set(f.attrs_produced) == {f"{MOD}.Outer.Inner.items", f"{MOD}.Outer.events"}
    assert f.attrs_produced[f"{MOD}.Outer.events"][0][0] == "Outer.start.callback"


def test_parameter_shadowing_self_is_not_the_instance() -> None:
    f = flows(
        """
        class A:
            def run(self):
                def inner(self):
                    self.q.append(1)
                return inner
        """
    )
    assert not f.attrs_produced


def test_unresolved_owner_reads_are_loose_consumers() -> None:
    f = flows(
        """
        def drain(monitor):
            while monitor.buffer:
                handle(monitor.buffer.popleft())
            monitor.other.append(1)
            return obj.results
        """
    )
    assert {"buffer", "results"} <= f.loose_consumed
    assert "other" not in f.loose_consumed  # a producer through an unknown owner
    assert not f.attrs_produced


def test_method_names_are_not_loose_reads() -> None:
    f = flows("d.items()\nx.process(1)\n")
    assert "items" not in f.loose_consumed
    assert "process" not in f.loose_consumed


def test_derived_classes_consume_loosely_and_produce_inherited_channels() -> None:
    f = flows(
        """
        class Child(Base):
            def add(self, x):
                self.pending.append(x)
            def drain(self):
                return self.backlog.pop()

        class Plain(object):
            def add(self, x):
                self.pending.append(x)
        """
    )
    assert f.inherited == {f"{MOD}.Child.pending"}
    assert "backlog" in f.loose_consumed
    assert f"{MOD}.Child.backlog" in f.attrs_consumed


# -- configuration filter -----------------------------------------------------------------
@pytest.mark.parametrize(
    "init",
    [
        'self.wake_phrases = ["kloros", "hey kloros"]',
        "self.limits = {'a': 1, 'b': (2, 3)}",
        "self.q = []",
        "self.q = {}",
        "self.q = [MAX, -1, None, f'x']",
        "self.q = set()",
    ],
)
def test_literal_only_attributes_are_configuration(init: str) -> None:
    f = in_method("pass", init=init)
    assert not f.attrs_produced


def test_configuration_that_is_mutated_is_a_queue() -> None:
    f = in_method("self.q.append(x)", init='self.q = ["seed"]')
    assert CHANNEL in f.attrs_produced


# -- robustness ---------------------------------------------------------------------------
def test_syntax_error_raises_source_error() -> None:
    with pytest.raises(SourceError):
        analyze_source(b"def broken(:\n", MOD)


def test_json_round_trip() -> None:
    f = flows(
        """
        class W:
            def go(self, x):
                self.q.append(x)
                emit("T")
                ChemSub("U")
                ChemSub(topics.V)
                return other.thing
        V = "v"
        """
    )
    assert FileFlows.from_json(f.to_json()) == f


def test_producer_sites_are_bounded() -> None:
    body = "\n".join(f"        self.q.append({i})" for i in range(50))
    f = analyze_source(f"class W:\n    def go(self):\n{body}\n", MOD)
    assert len(f.attrs_produced[CHANNEL]) == 20


def test_module_level_code_sites() -> None:
    f = flows('emit("BOOT")\n')
    assert f.topics_produced["BOOT"] == (("<module>", 1),)


def test_deeply_nested_code_does_not_exhaust_the_recursion_limit() -> None:
    terms = " + ".join(["self.q.pop()"] * 2000)
    f = analyze_source(f"class W:\n    def f(self):\n        return {terms}\n", MOD)
    assert f.attrs_consumed == {CHANNEL}


def test_sites_are_in_source_order() -> None:
    f = in_method("self.q.append(1)\nself.q.append(2)\nself.q.append(3)")
    assert [line for _f, line in f.attrs_produced[CHANNEL]] == [5, 6, 7]
