"""Log set-up: ``service.log_format`` picks JSON lines or readable console lines."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import structlog

from kloros_stream.logs import configure_logging, json_for


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """These tests point structlog at pytest's captured stdout, which closes after each
    test: put back the defaults so later tests don't log into a closed file."""
    yield
    structlog.reset_defaults()


@pytest.mark.parametrize(("log_format", "expected"), [
    ("json", True), ("console", False), ("auto", None),
])
def test_json_for_maps_the_config_value(log_format: str, expected: bool | None) -> None:
    assert json_for(log_format) is expected


def test_json_format_writes_one_json_object_per_line(capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    configure_logging("info", json=json_for("json"))
    structlog.get_logger("t").info("question_opened", id="x-1", priority=2.5)
    line = capsys.readouterr().out.strip()
    record = json.loads(line)
    assert record["event"] == "question_opened" and record["id"] == "x-1"
    assert record["level"] == "info" and "timestamp" in record


def test_console_format_is_readable_not_json(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", json=json_for("console"))
    structlog.get_logger("t").info("question_opened", id="x-1")
    line = capsys.readouterr().out.strip()
    assert "question_opened" in line and "id" in line and "x-1" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_auto_format_is_json_when_stdout_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", json=json_for("auto"))
    structlog.get_logger("t").info("ready")
    assert json.loads(capsys.readouterr().out)["event"] == "ready"
