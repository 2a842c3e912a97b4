"""Native hash partitioning of zone tables (`datazone zone partition` / `unpartition`), on a real
PostgreSQL: the synthetic zone's products answer the same before, during and after, every row
(current and retired) survives each rebuild, ingest keeps working on partitioned tables, and bad
choices are refused with nothing changed."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from datazone.config import Settings
from datazone.dataset import partitioning, zone
from datazone.dataset import service as dataset_service
from datazone.db import Database
from datazone.demo.generate import enterprise_codes, generate_zone
from datazone.errors import InvalidSpec, NotFound
from datazone.product import engine
from datazone.product import service as product_service
from tests.conftest import run_cli
from tests.product.zones import apply_demo_specs, apply_products, fresh_database, ingest_file, zone_settings

ENTITIES = 1500
AS_OF = date(2026, 10, 31)
PRODUCTS = ("credit-basic", "risk-insight", "enterprise-portrait", "admission-analysis")


@dataclass
class Zone:
    db: Database
    settings: Settings
    files: dict[str, Path]
    codes: list[str]
    datasets: list[str]


@pytest.fixture(scope="module")
def zone_db(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zone]:
    root = tmp_path_factory.mktemp("partitioned_zone")
    with fresh_database(database_url) as db:
        settings = zone_settings(db, root)
        files = generate_zone(settings.drop_path, entities=ENTITIES, as_of=AS_OF)
        apply_demo_specs(db)
        for f in files:
            ingest_file(db, settings, f.dataset_id, f.path)
        apply_products(db)
        codes = [str(c) for c in enterprise_codes(ENTITIES, 20240101, as_of=AS_OF)]
        yield Zone(db, settings, {f.dataset_id: f.path for f in files}, codes, [f.dataset_id for f in files])


def answers(db: Database, codes: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    with db.unit_of_work() as s:
        for product_id in PRODUCTS:
            spec = product_service.spec_of(product_service.get_product(s, product_id=product_id))
            out[product_id] = engine.compute(s, spec=spec, usccs=codes[:1000], as_of=AS_OF).answers
    return out


def fingerprints(db: Database, datasets: list[str]) -> dict[str, tuple[int, str]]:
    """Every row of every zone table, current and retired, as (count, md5 of the sorted rows)."""
    out = {}
    with db.engine.connect() as conn:
        for dataset_id in datasets:
            row = conn.execute(
                sa.text(
                    f"SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), ''))"
                    f' FROM zone."{dataset_id}" t'
                )
            ).one()
            out[dataset_id] = (int(row[0]), str(row[1]))
    return out


def catalog(db: Database, dataset_id: str) -> dict[str, Any]:
    """What PostgreSQL says the table is: its kind, partition strategy and key, partitions, indexes."""
    with db.engine.connect() as conn:
        info = conn.execute(
            sa.text(
                "SELECT c.relkind, p.partstrat,"
                " (SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum = p.partattrs[0]),"
                " (SELECT count(*) FROM pg_inherits i WHERE i.inhparent = c.oid)"
                " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " LEFT JOIN pg_partitioned_table p ON p.partrelid = c.oid"
                " WHERE n.nspname = 'zone' AND c.relname = :t"
            ),
            {"t": dataset_id},
        ).one()
        indexes = set(
            conn.execute(
                sa.text("SELECT indexname FROM pg_indexes WHERE schemaname = 'zone' AND tablename = :t"),
                {"t": dataset_id},
            ).scalars()
        )
        children = conn.execute(
            sa.text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = to_regclass(:t)"
            ),
            {"t": f'zone."{dataset_id}"'},
        ).scalars()
        partition_rows = [
            int(conn.execute(sa.text(f'SELECT count(*) FROM zone."{child}"')).scalar_one())
            for child in children
        ]
    return {
        "kind": info[0],
        "strategy": info[1],
        "key": info[2],
        "partitions": int(info[3]),
        "indexes": indexes,
        "partition_rows": partition_rows,
    }


def test_partition_and_back_answers_the_same(zone_db: Zone) -> None:
    db, settings = zone_db.db, zone_db.settings
    before_answers = answers(db, zone_db.codes)
    before_rows = fingerprints(db, zone_db.datasets)
    assert sum(1 for a in before_answers["risk-insight"].values() if a) > 500  # the zone answers

    done = run_cli(settings, "zone", "partition", "--by", "hash", "--partitions", "4")
    assert done.returncode == 0, done.stderr
    for dataset_id in zone_db.datasets:
        assert f"zone.{dataset_id}: partitioned, 4 hash partitions on uscc" in done.stdout
        table = catalog(db, dataset_id)
        assert (table["kind"], table["strategy"], table["key"], table["partitions"]) == ("p", "h", "uscc", 4)
        # the current-row unique index holds on the partitioned table, and the history index too
        assert {f"{dataset_id}_current", f"{dataset_id}_history"} <= table["indexes"]
    # enterprises spread over the partitions
    assert all(n > 100 for n in catalog(db, "mr_registration")["partition_rows"])
    assert fingerprints(db, zone_db.datasets) == before_rows
    assert answers(db, zone_db.codes) == before_answers

    # the same choice again changes nothing; another count rebuilds
    again = run_cli(settings, "zone", "partition", "--partitions", "4", "--dataset", "mr_registration")
    assert again.returncode == 0 and "mr_registration: unchanged" in again.stdout
    more = run_cli(settings, "zone", "partition", "--partitions", "8", "--dataset", "mr_registration")
    assert more.returncode == 0 and "mr_registration: repartitioned, 8 hash partitions" in more.stdout
    assert catalog(db, "mr_registration")["partitions"] == 8
    assert answers(db, zone_db.codes) == before_answers

    back = run_cli(settings, "zone", "unpartition")
    assert back.returncode == 0, back.stderr
    for dataset_id in zone_db.datasets:
        table = catalog(db, dataset_id)
        assert (table["kind"], table["strategy"], table["partitions"]) == ("r", None, 0)
        assert {f"{dataset_id}_current", f"{dataset_id}_history"} <= table["indexes"]
    with db.engine.connect() as conn:  # no partition left behind
        assert conn.execute(sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = 'zone'"
                                    " AND tablename LIKE '\\_%'")).scalar() == 0  # fmt: skip
    assert fingerprints(db, zone_db.datasets) == before_rows
    assert answers(db, zone_db.codes) == before_answers

    # every rebuild is in the audit trail, named by the shell's account
    with db.engine.connect() as conn:
        actions = conn.execute(
            sa.text("SELECT action, count(*) FROM audit_entry WHERE action LIKE 'zone.%' GROUP BY action")
        ).all()
    n = len(zone_db.datasets)
    assert dict(actions) == {"zone.partitioned": n, "zone.repartitioned": 1, "zone.unpartitioned": n}


def test_ingest_retires_and_adds_rows_in_a_partitioned_table(zone_db: Zone) -> None:
    db, settings = zone_db.db, zone_db.settings
    with db.unit_of_work() as s:
        done = partitioning.partition(s, dataset_id="court_dishonest", partitions=3, by_name="test")
        assert done.outcome == "partitioned"
    source = zone_db.files["court_dishonest"]
    with source.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    header, records = rows[0], rows[1:]
    removed = records[-1]
    uscc_col = header.index("统一社会信用代码") if "统一社会信用代码" in header else 0
    changed = settings.drop_path / "court_dishonest" / "court_dishonest_next.csv"
    with changed.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([header, *records[:-1]])
    try:
        with db.unit_of_work() as s:
            version_before = dataset_service.get_dataset(s, dataset_id="court_dishonest").current_version
        ingest_file(db, settings, "court_dishonest", changed)
        with db.unit_of_work() as s:
            ds = dataset_service.get_dataset(s, dataset_id="court_dishonest")
            assert ds.current_version == (version_before or 0) + 1
            code = removed[uscc_col]
            _, now = dataset_service.read_records(s, dataset_id="court_dishonest", uscc=code)
            _, then = dataset_service.read_records(
                s, dataset_id="court_dishonest", uscc=code, as_of=version_before
            )
            case_numbers_now = {r["case_no"] for r in now}
            assert removed[1] not in case_numbers_now
            assert removed[1] in {r["case_no"] for r in then}  # the retired row, as of the old version
        assert catalog(db, "court_dishonest")["partitions"] == 3
    finally:
        with db.unit_of_work() as s:
            partitioning.partition(s, dataset_id="court_dishonest", partitions=None, by_name="test")


def test_a_spec_change_before_data_keeps_the_partitioning(zone_db: Zone) -> None:
    """A dataset whose table is rebuilt from a new spec (no data yet) stays partitioned."""
    db = zone_db.db
    with db.unit_of_work() as s:
        spec = dataset_service.spec_of(dataset_service.get_dataset(s, dataset_id="mr_penalty"))
        raw = spec.model_dump(mode="json")
        raw["id"] = "mr_penalty_copy"
        copy = type(spec).model_validate(raw)
        dataset_service.apply_dataset(s, spec=copy)
        partitioning.partition(s, dataset_id="mr_penalty_copy", partitions=2, by_name="test")
        raw["description"] = "changed before the first load"
        _, outcome = dataset_service.apply_dataset(s, spec=type(spec).model_validate(raw))
        assert outcome == "updated"
        conn = s.connection().connection.driver_connection
        assert conn is not None
        assert zone.hash_partitions(conn, "mr_penalty_copy") == 2
        s.rollback()


def test_first_load_into_a_table_partitioned_before_any_data(zone_db: Zone) -> None:
    """Partitioned while empty, the table takes its first load straight (COPY, then the indexes)."""
    db = zone_db.db
    with db.unit_of_work() as s:
        spec = dataset_service.spec_of(dataset_service.get_dataset(s, dataset_id="court_dishonest"))
        raw = spec.model_dump(mode="json")
        raw["id"] = "court_dishonest_early"
        dataset_service.apply_dataset(s, spec=type(spec).model_validate(raw))
    with db.unit_of_work() as s:
        done = partitioning.partition(s, dataset_id="court_dishonest_early", partitions=4, by_name="test")
        assert (done.outcome, done.layout.rows) == ("partitioned", 0)
    assert "court_dishonest_early_current" not in catalog(db, "court_dishonest_early")["indexes"]
    ingest_file(db, zone_db.settings, "court_dishonest_early", zone_db.files["court_dishonest"])
    table = catalog(db, "court_dishonest_early")
    assert (table["kind"], table["partitions"]) == ("p", 4)
    assert {"court_dishonest_early_current", "court_dishonest_early_history"} <= table["indexes"]
    rows = fingerprints(db, ["court_dishonest", "court_dishonest_early"])
    assert rows["court_dishonest_early"][0] == sum(table["partition_rows"]) > 0
    with db.unit_of_work() as s:
        code = next(iter(dataset_service.current_entities(s, dataset_id="court_dishonest", limit=1)))
        assert (
            dataset_service.read_records(s, dataset_id="court_dishonest_early", uscc=code)[1]
            == dataset_service.read_records(s, dataset_id="court_dishonest", uscc=code)[1]
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--partitions", "1"], "partitions: from 2 to 256, not 1"),
        (["--partitions", "257"], "partitions: from 2 to 256, not 257"),
        (["--partitions", "4", "--by", "range"], "'range' is not a partitioning method here"),
        (["--partitions", "4", "--dataset", "no_such_dataset"], "no dataset 'no_such_dataset'"),
        # an unknown dataset among known ones: refused before the known one is touched
        (["--partitions", "4", "--dataset", "mr_penalty", "--dataset", "nope_x"], "no dataset 'nope_x'"),
    ],
)
def test_bad_choices_are_refused_and_nothing_changes(zone_db: Zone, args: list[str], message: str) -> None:
    before = {d: catalog(zone_db.db, d)["kind"] for d in ("mr_penalty", "mr_registration")}
    done = run_cli(zone_db.settings, "zone", "partition", *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""
    assert (
        {d: catalog(zone_db.db, d)["kind"] for d in before}
        == before
        == {"mr_penalty": "r", "mr_registration": "r"}
    )


def test_service_refuses_bad_choices_with_every_reason(zone_db: Zone) -> None:
    with zone_db.db.unit_of_work() as s:
        with pytest.raises(InvalidSpec) as caught:
            partitioning.partition(s, dataset_id="mr_penalty", partitions=0, method="list", by_name="test")
        assert [e["location"] for e in caught.value.errors] == ["by", "partitions"]
        with pytest.raises(NotFound):
            partitioning.partition(s, dataset_id="missing", partitions=4, by_name="test")


def test_layout_lists_each_table(zone_db: Zone) -> None:
    done = run_cli(zone_db.settings, "zone", "layout", "--json")
    assert done.returncode == 0, done.stderr
    tables = {t["dataset_id"]: t for t in json.loads(done.stdout)}
    assert set(zone_db.datasets) <= set(tables)
    assert tables["mr_registration"] == {
        "dataset_id": "mr_registration",
        "entity_key": "uscc",
        "partitions": None,
        "rows": ENTITIES,
    }


def test_partition_names_stay_within_postgres_limits() -> None:
    long_id = "a" + "b" * 62
    names = {zone.partition_name(long_id, r, 256) for r in range(256)}
    assert len(names) == 256 and all(len(n) <= 63 for n in names)
    assert zone.partition_name("mr_registration", 3, 8) == "_mr_registration_h3_of_8"
    # two long ids that share their first 50 characters still get distinct names
    assert zone.partition_name(long_id, 0, 4) != zone.partition_name("a" + "b" * 61 + "c", 0, 4)
