"""The synthetic zone: specs parse, files are deterministic, valid and realistically correlated."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import yaml
from openpyxl import load_workbook
from stdnum.cn import uscc

from datazone.dataset.schemas import DatasetSpec, SourceFormat
from datazone.demo.generate import DemoFile, enterprise_codes, generate_zone, load_demo_specs

SMALL = 600
STATS = 5_000
SEED = 7
AS_OF = date(2025, 6, 30)  # not the default: as_of must flow everywhere
GRADE_SCORE = {"A": 4, "B": 3, "M": 2, "C": 1, "D": 0}


def _spec_map() -> dict[str, DatasetSpec]:
    return {s.id: s for s in load_demo_specs()[1]}


def _read_rows(spec: DatasetSpec, path: Path) -> tuple[list[str], list[dict[str, object]]]:
    """(headers, rows keyed by header) of a generated file, in its declared encoding."""
    if spec.format is SourceFormat.xlsx:
        wb = load_workbook(path, read_only=True)
        ws = wb[spec.sheet] if spec.sheet else wb.active
        values = list(ws.iter_rows(values_only=True))
        wb.close()
        headers = [str(h) for h in values[0]]
        return headers, [dict(zip(headers, r, strict=True)) for r in values[1:]]
    text = path.read_bytes().decode(spec.encoding or "utf-8")
    if spec.format is SourceFormat.jsonl:
        rows = [json.loads(line) for line in text.splitlines() if line]
        return (list(rows[0]) if rows else []), rows
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def _codes(spec: DatasetSpec, rows: list[dict[str, object]], headers: list[str]) -> list[str]:
    key = spec.field(spec.entity_key)
    col = next(h for h in headers if h in key.accepted_headers())
    return [str(r[col]) for r in rows]


@pytest.fixture(scope="module")
def small_zone(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[DemoFile]]:
    root = tmp_path_factory.mktemp("zone_a")
    return root, generate_zone(root, entities=SMALL, seed=SEED, as_of=AS_OF)


@pytest.fixture(scope="module")
def stats_zone(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[list[str], list[dict[str, object]]]]:
    root = tmp_path_factory.mktemp("zone_stats")
    specs = _spec_map()
    files = generate_zone(root, entities=STATS, seed=SEED, as_of=AS_OF)
    return {f.dataset_id: _read_rows(specs[f.dataset_id], f.path) for f in files}


def test_specs_parse_and_match_departments() -> None:
    departments, specs = load_demo_specs()
    ids = {d["id"] for d in departments}
    assert len(departments) >= 8
    for d in departments:
        assert set(d) == {"id", "name", "name_en", "kind"}
        assert d["kind"] in {"department", "other"}
    assert len(specs) >= 13
    for spec in specs:
        assert spec.department in ids, spec.id
        assert spec.schedule is not None
        assert spec.source.kind == "directory"
        assert spec.source.path.startswith(f"{spec.id}/*.")
    # the files on disk parse on their own too, as `datazone dataset apply` would read them
    folder = Path(__file__).resolve().parents[2] / "src" / "datazone" / "demo" / "specs"
    for path in folder.glob("*.yaml"):
        if path.name != "departments.yaml":
            DatasetSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def test_one_file_per_dataset_with_declared_name(small_zone: tuple[Path, list[DemoFile]]) -> None:
    root, files = small_zone
    specs = _spec_map()
    assert {f.dataset_id for f in files} == set(specs)
    for f in files:
        spec = specs[f.dataset_id]
        assert f.path == root / spec.id / f"{spec.id}_{AS_OF:%Y%m%d}.{spec.format.value}"
        assert f.path.match(str(Path(spec.source.path)))
        _, rows = _read_rows(spec, f.path)
        assert len(rows) == f.rows


def test_deterministic(small_zone: tuple[Path, list[DemoFile]], tmp_path: Path) -> None:
    _, files = small_zone
    again = generate_zone(tmp_path, entities=SMALL, seed=SEED, as_of=AS_OF)
    for a, b in zip(files, again, strict=True):
        assert a.rows == b.rows
        assert a.path.read_bytes() == b.path.read_bytes(), a.dataset_id
    other = generate_zone(tmp_path / "other", entities=SMALL, seed=SEED + 1, as_of=AS_OF)
    reg = next(f for f in other if f.dataset_id == "mr_registration")
    assert (
        reg.path.read_bytes()
        != files[[f.dataset_id for f in files].index("mr_registration")].path.read_bytes()
    )


def test_codes_valid_distinct_and_referenced(small_zone: tuple[Path, list[DemoFile]]) -> None:
    _, files = small_zone
    specs = _spec_map()
    registered = list(enterprise_codes(SMALL, SEED, as_of=AS_OF))
    assert len(registered) == SMALL == len(set(registered))
    assert all(uscc.is_valid(c) for c in registered)
    assert {c[:2] for c in registered} <= {"91", "92", "93"}
    for f in files:
        spec = specs[f.dataset_id]
        headers, rows = _read_rows(spec, f.path)
        codes = _codes(spec, rows, headers)
        assert all(uscc.is_valid(c) for c in codes), f.dataset_id
        if f.dataset_id == "mr_registration":
            assert codes == registered
        else:
            assert set(codes) <= set(registered), f.dataset_id


def test_headers_and_encodings(small_zone: tuple[Path, list[DemoFile]]) -> None:
    _, files = small_zone
    specs = _spec_map()
    for f in files:
        spec = specs[f.dataset_id]
        raw = f.path.read_bytes()
        if spec.format is SourceFormat.xlsx:
            assert raw[:2] == b"PK"
            continue
        if spec.encoding == "utf-8-sig":
            assert raw.startswith(b"\xef\xbb\xbf")
        else:
            assert not raw.startswith(b"\xef\xbb\xbf")
        if spec.encoding in ("gb18030", "gbk"):
            with pytest.raises(UnicodeDecodeError):
                raw.decode("utf-8")
        text = raw.decode(spec.encoding or "utf-8")
        headers, _ = _read_rows(spec, f.path)
        expected = [fs.headers[0] if spec.format is SourceFormat.csv else fs.name for fs in spec.fields]
        if spec.deletion_marker is not None:
            expected.append(spec.deletion_marker.headers[0])
        assert headers == expected, f.dataset_id
        assert text


def test_registration_quirks(stats_zone: dict[str, tuple[list[str], list[dict[str, object]]]]) -> None:
    _, rows = stats_zone["mr_registration"]
    founded = [str(r["成立日期"]) for r in rows]
    assert any("/" in d for d in founded) and any("-" in d for d in founded)
    capital = [str(r["注册资本(万元)"]) for r in rows]
    assert any("," in c for c in capital)
    assert all(1 <= float(c.replace(",", "")) <= 100_000 for c in capital)
    names = [str(r["企业名称"]) for r in rows]
    assert len(set(names)) == len(names)
    assert all(n.startswith("北京") or "（北京）" in n for n in names)
    status = [str(r["登记状态"]) for r in rows]
    share = {s: status.count(s) / len(status) for s in set(status)}
    assert 0.89 < share["存续"] + share["在业"] < 0.95
    assert 0.02 < share["吊销"] < 0.04
    assert 0.04 < share["注销"] < 0.06
    assert all(str(r["住所"]).startswith("北京市" + str(r["所属区县"])) for r in rows)


def test_other_quirks(stats_zone: dict[str, tuple[list[str], list[dict[str, object]]]]) -> None:
    _, penalties = stats_zone["mr_penalty"]
    assert all("年" in str(r["处罚决定日期"]) and str(r["处罚决定日期"]).endswith("日") for r in penalties)
    assert any(any("０" <= ch <= "９" for ch in str(r["罚款金额(元)"])) for r in penalties)
    _, si = stats_zone["si_headcount"]
    periods = {str(r["所属期"]) for r in si}
    assert len(periods) == 8 and all(
        len(p) == 8 and p.isdigit() and p[4:] in ("0101", "0401", "0701", "1001") for p in periods
    )
    _, hf = stats_zone["hf_contribution"]
    assert {r["操作标志"] for r in hf} == {"I"}
    _, certs = stats_zone["sci_certification"]
    assert all(isinstance(r["发证日期"], type(r["有效期至"])) for r in certs)
    assert all(hasattr(r["发证日期"], "year") for r in certs)  # real date cells, not text


def _by_code(table: tuple[list[str], list[dict[str, object]]], spec: DatasetSpec) -> set[str]:
    headers, rows = table
    return set(_codes(spec, rows, headers))


def test_signals_are_correlated(stats_zone: dict[str, tuple[list[str], list[dict[str, object]]]]) -> None:
    specs = _spec_map()
    _, grades = stats_zone["tax_credit_grade"]
    latest = max(int(str(r["评价年度"])) for r in grades)
    grade = {
        str(r["纳税人识别号"]): GRADE_SCORE[str(r["纳税信用等级"])]
        for r in grades
        if int(str(r["评价年度"])) == latest
    }
    share = {g: sum(1 for v in grade.values() if v == s) / len(grade) for g, s in GRADE_SCORE.items()}
    assert 0.1 < share["A"] < 0.2 and 0.4 < share["B"] < 0.6 and share["D"] < 0.08

    dishonest = _by_code(stats_zone["court_dishonest"], specs["court_dishonest"]) & set(grade)
    others = set(grade) - dishonest
    assert len(dishonest) >= 10
    mean_dishonest = np.mean([grade[c] for c in dishonest])
    mean_others = np.mean([grade[c] for c in others])
    assert mean_dishonest < mean_others - 0.6

    _, reg = stats_zone["mr_registration"]
    revoked = {str(r["统一社会信用代码"]) for r in reg if r["登记状态"] == "吊销"}
    abnormal = _by_code(stats_zone["mr_abnormal_operation"], specs["mr_abnormal_operation"])
    assert 0.03 < len(abnormal) / len(reg) < 0.07
    assert len(abnormal & revoked) / len(revoked) > 5 * len(abnormal) / len(reg)

    enforced = _by_code(stats_zone["court_enforcement"], specs["court_enforcement"])
    assert 0.005 < len(enforced) / len(reg) < 0.03
    assert _by_code(stats_zone["court_dishonest"], specs["court_dishonest"]) <= enforced

    certified = _by_code(stats_zone["sci_certification"], specs["sci_certification"])
    assert np.mean([grade[c] for c in certified & set(grade)]) > mean_others + 0.3
    _, patents = stats_zone["ip_patent"]
    inv = {str(r["统一社会信用代码"]): int(str(r["有效发明专利数"])) for r in patents}
    with_certs = [inv.get(c, 0) for c in certified]
    without = [inv.get(str(r["统一社会信用代码"]), 0) for r in reg if r["统一社会信用代码"] not in certified]
    assert np.mean(with_certs) > 5 * np.mean(without)

    # headcount grows for healthy firms and shrinks for poor ones
    _, si = stats_zone["si_headcount"]
    series: dict[str, dict[str, int]] = {}
    for r in si:
        series.setdefault(str(r["统一社会信用代码"]), {})[str(r["所属期"])] = int(str(r["参保人数"]))
    periods = sorted({p for s in series.values() for p in s})

    def change(codes: set[str]) -> float:
        full = [s for c, s in series.items() if c in codes and len(s) == len(periods) and s[periods[0]] >= 5]
        return float(np.mean([np.log((s[periods[-1]] + 1) / (s[periods[0]] + 1)) for s in full]))

    top = {c for c, g in grade.items() if g == 4}
    bottom = {c for c, g in grade.items() if g <= 1}
    assert change(top) > change(bottom) + 0.1


def test_ingest_accepts_every_row(small_zone: tuple[Path, list[DemoFile]]) -> None:
    """The demo must load with zero rejects through the real readers and validator."""
    formats = pytest.importorskip("datazone.ingest.formats")
    validation = pytest.importorskip("datazone.ingest.validation")
    _, files = small_zone
    specs = _spec_map()
    for f in files:
        spec = specs[f.dataset_id]
        validator = None
        rows = 0
        keys: set[tuple[object, ...]] = set()
        for batch in formats.read_batches(
            f.path, format=spec.format, encoding=spec.encoding, sheet=spec.sheet
        ):
            if validator is None:
                validator = validation.RecordValidator(spec, batch.columns)
            valid = validator.validate(batch)
            assert valid.rows_rejected == 0, (f.dataset_id, valid.rejects[:3])
            rows += valid.rows_read
            cols = [valid.table.column(k).to_pylist() for k in spec.record_key()]
            keys.update(zip(*cols, strict=True))
        assert rows == f.rows, f.dataset_id
        assert len(keys) == f.rows, f"{f.dataset_id}: duplicate record keys"
