"""The console's one message catalogue: every key a page or route names exists, in Chinese and English."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from datazone.console import messages

CONSOLE = Path(messages.__file__).parent
# literal keys only: t('x.y'), t("x.y", n=1), NavItem(..., "x.y"), done(..., "notice.x")
IN_TEMPLATES = re.compile(r"""\bt\(\s*['"]([a-z0-9_.-]+)['"]\s*[,)]""")
IN_CODE = re.compile(r"""(?:NavItem\([^)]*?,\s*|done\([^)]*?,\s*)["']((?:nav|notice)[a-z0-9_.-]*)["']""")


def used_keys() -> dict[str, list[str]]:
    used: dict[str, list[str]] = {}
    for path in sorted((CONSOLE / "templates").rglob("*.html")):
        for key in IN_TEMPLATES.findall(path.read_text(encoding="utf-8")):
            used.setdefault(key, []).append(path.name)
    for path in sorted(CONSOLE.glob("*.py")):
        for key in IN_CODE.findall(path.read_text(encoding="utf-8")):
            used.setdefault(key, []).append(path.name)
    return used


def test_every_key_a_page_uses_is_in_the_catalogue() -> None:
    used = used_keys()
    assert len(used) > 50  # the scan finds the pages' words at all
    missing = {key: where for key, where in used.items() if not messages.known(key)}
    assert missing == {}


def test_every_entry_has_both_languages_and_chinese_is_the_default() -> None:
    catalogue = messages.catalogue()
    assert all(entry["zh"].strip() and entry["en"].strip() for entry in catalogue.values())
    assert messages.text("zh", "sign-in.title") == "登录"
    assert messages.text("en", "sign-in.title") == "Sign in"
    assert messages.text("fr", "sign-in.title") == "登录"  # an unknown language falls back to Chinese
    assert messages.text("en", "people.locked-until", at="2026-12-07 20:00") == "locked until 2026-12-07 20:00"


def test_a_key_defined_twice_or_missing_a_language_fails_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"x.one": {"zh": "一", "en": "one"}}), encoding="utf-8")
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"x.one": {"zh": "一", "en": "one"}}), encoding="utf-8")
    monkeypatch.setattr(messages, "MESSAGES_DIR", tmp_path)
    messages.catalogue.cache_clear()
    try:
        with pytest.raises(messages.CatalogueError, match="defined twice"):
            messages.catalogue()
        (tmp_path / "b.yaml").write_text(yaml.safe_dump({"x.two": {"zh": "二"}}), encoding="utf-8")
        messages.catalogue.cache_clear()
        with pytest.raises(messages.CatalogueError, match="needs exactly zh and en"):
            messages.catalogue()
    finally:
        monkeypatch.undo()
        messages.catalogue.cache_clear()
