"""`datazone-client psi` against the stand-in PSI gateway: files in, CSV out, exit codes, resuming."""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from datazone.client import cli
from datazone.client.commands import common
from datazone.client.sdk import ZoneClient
from tests.client.codes import bad_check
from tests.client.fake_gateway import CLIENT_ID, SECRET, URL
from tests.client.psi_gateway import PsiGateway, free_port
from tests.client.test_psi_sdk import (
    ENGINE_INSTALLED,
    FAST,
    LABELS,
    PRODUCTS,
    ZONE,
    bank_list,
    plaintext,
    write_list,
)

runner = CliRunner()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("DATAZONE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATAZONE_PROFILE", str(tmp_path / "no-profile.toml"))


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Iterator[PsiGateway]:
    stand_in = PsiGateway(zone_slice=ZONE, zone_labels=LABELS, products=dict(PRODUCTS), max_chunk_items=64)

    def client(ctx: Any) -> ZoneClient:
        zone = ZoneClient(
            url=URL, client_id=CLIENT_ID, client_secret=SECRET, retry=FAST, transport=stand_in.transport()
        )
        zone._sleep = lambda s: None
        return zone

    monkeypatch.setattr(common, "zone_client", client)
    yield stand_in
    stand_in.close()


def invoke(*args: str) -> Any:
    return runner.invoke(cli.app, list(args))


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def test_psi_writes_the_matches(gateway: PsiGateway, tmp_path: Path) -> None:
    codes = bank_list(count=200)
    source = write_list(tmp_path / "customers.csv", [*codes, codes[0]])
    out = tmp_path / "matches.csv"
    result = invoke(
        "psi", str(source), "--product", "dishonest-debtor-psi", "--purpose", "pre_loan", "--output", str(out)
    )
    assert result.exit_code == 0, result.output
    expected = plaintext(codes)
    assert {r["uscc"] for r in rows(out)} == expected
    assert all(int(r["line"]) == codes.index(r["uscc"]) + 2 for r in rows(out))
    assert f"{len(expected)} of 200 enterprises matched (oprf)" in result.output
    assert "1 duplicate USCCs joined once (line 202 repeats line 2)" in result.output
    assert "charged 5.00 yuan" in result.output
    # the same command again: the same matches from the run's receipt, no new session, no charge
    sessions = len(gateway.sessions)
    again = invoke(
        "psi", str(source), "--product", "dishonest-debtor-psi", "--purpose", "pre_loan", "--output", str(out)
    )
    assert again.exit_code == 0, again.output
    assert len(gateway.sessions) == sessions and "charged" not in again.output.replace("charged again", "")
    assert "nothing asked or charged again" in again.output
    assert {r["uscc"] for r in rows(out)} == expected


def test_psi_prints_the_matches_without_an_output(gateway: PsiGateway, tmp_path: Path) -> None:
    codes = bank_list(count=120)
    source = write_list(tmp_path / "customers.csv", codes)
    result = invoke(
        "psi", str(source), "--product", "dishonest-debtor-psi", "--purpose", "pre_loan", "--labeled"
    )
    assert result.exit_code == 0, result.output
    for code in plaintext(codes):
        assert code in result.output and LABELS[code]["name"] in result.output
    # the receipt of the finished run, beside the input: no key left in it
    [receipt] = tmp_path.glob("*.psi-state.json")
    assert json.loads(receipt.read_text())["client_key"] is None


def test_psi_labeled_csv_has_the_label_columns(gateway: PsiGateway, tmp_path: Path) -> None:
    codes = bank_list(start=2400, count=150)
    source = write_list(tmp_path / "customers.csv", codes, header="统一社会信用代码")
    out = tmp_path / "labeled.csv"
    result = invoke(
        "psi",
        str(source),
        "--product",
        "dishonest-debtor-psi",
        "--purpose",
        "post_loan",
        "--labeled",
        "-o",
        str(out),
    )
    assert result.exit_code == 0, result.output
    written = rows(out)
    assert list(written[0]) == ["line", "uscc", "name", "debt.cases", "debt.amount_fen"]
    assert {r["uscc"]: r["debt.amount_fen"] for r in written} == {
        c: str(LABELS[c]["debt"]["amount_fen"]) for c in plaintext(codes)
    }


def test_psi_size_only_prints_the_count(gateway: PsiGateway, tmp_path: Path) -> None:
    codes = bank_list(count=150)
    source = write_list(tmp_path / "customers.csv", codes)
    result = invoke("psi", str(source), "--product", "debtor-count-psi", "--purpose", "anti_fraud")
    assert result.exit_code == 0, result.output
    assert f"{len(plaintext(codes))} of 150 enterprises are in debtor-count-psi's slice" in result.output
    assert not any(code in result.output for code in codes)


def test_psi_invalid_lines_exit_2_and_send_nothing(gateway: PsiGateway, tmp_path: Path) -> None:
    codes = bank_list(count=150)
    codes[3] = bad_check(codes[3])
    codes[40] = "not-a-code"
    source = write_list(tmp_path / "customers.csv", codes)
    out = tmp_path / "matches.csv"
    result = invoke(
        "psi", str(source), "--product", "dishonest-debtor-psi", "--purpose", "pre_loan", "-o", str(out)
    )
    assert result.exit_code == 2
    assert "2 USCCs in" in result.output and "nothing was sent" in result.output
    assert "line 5: check character" in result.output and "line 42: a USCC has 18 characters" in result.output
    assert codes[3] not in result.output
    assert gateway.raw == [] and not out.exists()  # the stand-in saw no request at all


def test_psi_dropped_connection_then_the_same_command_continues(gateway: PsiGateway, tmp_path: Path) -> None:
    codes = bank_list(count=250)
    source = write_list(tmp_path / "customers.csv", codes)
    out = tmp_path / "matches.csv"
    args = ("psi", str(source), "--product", "dishonest-debtor-psi", "--purpose", "pre_loan", "-o", str(out))
    gateway.drop = ("PUT", "/v1/psi/sessions/ps_0/chunks/1")
    result = invoke(*args)
    assert result.exit_code == 1
    assert "unreachable" in result.output and "run the same command again" in result.output
    assert str(tmp_path / "matches.csv.psi-state.json") in result.output.replace("\n", "")
    gateway.up()
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "continued after 1 chunks already answered" in result.output
    assert {r["uscc"] for r in rows(out)} == plaintext(codes)
    assert [i for i, _ in gateway.puts()] == [0, 1, 1, 2, 3]


def test_psi_refusal_exits_1_with_the_problem(gateway: PsiGateway, tmp_path: Path) -> None:
    source = write_list(tmp_path / "customers.csv", bank_list(count=20))
    result = invoke("psi", str(source), "--product", "dishonest-debtor-psi", "--purpose", "pre_loan")
    assert result.exit_code == 1
    assert "422 psi-set-below-floor" in result.output and "[check: psi-floor]" in result.output


def test_psi_options_that_cannot_work(gateway: PsiGateway, tmp_path: Path) -> None:
    source = write_list(tmp_path / "customers.csv", bank_list(count=120))
    result = invoke(
        "psi", str(source), "--product", "dishonest-debtor-psi", "--purpose", "pre_loan", "--mode", "engine"
    )
    assert result.exit_code == 2 and "--mode engine needs --peer" in result.output
    result = invoke("psi", str(tmp_path / "absent.csv"), "--product", "p", "--purpose", "pre_loan")
    assert result.exit_code == 2 and "does not exist" in result.output
    assert gateway.raw == []
    assert not re.search(r"--\S*secret", invoke("psi", "--help").output.lower())


@pytest.mark.skipif(
    not ENGINE_INSTALLED, reason="SecretFlow's engine (datazone-client[engine]) is not installed here"
)
def test_psi_engine_mode_with_a_peer(
    gateway: PsiGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway.workdir = tmp_path / "zone"
    codes = bank_list(start=300, count=200)
    source = write_list(tmp_path / "customers.csv", codes)
    out = tmp_path / "matches.csv"
    result = invoke(
        "psi",
        str(source),
        "--product",
        "dishonest-debtor-psi",
        "--purpose",
        "pre_loan",
        "--mode",
        "engine",
        "--peer",
        f"127.0.0.1:{free_port()}",
        "-o",
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert f"{len(plaintext(codes))} of 200 enterprises matched (engine, rr22)" in result.output
    assert {r["uscc"] for r in rows(out)} == plaintext(codes)
