"""The console's one message catalogue: Chinese first, English beside it.

The catalogue is the YAML files in `messages/` (one per part of the console, so each part's words
sit together), merged into one mapping of key -> {zh, en}; a key defined twice or missing a
language is an error at start-up, not a blank on a page.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

LANGUAGES = ("zh", "en")
DEFAULT_LANGUAGE = "zh"
MESSAGES_DIR = Path(__file__).parent / "messages"


class CatalogueError(ValueError):
    pass


@lru_cache(maxsize=1)
def catalogue() -> Mapping[str, Mapping[str, str]]:
    merged: dict[str, dict[str, str]] = {}
    for path in sorted(MESSAGES_DIR.glob("*.yaml")):
        entries: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(entries, dict):
            raise CatalogueError(f"{path.name}: a mapping of key -> {{zh, en}} expected")
        for key, texts in entries.items():
            if key in merged:
                raise CatalogueError(f"{path.name}: {key!r} is defined twice")
            if not isinstance(texts, dict) or set(texts) != set(LANGUAGES):
                raise CatalogueError(f"{path.name}: {key!r} needs exactly zh and en")
            merged[str(key)] = {lang: str(texts[lang]) for lang in LANGUAGES}
    return merged


def language_of(value: str | None) -> str:
    return value if value in LANGUAGES else DEFAULT_LANGUAGE


def text(lang: str, key: str, /, **values: Any) -> str:
    """The message `key` in `lang`, with `{name}` fields filled; an unknown key shows itself, so a
    missing entry is visible (and tests/console/test_messages.py finds it in the templates)."""
    entry = catalogue().get(key)
    if entry is None:
        return key
    message = entry[language_of(lang)]
    return message.format(**values) if values else message


def known(key: str) -> bool:
    return key in catalogue()
