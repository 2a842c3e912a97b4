"""Ingest benchmark: `datazone ingest` against PostgreSQL's own COPY (psql \\copy) and pandas to_sql.

Not part of the test suite. Run: `make bench` or `.venv/bin/python tests/bench_ingest.py [--rows N] [--big-rows N]`.

One run, one machine, one database: the same clean CSV (UTF-8, ISO dates, plain
numbers, 10 columns) is loaded by each contender into a fresh table. Each contender
runs in a child process so its wall time and peak RSS (ru_maxrss from wait4) are
its own. Medians over --repeat runs for COPY and ingest; to_sql is run once (it is
the slow baseline). Ratios are printed against COPY measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import yaml

ALPHABET = np.array(list("0123456789ABCDEFGHJKLMNPQRTUWXY"))
WEIGHTS = np.array([1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28])
HEADERS = [
    "统一社会信用代码",
    "企业名称",
    "注册资本",
    "成立日期",
    "登记状态",
    "行业代码",
    "所属区县",
    "参保人数",
    "纳税信用等级",
    "住所",
]
COLUMNS = [
    "uscc",
    "name",
    "capital",
    "founded",
    "status",
    "industry",
    "district",
    "staff",
    "tax_grade",
    "address",
]
PG_TYPES = ["text", "text", "numeric", "date", "text", "text", "text", "bigint", "text", "text"]


def make_csv(path: Path, rows: int, seed: int = 7) -> None:
    """A clean department file, written in chunks so even 10^7 rows need little memory."""
    rng = np.random.default_rng(seed)
    chunk = 500_000
    with pacsv.CSVWriter(path, pa.schema([(h, pa.string()) for h in HEADERS])) as w:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            ids = np.arange(start, start + n)
            body = np.array([f"91110105{i:09d}" for i in ids])
            digits = np.frombuffer("".join(body.tolist()).encode(), dtype=np.uint8).reshape(n, 17) - 48
            check = ALPHABET[(31 - (digits * WEIGHTS).sum(axis=1) % 31) % 31]
            uscc = np.char.add(body, check)
            days = rng.integers(0, 12000, n)
            founded = (np.datetime64("1990-01-01") + days).astype(str)
            cols = [
                uscc,
                np.char.add(np.char.add("北京测试", ids.astype(str)), "科技有限公司"),
                np.round(rng.lognormal(5, 1.5, n), 2).astype(str),
                founded,
                rng.choice(np.array(["存续", "在业", "注销", "吊销"]), n, p=[0.6, 0.32, 0.05, 0.03]),
                rng.choice(np.array(["C3911", "I6510", "F5191", "M7320", "L7212"]), n),
                rng.choice(np.array(["海淀区", "朝阳区", "丰台区", "西城区"]), n),
                rng.integers(0, 500, n).astype(str),
                rng.choice(np.array(["A", "B", "M", "C", "D"]), n),
                np.char.add(np.char.add("北京市海淀区测试路", (ids % 999).astype(str)), "号"),
            ]
            w.write_table(pa.table([pa.array(c.tolist(), pa.string()) for c in cols], names=HEADERS))


def spec(dataset_id: str, path: Path) -> dict[str, object]:
    fields: list[dict[str, object]] = [
        {"name": "uscc", "type": "uscc", "required": True, "headers": [HEADERS[0]]},
        {"name": "name", "type": "string", "required": True, "headers": [HEADERS[1]]},
        {"name": "capital", "type": "decimal", "headers": [HEADERS[2]]},
        {"name": "founded", "type": "date", "required": True, "headers": [HEADERS[3]]},
        {
            "name": "status",
            "type": "enum",
            "headers": [HEADERS[4]],
            "values": {"active": ["存续", "在业"], "deregistered": ["注销"], "revoked": ["吊销"]},
        },
        {"name": "industry", "type": "string", "headers": [HEADERS[5]]},
        {"name": "district", "type": "string", "headers": [HEADERS[6]]},
        {"name": "staff", "type": "integer", "headers": [HEADERS[7]]},
        {"name": "tax_grade", "type": "enum", "headers": [HEADERS[8]], "values": {g: [] for g in "ABMCD"}},
        {"name": "address", "type": "string", "headers": [HEADERS[9]], "grade": 3},
    ]
    return {
        "id": dataset_id,
        "name": "bench",
        "department": "bench-dept",
        "entity_key": "uscc",
        "fields": fields,
        "source": {"kind": "directory", "path": str(path)},
        "encoding": "utf-8",
    }


def timed_child(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process and its children, sampled every 20 ms.

    (ru_maxrss from wait4 is no good here: a forked child starts with its parent's high-water mark.)
    """
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
    return wall, peak / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--big-rows", type=int, default=10_000_000, help="rows of the peak-memory run (0: skip)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-to-sql", action="store_true")
    args = ap.parse_args()

    import pgserver
    import sqlalchemy as sa

    work = Path(tempfile.mkdtemp(prefix="dz-bench-"))
    server = None
    url = os.environ.get("DATAZONE_DATABASE_URL")
    if not url:
        server = pgserver.get_server(work / "pg", cleanup_mode="stop")
        url = server.get_uri()
    psql = shutil.which("psql") or str(Path(pgserver.__file__).parent / "pginstall/bin/psql")
    env = dict(os.environ, DATAZONE_DATABASE_URL=url, DATAZONE_HOME=str(work / "home"))
    py = sys.executable
    dz = [py, "-m", "datazone"]
    subprocess.run([*dz, "migrate"], env=env, check=True, capture_output=True)
    dept = work / "dept.yaml"
    dept.write_text("id: bench-dept\nname: 基准测试委办局\n", encoding="utf-8")
    subprocess.run([*dz, "department", "apply", str(dept)], env=env, check=True, capture_output=True)
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))

    csv_path = work / "clean.csv"
    t0 = time.perf_counter()
    make_csv(csv_path, args.rows)
    print(
        f"file: {args.rows:,} rows, {csv_path.stat().st_size / 2**20:.0f} MiB, made in {time.perf_counter() - t0:.1f} s"
    )

    def copy_once(i: int) -> tuple[float, float]:
        table = f"bench_copy_{i}"
        cols = ", ".join(f"{c} {t}" for c, t in zip(COLUMNS, PG_TYPES, strict=True))
        with engine.begin() as c:
            c.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
            c.execute(sa.text(f"CREATE TABLE {table} ({cols})"))
        return timed_child(
            [psql, url, "-q", "-c", f"\\copy {table} FROM '{csv_path}' WITH (FORMAT csv, HEADER true)"], env
        )

    def ingest_once(i: int, path: Path) -> tuple[float, float]:
        ds = f"bench_ingest_{i}"
        spec_path = work / f"{ds}.yaml"
        spec_path.write_text(yaml.safe_dump(spec(ds, path), allow_unicode=True), encoding="utf-8")
        subprocess.run([*dz, "dataset", "apply", str(spec_path)], env=env, check=True, capture_output=True)
        return timed_child([*dz, "ingest", "run", ds, "--file", str(path)], env)

    copy_runs, ingest_runs = [], []
    for i in range(args.repeat):  # alternate, so drift on a shared machine hits both alike
        copy_runs.append(copy_once(i))
        ingest_runs.append(ingest_once(i, csv_path))
        print(f"  round {i + 1}: COPY {copy_runs[-1][0]:.2f} s, ingest {ingest_runs[-1][0]:.2f} s")
    with engine.begin() as c:
        loaded = c.execute(sa.text("SELECT current_rows FROM dataset WHERE id = 'bench_ingest_0'")).scalar()
    assert loaded == args.rows, f"ingest loaded {loaded} rows, expected {args.rows}"

    copy_s = statistics.median(r[0] for r in copy_runs)
    ingest_s = statistics.median(r[0] for r in ingest_runs)
    ingest_mem = max(r[1] for r in ingest_runs)
    print()
    print(f"{'contender':34} {'median s':>9} {'rows/s':>11} {'vs COPY':>8} {'peak MiB':>9}")
    baseline = "psql \\copy (baseline)"
    print(
        f"{baseline:34} {copy_s:9.2f} {args.rows / copy_s:11,.0f} {1.0:8.2f} {max(r[1] for r in copy_runs):9.0f}"
    )
    print(
        f"{'datazone ingest':34} {ingest_s:9.2f} {args.rows / ingest_s:11,.0f} {copy_s / ingest_s:8.2f} {ingest_mem:9.0f}"
    )
    if not args.skip_to_sql:
        code = (
            "import pandas as pd, sqlalchemy as sa, sys\n"
            f"e = sa.create_engine({url.replace('postgresql://', 'postgresql+psycopg://', 1)!r})\n"
            f"df = pd.read_csv({str(csv_path)!r}, dtype=str)\n"
            f"df.columns = {COLUMNS!r}\n"
            "df.to_sql('bench_to_sql', e, if_exists='replace', index=False, chunksize=10000)\n"
        )
        sql_s, sql_mem = timed_child([py, "-c", code], env)
        print(
            f"{'pandas DataFrame.to_sql':34} {sql_s:9.2f} {args.rows / sql_s:11,.0f} {copy_s / sql_s:8.2f} {sql_mem:9.0f}"
        )
        print(f"\ningest vs to_sql: {sql_s / ingest_s:.1f}x faster (target >= 10x)")
    print(f"ingest vs COPY: {copy_s / ingest_s:.2f}x COPY's speed (target >= 0.5x)")

    if args.big_rows:
        big = work / "big.csv"
        t0 = time.perf_counter()
        make_csv(big, args.big_rows, seed=11)
        csv_path.unlink()
        print(
            f"\nbig file: {args.big_rows:,} rows, {big.stat().st_size / 2**30:.2f} GiB, made in {time.perf_counter() - t0:.0f} s"
        )
        big_s, big_mem = ingest_once(99, big)
        print(
            f"datazone ingest of {args.big_rows:,} rows: {big_s:.1f} s, peak RSS {big_mem:.0f} MiB (target < 1024 MiB)"
        )
    engine.dispose()
    if server is not None:
        server.cleanup()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
