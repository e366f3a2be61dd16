"""Flow rules that keep orphaned_queue true on real code: callee resolution, literal
topics, subscriber classes, history comparisons, collection attributes, wrappers,
framework receivers, topic patterns. Snippets describe each pattern (written here)."""

from __future__ import annotations

import textwrap

import pytest

from kloros_stream.analysis.flow_index import Channel, ChannelKind, FlowIndex
from kloros_stream.analysis.flows import FileFlows, FlowConfig, analyze_source

MOD = "pkg.mod"


def flows(source: str, module: str = MOD, config: FlowConfig | None = None) -> FileFlows:
    return analyze_source(textwrap.dedent(source), module, config)


def orphans(*files: tuple[str, str], prefix_match: bool = True) -> set[str]:
    index = FlowIndex(prefix_match=prefix_match)
    for module, source in files:
        index.update(module.replace(".", "/") + ".py", flows(source, module))
    return {c.name for c in index.orphans()}


# -- callee resolution ----------------------------------------------------------------------
def test_a_local_logging_helper_named_emit_is_not_a_publish() -> None:
    f = flows(
        """
        def run(logger):
            def emit(name, **payload):
                logger.log_event(name, **payload)
            emit("turn_start", n=1)
        """
    )
    assert not f.topics_produced


def test_a_fallback_def_of_an_imported_emit_is_not_a_publish() -> None:
    f = flows(
        """
        try:
            from shared.eventlog import emit
        except ImportError:
            def emit(event, **fields):
                pass
        emit("memory.promoted", score=1)
        """
    )
    assert not f.topics_produced


def test_a_wrapper_that_passes_its_parameter_as_topic_is_a_publish() -> None:
    f = flows(
        """
        class Monitor:
            def _emit_signal(self, signal_type, facts):
                self.chem_pub.emit(signal=signal_type, ecosystem="x", facts=facts)
            def check(self):
                self._emit_signal("HEALTH_ALERT", {})
        def announce(name):
            publish(f"menu:{name}")
        announce("open")
        """
    )
    assert set(f.topics_produced) == {"HEALTH_ALERT", "menu:open"}


def test_a_subscribe_wrapper_in_a_loop_over_event_handler_pairs() -> None:
    f = flows(
        """
        class Ui:
            def register_events(self, events):
                for name, handler in events:
                    subscribe(name, handler)
            def start(self):
                for event, handler in [("connected", self.a), ("lost", self.b)]:
                    subscribe(event, handler)
        """
    )
    assert f.topics_consumed == {"connected", "lost"}


# -- topics the code makes plain ----------------------------------------------------------
def test_topics_through_variables_loops_tables_and_fstrings() -> None:
    f = flows(
        """
        NAMES = {"high": "Q_HIGH", "low": "Q_LOW"}
        class Orchestrator:
            SERVICES = [("A", "Q_A", "Q_A.DONE"), ("B", "Q_B", "Q_B.DONE")]
            def start(self):
                for name, _, done in self.SERVICES:
                    UMNSub(topic=done, on_json=print)
                for level in ["high", "low"]:
                    UMNSub(topic=NAMES[level], on_json=print)
                for kind in ("x", "y"):
                    subscribe(f"job:{kind}")
                signal = "Q_PLAIN"
                emit(signal=signal, ecosystem="e")
        """
    )
    assert f.topics_consumed == {"Q_A.DONE", "Q_B.DONE", "Q_HIGH", "Q_LOW", "job:x", "job:y"}
    assert set(f.topics_produced) == {"Q_PLAIN"}


def test_enum_members_and_their_values_are_topics() -> None:
    f = flows(
        """
        from enum import Enum
        class Sig(str, Enum):
            READY = "SVC_READY"
            DONE = "SVC_DONE"
        SVC_DONE = Sig.DONE.value
        emit(Sig.READY.value, ecosystem="e")
        UMNSub(SVC_DONE, print)
        """
    )
    assert set(f.topics_produced) == {"SVC_READY"}
    assert f.topics_consumed == {"SVC_DONE"}
    assert f.constants["SVC_DONE"] == "SVC_DONE"


def test_a_topic_emitted_through_a_constant_imported_from_another_module() -> None:
    signals = (
        'from enum import Enum\nclass S(str, Enum):\n    DONE = "Q_DONE"\nQ_DONE = S.DONE.value\n'
    )
    producer = "from pkg.signals import Q_DONE\nemit(signal=Q_DONE, ecosystem='e')\n"
    assert orphans(("pkg.signals", signals), ("pkg.worker", producer)) == {"Q_DONE"}
    consumer = "UMNSub('Q_DONE', print)\n"
    assert orphans(("pkg.signals", signals), ("pkg.worker", producer), ("pkg.c", consumer)) == set()


def test_subscriber_classes_by_name_suffix_and_configurable() -> None:
    src = "_ZmqSub(topic='T1', on_message=print)\nEventSubscriber('T2')\n"
    assert flows(src).topics_consumed == {"T1", "T2"}
    none = FlowConfig.of(["emit"], ["subscribe"], subscriber_suffixes=[])
    assert flows(src, config=none).topics_consumed == frozenset()


# -- matching -------------------------------------------------------------------------------
def test_prefix_subscriptions_match_like_zeromq_but_an_empty_one_is_a_tap() -> None:
    producer = "emit('VOICE.TTS.READY', ecosystem='v')\nemit('OTHER', ecosystem='v')\n"
    consumer = "UMNSub('VOICE.TTS', print)\nChemSub(topic='', on_json=print)\n"
    files = (("pkg.p", producer), ("pkg.c", consumer))
    assert orphans(*files) == {"OTHER"}
    assert orphans(*files, prefix_match=False) == {"VOICE.TTS.READY", "OTHER"}


def test_fstring_topics_are_patterns() -> None:
    producer = "def go(state):\n    emit(f'job_state:{state}', ecosystem='e')\n"
    assert flows(producer).topics_produced.keys() == {"job_state:*"}
    assert orphans(("pkg.p", producer)) == {"job_state:*"}
    assert orphans(("pkg.p", producer), ("pkg.c", "subscribe('job_state:done')\n")) == set()


def test_history_replay_comparisons_consume() -> None:
    f = flows(
        """
        def replay(history):
            for msg in history:
                if msg.get("signal") == "METRICS":
                    pass
                if msg["signal"] in ("A", "B"):
                    pass
                signal = msg.get("signal")
                if signal in ["C"]:
                    pass
        """
    )
    assert f.topics_consumed == {"METRICS", "A", "B", "C"}


def test_comparisons_in_tests_are_assertions_not_consumers() -> None:
    src = "def test_x(e):\n    assert e['signal'] == 'X'\n"
    assert flows(src, module="tests.test_x").topics_consumed == frozenset()


# -- receivers ------------------------------------------------------------------------------
def test_a_toolkit_widget_signal_is_not_a_bus_publish() -> None:
    widget = """
        from gi.repository import GObject, Gtk
        class ValueList:
            def add(self, v):
                self.emit("value-added", v)
        class Chooser(Gtk.Box, ValueList, GObject.GObject):
            pass
        """
    f = flows(widget)
    assert f.topic_guards == {
        "value-added": ("gi.repository.GObject.GObject", "gi.repository.Gtk.Box")
    }
    assert orphans(("pkg.mod", textwrap.dedent(widget))) == set()


def test_an_in_tree_observable_base_keeps_self_notify_a_publish() -> None:
    base = "class Observable:\n    def notify(self, name):\n        pass\n"
    client = (
        "from pkg.util import Observable\n"
        "class Client(Observable):\n    def go(self):\n        self.notify('ready')\n"
    )
    cfg = FlowConfig.of(["notify"], ["subscribe"])
    index = FlowIndex()
    index.update("pkg/util.py", flows(base, "pkg.util", cfg))
    index.update("pkg/client.py", flows(client, "pkg.client", cfg))
    assert {c.name for c in index.orphans()} == {"ready"}


# -- attributes -----------------------------------------------------------------------------
def test_add_on_a_client_object_is_not_a_queue() -> None:
    f = flows(
        """
        class Logger:
            def __init__(self):
                self.vector_store = get_vector_store()
                self.seen = set()
            def log(self, doc):
                self.vector_store.add(doc)
                self.seen.add(doc)
        """
    )
    assert set(f.attrs_produced) == {f"{MOD}.Logger.seen"}


def test_a_dict_filled_by_item_assignment_and_never_read_is_an_orphan() -> None:
    src = (
        "class P:\n    def __init__(self):\n        self.keys = {}\n"
        "    def bind(self, k, v):\n        self.keys[k] = v\n"
    )
    assert orphans(("pkg.p", src)) == {"pkg.p.P.keys"}


@pytest.mark.parametrize("init", ["[]", "deque(maxlen=3)", "field(default_factory=list)"])
def test_collections_initialised_in_many_ways_are_queues(init: str) -> None:
    src = (
        f"class P:\n    def __init__(self):\n        self.q = {init}\n"
        "    def put(self, x):\n        self.q.append(x)\n"
    )
    assert flows(src).attrs_produced.keys() == {f"{MOD}.P.q"}


def test_channel_kinds_in_the_index() -> None:
    index = FlowIndex()
    index.update("a.py", flows("emit('T', ecosystem='e')\n", "a"))
    assert index.orphans() == {Channel(ChannelKind.TOPIC, "T")}


# -- wrappers across modules, formatted names ---------------------------------------------
def test_a_wrapper_defined_in_another_module_is_followed() -> None:
    stream = """
        class Stream:
            def event_handler(self, name, handler):
                self.add_event_handler(name, handler)
            def announce(self, name):
                self.event(name)
        """
    user = """
        def join(xmpp, room):
            xmpp.event_handler("muc::%s::got_online" % room, print)
            xmpp.announce("joined")
        """
    cfg = FlowConfig.of(["event"], ["add_event_handler"])
    index = FlowIndex()
    index.update("pkg/stream.py", flows(stream, "pkg.stream", cfg))
    index.update("pkg/user.py", flows(user, "pkg.user", cfg))
    assert {c.name for c in index.orphans()} == {"joined"}
    raiser = "def on_presence(xmpp, room):\n    xmpp.event('muc::%s::got_online' % room)\n"
    index.update("pkg/muc.py", flows(raiser, "pkg.muc", cfg))
    assert {c.name for c in index.orphans()} == {"joined"}  # the pattern has a handler
    index.remove("pkg/user.py")
    assert {c.name for c in index.orphans()} == {"muc::*::got_online"}
    [site] = index.producers(Channel(ChannelKind.TOPIC, "muc::*::got_online"))
    assert (site.path, site.line) == ("pkg/muc.py", 2)


@pytest.mark.parametrize(
    ("expr", "pattern"),
    [
        ("'muc::%s::presence' % room", "muc::*::presence"),
        ("'menu:{}'.format(name)", "menu:*"),
        ("'job.' + state", "job.*"),
        ("f'job_state:{state}'", "job_state:*"),
        ("'%s_%s' % (a, b)", None),
    ],
)
def test_names_built_at_run_time_are_patterns(expr: str, pattern: str | None) -> None:
    f = flows(f"def go(room, name, state, a, b, xmpp):\n    xmpp.x = 1\n    emit({expr})\n")
    assert set(f.topics_produced) == ({pattern} if pattern else set())


def test_percent_formatting_over_known_values_is_resolved() -> None:
    f = flows("for kind in ('a', 'b'):\n    emit('job.%s' % kind)\n")
    assert set(f.topics_produced) == {"job.a", "job.b"}


def test_a_nested_toolkit_class_signal_is_not_a_publish() -> None:
    src = """
        from gi.repository import Gtk
        class View:
            class Column(Gtk.TreeViewColumn):
                def on_press(self, widget, event):
                    self.emit("button-press-event", event)
        """
    assert orphans(("pkg.view", textwrap.dedent(src))) == set()


def test_a_callback_kept_as_an_attribute_is_not_a_toolkit_signal() -> None:
    src = """
        import asyncio
        class Proto(asyncio.Protocol):
            def __init__(self, event):
                self.event = event
            def data_received(self, data):
                self.event("socks_data", data)
        """
    cfg = FlowConfig.of(["event"], ["add_event_handler"])
    assert set(flows(src, config=cfg).topics_produced) == {"socks_data"}
    assert flows(src, config=cfg).topic_guards == {}


def test_attributes_read_dynamically_or_by_a_library_base_are_consumed() -> None:
    dynamic = """
        class Record:
            def __init__(self):
                self.items = []
            def add(self, x):
                self.items.append(x)
            def dump(self):
                return vars(self)
        """
    assert orphans(("pkg.rec", textwrap.dedent(dynamic))) == set()
    library = """
        import threading
        class Worker(threading.Thread):
            def __init__(self):
                self.jobs = []
            def add(self, x):
                self.jobs.append(x)
        """
    assert orphans(("pkg.worker", textwrap.dedent(library))) == set()


def test_an_attribute_only_ever_set_to_literals_names_its_topics() -> None:
    src = """
        class Stream:
            def __init__(self):
                self.when_connected = "connected"
            def start_tls(self):
                self.when_connected = "tls_success"
            def on_connect(self):
                self.event(self.when_connected)
            def other(self, name):
                self.target = name
                self.target = "fixed"
                self.event(self.target)
        """
    cfg = FlowConfig.of(["event"], ["add_event_handler"])
    assert set(flows(src, config=cfg).topics_produced) == {"connected", "tls_success"}
