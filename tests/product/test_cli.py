"""`datazone product apply|list|publish|deprecate|retire` as an operator runs them."""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from datazone.audit.models import AuditEntry
from datazone.config import Settings
from datazone.db import Database
from tests.conftest import run_cli
from tests.product.zones import apply_demo_specs, fresh_database, load_product, product_files, zone_settings


@pytest.fixture(scope="module")
def cli_zone(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Database, Settings]]:
    with fresh_database(database_url) as db:
        apply_demo_specs(db)
        yield db, zone_settings(db, Path(tmp_path_factory.mktemp("cli")))


def listed(settings: Settings) -> dict[str, dict[str, object]]:
    r = run_cli(settings, "product", "list", "--json")
    assert r.returncode == 0, r.stderr
    return {p["id"]: p for p in json.loads(r.stdout)}


def test_apply_list_and_lifecycle_from_the_command_line(
    cli_zone: tuple[Database, Settings], tmp_path: Path
) -> None:
    db, settings = cli_zone
    files = [str(p) for p in product_files()]
    r = run_cli(settings, "product", "apply", *files)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split("\n")[:-1]) == [
        "product admission-analysis: created",
        "product credit-basic: created",
        "product dishonest-debtor-labeled: created",
        "product dishonest-debtor-psi: created",
        "product enterprise-portrait: created",
        "product joint-modeling: created",
        "product registered-enterprises-count: created",
        "product risk-insight: created",
        "product secure-credit-score: created",
    ]
    r = run_cli(settings, "product", "apply", *files)
    assert r.returncode == 0 and r.stdout.count(": unchanged") == 9

    # one bad file among good ones: every problem printed with its file and location, nothing applied
    changed = load_product("credit-basic")
    changed["description"] = "改过的描述"
    good = tmp_path / "credit-basic.yaml"
    good.write_text(yaml.safe_dump(changed, allow_unicode=True), encoding="utf-8")
    bad_data = load_product("risk-insight")
    bad_data["id"] = "risk-lite"
    bad_data["sources"]["court_enforcement"] = ["filed_on", "amount", "judge"]
    bad_data["logic"] = "risk_scorecard"
    bad = tmp_path / "risk-lite.yaml"
    bad.write_text(yaml.safe_dump(bad_data, allow_unicode=True), encoding="utf-8")
    broken = tmp_path / "broken.yaml"
    broken.write_text("id: [unclosed\n", encoding="utf-8")
    shape = tmp_path / "shape.yaml"
    shape.write_text(
        yaml.safe_dump({**load_product("credit-basic"), "id": "x-y", "tier": "gratis"}), encoding="utf-8"
    )

    r = run_cli(settings, "product", "apply", str(good), str(bad))
    assert r.returncode == 2
    err = r.stderr
    assert f"{bad}: sources.court_enforcement.2: dataset 'court_enforcement' has no field 'judge'" in err
    assert f"{bad}: logic: unknown logic 'risk_scorecard'" in err
    assert str(good) not in err
    assert listed(settings)["credit-basic"]["description"] != "改过的描述"  # the good file was not applied
    assert "risk-lite" not in listed(settings)

    r = run_cli(settings, "product", "apply", str(broken), str(shape), str(good))
    assert r.returncode == 2
    assert f"{broken}: not valid YAML" in r.stderr
    assert f"{shape}: tier: Input should be 'free', 'paid' or 'negotiated'" in r.stderr
    assert run_cli(settings, "product", "apply", str(tmp_path / "missing.yaml")).returncode == 2
    assert listed(settings)["credit-basic"]["description"] != "改过的描述"

    # lifecycle
    for product in ("credit-basic", "risk-insight"):
        r = run_cli(settings, "product", "publish", product, "--reason", "上线")
        assert r.returncode == 0 and f"product {product}: published" in r.stdout, r.stderr
    r = run_cli(
        settings,
        "product",
        "deprecate",
        "credit-basic",
        "--reason",
        "由风险洞察替代",
        "--successor",
        "risk-insight",
        "--seamless",
    )
    assert r.returncode == 0, r.stderr
    assert "product credit-basic: deprecated, successor risk-insight (seamless switch)" in r.stdout
    r = run_cli(settings, "product", "retire", "credit-basic", "--reason", "下线")
    assert r.returncode == 0 and "retired" in r.stdout
    r = run_cli(settings, "product", "publish", "credit-basic", "--reason", "again")
    assert r.returncode == 2 and "credit-basic' is retired; it cannot move to published" in r.stderr
    r = run_cli(settings, "product", "deprecate", "admission-analysis", "--reason", "x")
    assert r.returncode == 2 and "it may move to: published, retired" in r.stderr
    rows = listed(settings)
    assert (
        rows["credit-basic"]["state"],
        rows["credit-basic"]["successor"],
        rows["credit-basic"]["seamless_switch"],
    ) == (
        "retired",
        "risk-insight",
        True,
    )
    r = run_cli(settings, "product", "list")
    assert r.returncode == 0 and "风险洞察" in r.stdout

    with db.unit_of_work() as s:
        actors = set(
            s.scalars(sa.select(AuditEntry.actor_name).where(AuditEntry.object_type == "product")).all()
        )
    assert actors == {f"cli:{getpass.getuser()}"}
