"""Config: the contract's defaults, strict validation naming the key, path resolution and
config lookup (``--config``, ``$KLOROS_STREAM_CONFIG``, ``./config.toml``, defaults)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from kloros_stream.cli import main
from kloros_stream.config import (
    ENV_VAR,
    MONITOR_NAMES,
    Config,
    ConfigError,
    load_config,
    parse_config,
)

# The ``config.toml`` block of the contract, verbatim: every key with its default.
CONTRACT_TOML = """
[service]
state_dir = "var/state"
log_level = "info"

[bus]
maxsize = 10000

[feed]
path = "var/curiosity_feed.jsonl"
snapshot_path = ""
compact_bytes = 67108864

[curiosity]
suppress = []

[history]
path = ""
max_bytes = 104857600

[http]
host = "127.0.0.1"
port = 8765

[monitors.exception]
enabled = true
journal = true
journalctl = "journalctl"
namespace = ""
units = ["kloros-*"]
identifiers = []
log_files = []

[monitors.integration]
enabled = true
roots = ["src"]
exclude = [".git", ".venv", "venv", "__pycache__", "node_modules"]

[monitors.chaos]
enabled = true
history_file = "var/chaos_history.jsonl"

[monitors.test]
enabled = true
results_dir = "var/test-results"

[monitors.module_discovery]
enabled = true
roots = ["src"]

[monitors.capability_discovery]
enabled = true
required_executables = []
required_modules = []
scan_imports = true

[monitors.exploration]
enabled = true
nvidia_smi = "nvidia-smi"
interval_s = 300
idle_threshold_pct = 10
idle_window_s = 1800

[monitors.metric_quality]
enabled = true
experiments_file = "var/curiosity_experiments.jsonl"

[monitors.knowledge_discovery]
enabled = true
docs_dirs = ["docs"]
index_file = "var/knowledge_index.json"
"""

CONTRACT_MONITORS = (
    "exception", "integration", "chaos", "test", "module_discovery", "capability_discovery",
    "exploration", "metric_quality", "knowledge_discovery",
)


def _lookup(cfg: Config, dotted: str) -> Any:
    value: Any = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= _flatten(value, f"{name}.")
        else:
            out[name] = value
    return out


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _no_env_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


# -- defaults ------------------------------------------------------------------------------
def test_monitor_names_are_the_contract_names() -> None:
    assert MONITOR_NAMES == CONTRACT_MONITORS
    assert tuple(Config().monitors.model_dump()) == CONTRACT_MONITORS


def test_every_contract_key_has_its_default(tmp_path: Path) -> None:
    cfg = parse_config({}, tmp_path)
    expected = _flatten(tomllib.loads(CONTRACT_TOML))
    base = tmp_path.resolve()
    path_lists = {"monitors.integration.roots", "monitors.module_discovery.roots",
                  "monitors.knowledge_discovery.docs_dirs", "monitors.exception.log_files"}
    for key, default in expected.items():
        actual = _lookup(cfg, key)
        if key in ("feed.snapshot_path", "history.path"):
            assert actual is None, key  # "" in the contract: not set
        elif key in path_lists:
            assert actual == [base / p for p in default], key
        elif isinstance(actual, Path):
            assert actual == base / default, key
        else:
            assert actual == default, key


def test_the_contract_file_is_accepted_and_equals_the_defaults(tmp_path: Path) -> None:
    explicit = parse_config(tomllib.loads(CONTRACT_TOML), tmp_path)
    assert explicit.model_dump() == parse_config({}, tmp_path).model_dump()


# -- rejection -----------------------------------------------------------------------------
@pytest.mark.parametrize(("data", "key"), [
    ({"nonsense": {"a": 1}}, "nonsense"),
    ({"feed": {"pathh": "x"}}, "feed.pathh"),
    ({"monitors": {"chaos": {"histroy_file": "x"}}}, "monitors.chaos.histroy_file"),
    ({"monitors": {"nosuch": {"enabled": True}}}, "monitors.nosuch"),
    ({"http": {"port": 8765, "bind": "0.0.0.0"}}, "http.bind"),
])
def test_unknown_key_is_an_error_naming_the_key(tmp_path: Path, data: dict[str, Any],
                                                key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(data, tmp_path)
    assert key in str(err.value)
    assert "unknown key" in str(err.value)


@pytest.mark.parametrize(("data", "key"), [
    ({"bus": {"maxsize": 0}}, "bus.maxsize"),
    ({"bus": {"maxsize": "many"}}, "bus.maxsize"),
    ({"http": {"port": 70000}}, "http.port"),
    ({"http": {"port": -1}}, "http.port"),
    ({"service": {"log_level": "loud"}}, "service.log_level"),
    ({"feed": {"compact_bytes": 10}}, "feed.compact_bytes"),
    ({"curiosity": {"suppress": "integration.*"}}, "curiosity.suppress"),
    ({"monitors": {"exception": {"enabled": [1]}}}, "monitors.exception.enabled"),
    ({"monitors": {"exploration": {"idle_threshold_pct": 150}}},
     "monitors.exploration.idle_threshold_pct"),
    ({"monitors": {"integration": {"roots": "src"}}}, "monitors.integration.roots"),
    ({"service": "not a table"}, "service"),
])
def test_bad_value_is_an_error_naming_the_key(tmp_path: Path, data: dict[str, Any],
                                              key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(data, tmp_path)
    message = str(err.value)
    assert message.startswith(f"{key}:") or f"; {key}:" in message, message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"bus": {"maxsize": 0}, "http": {"port": "x"}, "extra": {}}, tmp_path)
    for key in ("bus.maxsize", "http.port", "extra"):
        assert key in str(err.value)


def test_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = _write(tmp_path / "bad.toml", "[bus\nmaxsize = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


# -- check-config --------------------------------------------------------------------------


def test_check_config_prints_the_effective_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _write(tmp_path / "etc" / "config.toml",
                 '[bus]\nmaxsize = 7\n[feed]\npath = "out/feed.jsonl"\n')
    assert main(["check-config", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    header, _, body = out.partition("\n")
    assert "valid" in header and str(cfg.resolve()) in header
    settings = json.loads(body)
    assert settings["bus"]["maxsize"] == 7
    assert settings["feed"]["path"] == str((tmp_path / "etc" / "out" / "feed.jsonl").resolve())
    assert settings["http"]["port"] == 8765  # untouched keys show their defaults
    assert set(settings["monitors"]) == set(CONTRACT_MONITORS)


def test_check_config_in_process_exit_code_and_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _write(tmp_path / "config.toml", '[http]\nport = "eighty"\n')
    assert main(["check-config", "--config", str(cfg)]) == 2
    captured = capsys.readouterr()
    assert "http.port" in captured.err
    assert captured.out == ""


# -- paths ---------------------------------------------------------------------------------
def test_relative_paths_resolve_against_the_config_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg_dir = tmp_path / "etc" / "kloros"
    cfg = _write(cfg_dir / "config.toml", """
[service]
state_dir = "state"
[feed]
path = "../feed.jsonl"
snapshot_path = "snap.json"
[history]
path = "hist/h.jsonl"
[monitors.integration]
roots = ["src", "/abs/src"]
[monitors.exception]
log_files = ["logs/app.log"]
[monitors.chaos]
history_file = "chaos.jsonl"
[monitors.knowledge_discovery]
docs_dirs = ["docs"]
""")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    c = load_config(cfg)
    base = cfg_dir.resolve()
    assert c.source == cfg.resolve()
    assert c.service.state_dir == base / "state"
    assert c.feed.path == base / ".." / "feed.jsonl"
    assert c.feed.snapshot_path == base / "snap.json"
    assert c.history.path == base / "hist" / "h.jsonl"
    assert c.monitors.integration.roots == [base / "src", Path("/abs/src")]
    assert c.monitors.exception.log_files == [base / "logs" / "app.log"]
    assert c.monitors.chaos.history_file == base / "chaos.jsonl"
    assert c.monitors.knowledge_discovery.docs_dirs == [base / "docs"]
    # Still-relative defaults resolve against the config file too, not the cwd.
    assert c.monitors.test.results_dir == base / "var" / "test-results"


def test_tilde_expands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    cfg = _write(tmp_path / "config.toml",
                 '[service]\nstate_dir = "~/state"\n[monitors.integration]\nroots = ["~/src"]\n')
    c = load_config(cfg)
    assert c.service.state_dir == home / "state"
    assert c.monitors.integration.roots == [home / "src"]


# -- lookup --------------------------------------------------------------------------------
def test_lookup_uses_the_environment_variable(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _write(tmp_path / "env" / "config.toml", "[bus]\nmaxsize = 11\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_VAR, str(cfg))
    c = load_config(None)
    assert c.bus.maxsize == 11
    assert c.source == cfg.resolve()
    assert c.feed.path == cfg.parent.resolve() / "var" / "curiosity_feed.jsonl"


def test_explicit_config_beats_the_environment(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    env_cfg = _write(tmp_path / "a.toml", "[bus]\nmaxsize = 11\n")
    explicit = _write(tmp_path / "b.toml", "[bus]\nmaxsize = 22\n")
    monkeypatch.setenv(ENV_VAR, str(env_cfg))
    assert load_config(explicit).bus.maxsize == 22


def test_environment_beats_the_local_file(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / "config.toml", "[bus]\nmaxsize = 33\n")
    env_cfg = _write(tmp_path / "other" / "c.toml", "[bus]\nmaxsize = 44\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(None).bus.maxsize == 33
    monkeypatch.setenv(ENV_VAR, str(env_cfg))
    assert load_config(None).bus.maxsize == 44


def test_missing_environment_file_is_an_error(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_config(None)


def test_built_in_defaults_without_any_file(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    c = load_config(None)
    assert c.source is None
    assert c.http.port == 8765
    assert c.feed.path == tmp_path.resolve() / "var" / "curiosity_feed.jsonl"


def test_the_internal_source_attribute_is_not_a_config_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="source: unknown key"):
        parse_config({"source": "/etc"}, tmp_path)


def test_command_paths_resolve_like_paths_but_bare_names_stay_on_path(tmp_path: Path) -> None:
    cfg = parse_config({"monitors": {"exception": {"journalctl": "bin/jc"},
                                     "exploration": {"nvidia_smi": "~/nvsmi"}}}, tmp_path)
    assert cfg.monitors.exception.journalctl == str(tmp_path / "bin" / "jc")
    assert cfg.monitors.exploration.nvidia_smi == str(Path("~/nvsmi").expanduser())
    assert parse_config({}, tmp_path).monitors.exception.journalctl == "journalctl"


@pytest.mark.parametrize(("data", "hint"), [
    ({"monitors": {"integration": {"root": ["src"]}}}, "did you mean 'roots'?"),
    ({"feed": {"pathh": "x"}}, "did you mean 'path'?"),
    ({"servce": {"log_level": "info"}}, "did you mean 'service'?"),
])
def test_unknown_key_suggests_the_near_one(tmp_path: Path, data: dict[str, Any],
                                           hint: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(hint)):
        parse_config(data, tmp_path)


def test_unknown_key_without_a_near_one_has_no_hint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"feed": {"zzzzzz": 1}}, tmp_path)
    assert "did you mean" not in str(err.value)


def test_check_config_warns_about_missing_paths_and_stays_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "src").mkdir()
    cfg = _write(tmp_path / "config.toml",
                 '[monitors.integration]\nroots = ["src", "nowhere"]\n'
                 '[monitors.knowledge_discovery]\ndocs_dirs = ["no_docs"]\n'
                 '[monitors.chaos]\nenabled = false\nhistory_file = "absent.jsonl"\n')
    assert main(["check-config", "--config", str(cfg)]) == 0
    captured = capsys.readouterr()
    assert "valid" in captured.out.partition("\n")[0]
    assert f"monitors.integration.roots: {tmp_path / 'nowhere'} does not exist" in captured.err
    assert "monitors.knowledge_discovery.docs_dirs" in captured.err
    assert f"{tmp_path / 'src'} " not in captured.err
    assert "absent.jsonl" not in captured.err  # a disabled monitor's inputs are not checked


def test_cluster_section_absent_or_empty_role_is_embedded_and_bare_table_is_both(
        tmp_path: Path) -> None:
    assert parse_config({}, tmp_path).cluster.role == ""
    assert parse_config({"cluster": {"role": ""}}, tmp_path).cluster.role == ""
    bare = parse_config({"cluster": {"nats_url": "nats://10.0.0.1:4222"}}, tmp_path).cluster
    assert bare.role == "both" and bare.credentials is None
    creds = parse_config({"cluster": {"role": "edge", "credentials": "n.creds"}}, tmp_path)
    assert creds.cluster.credentials == tmp_path.resolve() / "n.creds"
    with pytest.raises(ConfigError, match=r"cluster\.role"):
        parse_config({"cluster": {"role": "leader"}}, tmp_path)


# -- [chembus] and [feed] kloros_path (contract additions) ---------------------------------
CHEMBUS_TOML = """
[feed]
kloros_path = ""

[chembus]
enabled = false
xsub = "tcp://127.0.0.1:5558"
xpub = "tcp://127.0.0.1:5559"
publish_gaps = true
publish_questions = true
ingest_gaps = true
value_threshold = 1.5
"""


def test_chembus_defaults_are_the_contract_additions(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KLR_UMN_XSUB", raising=False)
    monkeypatch.delenv("KLR_UMN_XPUB", raising=False)
    explicit = parse_config(tomllib.loads(CHEMBUS_TOML), tmp_path)
    assert explicit.model_dump() == parse_config({}, tmp_path).model_dump()
    assert explicit.feed.kloros_path is None and not explicit.chembus.enabled


def test_chembus_endpoints_follow_kloros_env_unless_set(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLR_UMN_XSUB", "tcp://127.0.0.1:6558")
    monkeypatch.setenv("KLR_UMN_XPUB", "ipc:///run/umn/xpub")
    cfg = parse_config({}, tmp_path)
    assert (cfg.chembus.xsub, cfg.chembus.xpub) == ("tcp://127.0.0.1:6558", "ipc:///run/umn/xpub")
    cfg = parse_config({"chembus": {"xsub": "tcp://127.0.0.1:7000"}}, tmp_path)
    assert cfg.chembus.xsub == "tcp://127.0.0.1:7000"


@pytest.mark.parametrize(("data", "key"), [
    ({"chembus": {"xsub": "127.0.0.1:5558"}}, "chembus.xsub"),
    ({"chembus": {"value_threshold": -1}}, "chembus.value_threshold"),
    ({"chembus": {"publish": True}}, "chembus.publish"),
])
def test_bad_chembus_keys_are_named(tmp_path: Path, data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_config(data, tmp_path)

