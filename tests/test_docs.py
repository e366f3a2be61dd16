"""The repository documents itself: every config key, gap type and endpoint, in its own
docs, with no pointer to files outside it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from kloros_stream.config import Config
from kloros_stream.core.templates import TEMPLATES

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DOC = ROOT / "docs" / "configuration.md"


def config_keys(model: type[BaseModel] = Config, prefix: str = "") -> Iterator[str]:
    """Every leaf key of the configuration model, dotted; each monitor's ``enabled`` once
    as ``monitors.<name>.enabled``."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from config_keys(annotation, f"{prefix}{name}.")
        elif prefix.startswith("monitors.") and name == "enabled":
            yield "monitors.<name>.enabled"
        else:
            yield f"{prefix}{name}"


def documented_keys() -> set[str]:
    return set(re.findall(r"^\| `([a-z_<>.]+)` \|", CONFIG_DOC.read_text(), re.MULTILINE))


def test_every_config_key_is_documented_once_and_nothing_else() -> None:
    keys = set(config_keys())
    documented = documented_keys()
    assert keys - documented == set(), "keys missing from docs/configuration.md"
    assert documented - keys == set(), "docs/configuration.md names keys that do not exist"


def test_every_gap_type_is_documented() -> None:
    monitors_doc = (ROOT / "docs" / "monitors.md").read_text()
    missing = [t for t in TEMPLATES if f"`{t}`" not in monitors_doc]
    assert missing == []


def test_the_repository_stands_alone() -> None:
    for path in [ROOT / "README.md", ROOT / "config.toml", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        assert "../shared" not in text, path
        assert "see contract" not in text.lower(), path
