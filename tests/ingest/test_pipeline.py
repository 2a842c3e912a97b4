"""The ingest pipeline end to end on a real PostgreSQL: fetch, decode, validate, load, switch."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from datazone.config import Settings
from datazone.dataset import service as dataset_service
from datazone.dataset.schemas import DatasetSpec
from datazone.db import Database
from datazone.ingest import service as ingest_service
from datazone.ingest.models import IngestRun
from datazone.ingest.pipeline import execute_run
from tests.conftest import unique_id
from tests.factories import HEADER, apply_spec, bad_check, firm_rows, firm_spec, make_uscc, write_csv


@pytest.fixture
def dataset(db: Database, settings: Settings) -> DatasetSpec:
    spec = firm_spec(unique_id("firm"))
    with db.unit_of_work() as s:
        apply_spec(s, spec)
    return spec


def ingest(db: Database, settings: Settings, spec: DatasetSpec, file: Path | None = None) -> IngestRun:
    with db.unit_of_work() as s:
        run = ingest_service.request_run(
            s, dataset_id=spec.id, trigger="cli", file=str(file) if file else None
        )
        run_id = run.id
    return execute_run(db, run_id=run_id, settings=settings)


def drop(settings: Settings, spec: DatasetSpec, name: str) -> Path:
    return settings.drop_path / spec.id / name


def current(db: Database, spec: DatasetSpec) -> tuple[int | None, int]:
    with db.unit_of_work() as s:
        ds = dataset_service.get_dataset(s, dataset_id=spec.id)
        return ds.current_version, ds.current_rows


def zone_rows(db: Database, spec: DatasetSpec, version: int | None = None) -> dict[str, dict[str, Any]]:
    where = (
        "_vto IS NULL" if version is None else f"_vfrom <= {version} AND (_vto IS NULL OR _vto > {version})"
    )
    with db.engine.connect() as c:
        rows = c.execute(sa.text(f'SELECT * FROM zone."{spec.id}" WHERE {where}')).mappings().all()
    return {r["uscc"]: dict(r) for r in rows}


def rejects(db: Database, run_id: int) -> list[tuple[int | None, str | None, str]]:
    with db.unit_of_work() as s:
        return [(r.line, r.column, r.reason) for r in ingest_service.list_rejects(s, run_id=run_id)]


def load_v1(db: Database, settings: Settings, spec: DatasetSpec, n: int = 20) -> IngestRun:
    write_csv(drop(settings, spec, "a_20240101.csv"), firm_rows(n))
    run = ingest(db, settings, spec)
    assert run.status == "succeeded", run.error
    return run


def test_clean_snapshot_loads_as_version_1(db: Database, settings: Settings, dataset: DatasetSpec) -> None:
    run = load_v1(db, settings, dataset, n=2500)  # several batches of 1000
    assert (run.version, run.rows_read, run.rows_loaded, run.rows_rejected) == (1, 2500, 2500, 0)
    assert run.encoding == "gb18030"
    assert current(db, dataset) == (1, 2500)
    rows = zone_rows(db, dataset)
    r = rows[make_uscc(7)]
    assert r["name"] == "北京测试7科技有限公司"
    assert str(r["capital"]) == "80"
    assert r["founded"].isoformat() == "2015-08-08"
    assert r["status"] == "active" and r["staff"] == 7 and r["_vfrom"] == 1
    # the delivered file is moved aside so it is never loaded twice
    assert not list((settings.drop_path / dataset.id).glob("*.csv"))
    assert len(list((settings.drop_path / dataset.id / "processed").glob("*a_20240101.csv"))) == 1


def test_new_snapshot_applies_only_the_difference_and_keeps_history(
    db: Database, settings: Settings, dataset: DatasetSpec
) -> None:
    load_v1(db, settings, dataset, n=10)
    rows = firm_rows(10)
    rows[3][5] = "99"  # changed
    del rows[5]  # gone from the register
    rows.append(firm_rows(1, start=100)[0])  # new
    write_csv(drop(settings, dataset, "a_20240102.csv"), rows)
    run = ingest(db, settings, dataset)
    assert run.status == "succeeded", run.error
    assert (run.version, run.rows_read, run.rows_loaded, run.rows_unchanged, run.rows_deleted) == (
        2,
        10,
        2,
        8,
        1,
    )
    assert current(db, dataset) == (2, 10)
    now, before = zone_rows(db, dataset), zone_rows(db, dataset, version=1)
    assert now[make_uscc(3)]["staff"] == 99 and before[make_uscc(3)]["staff"] == 3
    assert make_uscc(5) not in now and make_uscc(5) in before
    assert make_uscc(100) in now and make_uscc(100) not in before
    with db.unit_of_work() as s:
        version, records = dataset_service.read_records(s, dataset_id=dataset.id, uscc=make_uscc(3), as_of=1)
    assert version == 1 and records[0]["staff"] == 3


def test_identical_snapshot_changes_nothing(db: Database, settings: Settings, dataset: DatasetSpec) -> None:
    load_v1(db, settings, dataset, n=10)
    write_csv(drop(settings, dataset, "a_20240102.csv"), firm_rows(10))
    run = ingest(db, settings, dataset)
    assert run.status == "succeeded"
    assert (run.version, run.rows_loaded, run.rows_unchanged) == (1, 0, 10)
    assert "no changes" in (run.note or "")
    assert current(db, dataset) == (1, 10)


def test_incremental_upserts_and_deletes(db: Database, settings: Settings) -> None:
    header = [*HEADER, "操作标志"]
    spec = firm_spec(
        unique_id("inc"),
        mode="incremental",
        encoding="utf-8",
        deletion_marker={"column": "操作标志", "values": ["D", "删除"]},
    )
    with db.unit_of_work() as s:
        apply_spec(s, spec)
    write_csv(
        drop(settings, spec, "d1.csv"), [[*r, "I"] for r in firm_rows(5)], header=header, encoding="utf-8"
    )
    assert ingest(db, settings, spec).status == "succeeded"
    changed = firm_rows(1, start=2)[0]
    changed[1] = "北京改名科技有限公司"
    delta = [
        [*changed, "U"],
        [make_uscc(4), "", "", "", "", "", "D"],  # a deletion needs only its key
        [*firm_rows(1, start=9)[0], "I"],
    ]
    write_csv(drop(settings, spec, "d2.csv"), delta, header=header, encoding="utf-8")
    run = ingest(db, settings, spec)
    assert run.status == "succeeded", run.error
    assert (run.version, run.rows_loaded, run.rows_deleted, run.rows_unchanged) == (2, 2, 1, 0)
    rows = zone_rows(db, spec)
    assert sorted(rows) == sorted(make_uscc(i) for i in (0, 1, 2, 3, 9))
    assert rows[make_uscc(2)]["name"] == "北京改名科技有限公司"
    assert current(db, spec) == (2, 5)


def test_rejects_within_tolerance_are_reported_and_the_rest_loads(db: Database, settings: Settings) -> None:
    spec = firm_spec(unique_id("tol"), reject_tolerance=0.1)
    with db.unit_of_work() as s:
        apply_spec(s, spec)
    rows = firm_rows(30)
    rows[4][0] = bad_check(rows[4][0])  # line 6
    rows[10][3] = "2023-02-29"  # line 12
    write_csv(drop(settings, spec, "a.csv"), rows)
    run = ingest(db, settings, spec)
    assert run.status == "succeeded", run.error
    assert (run.rows_read, run.rows_loaded, run.rows_rejected) == (30, 28, 2)
    got = rejects(db, run.id)
    assert [(line, col) for line, col, _ in got] == [(6, "统一社会信用代码"), (12, "成立日期")]
    assert "check character" in got[0][2]
    assert "2023-02-29" in got[1][2]


# --- bad input: each fails with a report that says what and where; the previous version keeps serving


def _fails(
    db: Database, settings: Settings, spec: DatasetSpec, write: Callable[[Path], Any], code: str
) -> IngestRun:
    load_v1(db, settings, spec, n=10)
    before = zone_rows(db, spec)
    target = drop(settings, spec, "b_20240102.csv")
    target.parent.mkdir(parents=True, exist_ok=True)
    write(target)
    run = ingest(db, settings, spec)
    assert run.status == "failed"
    assert run.error_code == code, run.error
    assert run.finished_at is not None
    assert current(db, spec) == (1, 10), "the previous version must keep serving"
    assert zone_rows(db, spec) == before
    with db.engine.connect() as c:
        assert c.execute(sa.text(f'SELECT count(*) FROM zone."{spec.id}" WHERE _vfrom > 1')).scalar() == 0
    if code not in {"fetch", "no_source"}:
        # the bad delivery is moved to rejected/, not retried forever
        assert len(list((settings.drop_path / spec.id / "rejected").glob("*b_20240102.csv"))) == 1
    return run


def test_wrong_encoding(db: Database, settings: Settings, dataset: DatasetSpec) -> None:
    # 0xFF never starts a GB18030 character
    good = firm_rows(3)
    body = ("\n".join([",".join(HEADER)] + [",".join(r) for r in good]) + "\n").encode("gb18030")
    run = _fails(db, settings, dataset, lambda p: p.write_bytes(body + b"\xff\xfe,x\n"), "encoding")
    assert "line 5" in (run.error or "")


def test_utf8_declared_but_gb18030_delivered(db: Database, settings: Settings) -> None:
    spec = firm_spec(unique_id("enc"), encoding="utf-8")
    with db.unit_of_work() as s:
        apply_spec(s, spec)
    write_csv(drop(settings, spec, "a_20240101.csv"), firm_rows(10), encoding="utf-8")
    assert ingest(db, settings, spec).status == "succeeded"
    write_csv(drop(settings, spec, "b_20240102.csv"), firm_rows(10))  # GB18030 bytes
    run = ingest(db, settings, spec)
    assert run.status == "failed" and run.error_code == "encoding"
    assert "UTF-8" in (run.error or "") or "utf-8" in (run.error or "")
    assert "line 1" in (run.error or "") or "line 2" in (run.error or "")
    assert current(db, spec) == (1, 10)


def test_missing_required_and_unknown_columns_listed_together(
    db: Database, settings: Settings, dataset: DatasetSpec
) -> None:
    header = ["统一社会信用代码", "企业名称", "注册地", "登记状态", "参保人数"]
    run = _fails(
        db, settings, dataset,
        lambda p: write_csv(p, [[make_uscc(1), "x", "海淀", "存续", "1"]], header=header),
        "header",
    )  # fmt: skip
    assert "成立日期" in (run.error or "") and "注册地" in (run.error or "")


def test_bad_check_digits_over_tolerance(db: Database, settings: Settings, dataset: DatasetSpec) -> None:
    rows = firm_rows(10)
    rows[2][0] = bad_check(rows[2][0])
    run = _fails(db, settings, dataset, lambda p: write_csv(p, rows), "rejects")
    assert "1 of 10 rows rejected" in (run.error or "")
    got = rejects(db, run.id)
    assert got[0][0] == 4 and "check character" in got[0][2]


def test_duplicate_keys(db: Database, settings: Settings, dataset: DatasetSpec) -> None:
    rows = firm_rows(10)
    rows[7] = list(rows[2])
    run = _fails(db, settings, dataset, lambda p: write_csv(p, rows), "rejects")
    got = rejects(db, run.id)
    assert len(got) == 1
    line, _, reason = got[0]
    assert line == 9 and "duplicate record key" in reason and "first at line 4" in reason
    assert make_uscc(2) in reason


def test_unparseable_dates_and_numbers(db: Database, settings: Settings, dataset: DatasetSpec) -> None:
    rows = firm_rows(10)
    rows[0][3] = "2024年13月1日"
    rows[1][2] = "12abc"
    rows[2][5] = "3.5"
    run = _fails(db, settings, dataset, lambda p: write_csv(p, rows), "rejects")
    got = rejects(db, run.id)
    assert [(line, col) for line, col, _ in got] == [(2, "成立日期"), (3, "注册资本(万元)"), (4, "参保人数")]


def test_empty_file(db: Database, settings: Settings, dataset: DatasetSpec) -> None:
    run = _fails(db, settings, dataset, lambda p: p.write_bytes(b""), "empty")
    assert "empty" in (run.error or "")


def test_header_only_snapshot_is_refused(db: Database, settings: Settings, dataset: DatasetSpec) -> None:
    run = _fails(db, settings, dataset, lambda p: write_csv(p, []), "no_rows")
    assert "retire all 10 current records" in (run.error or "")


def test_truncated_file(db: Database, settings: Settings, dataset: DatasetSpec) -> None:
    def write(p: Path) -> None:
        write_csv(p, firm_rows(10))
        data = p.read_bytes()
        p.write_bytes(data[: len(data) - 25])  # cut the last record mid-row

    run = _fails(db, settings, dataset, write, "rejects")
    got = rejects(db, run.id)
    assert got and got[-1][0] == 11


class _Handler(BaseHTTPRequestHandler):
    mode = "ok"
    body = b""

    def do_GET(self) -> None:
        if self.mode == "500":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"boom")
            return
        if self.mode == "slow":
            threading.Event().wait(3)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_source() -> Any:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()


@pytest.mark.parametrize("mode,expect", [("500", "answered 500"), ("slow", "timed out after 1 s")])
def test_url_source_failures(
    db: Database, settings: Settings, http_source: Any, mode: str, expect: str
) -> None:
    url = f"http://127.0.0.1:{http_source.server_port}/export.csv?token=s3cret"
    spec = firm_spec(unique_id("url"), source={"kind": "url", "url": url, "timeout_seconds": 1})
    with db.unit_of_work() as s:
        apply_spec(s, spec)
    _Handler.mode, _Handler.body = (
        "ok",
        ("\n".join([",".join(HEADER)] + [",".join(r) for r in firm_rows(10)])).encode("gb18030"),
    )
    first = ingest(db, settings, spec)
    assert first.status == "succeeded", first.error
    _Handler.mode = mode
    run = ingest(db, settings, spec)
    assert run.status == "failed" and run.error_code == "fetch"
    assert expect in (run.error or "")
    assert "s3cret" not in (run.error or "") and "s3cret" not in (run.source or "")
    assert current(db, spec) == (1, 10)


def test_no_delivered_file(db: Database, settings: Settings, dataset: DatasetSpec) -> None:
    run = ingest(db, settings, dataset)
    assert run.status == "failed" and run.error_code == "no_source"
    assert dataset.id in (run.error or "")


def test_first_load_with_duplicate_keys_falls_back_to_staging_and_reports_once(
    db: Database, settings: Settings
) -> None:
    spec = firm_spec(unique_id("dup1"), reject_tolerance=0.25)
    with db.unit_of_work() as s:
        apply_spec(s, spec)
    rows = firm_rows(10)
    rows[1][0] = bad_check(rows[1][0])  # line 3
    rows[8] = list(rows[4])  # line 10 repeats line 6
    write_csv(drop(settings, spec, "a.csv"), rows)
    run = ingest(db, settings, spec)
    assert run.status == "succeeded", run.error
    assert (run.version, run.rows_read, run.rows_loaded, run.rows_rejected) == (1, 10, 8, 2)
    got = rejects(db, run.id)
    assert [line for line, _, _ in got] == [3, 10], got
    assert "first at line 6" in got[1][2]
    assert len(zone_rows(db, spec)) == 8
