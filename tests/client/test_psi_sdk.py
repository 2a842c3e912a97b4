"""The SDK's side of PSI against a stand-in gateway that runs the zone's real cryptography.

Every intersection is compared with Python's own set intersection of the same codes;
every byte the SDK sends is searched for the bank's codes and their plain hashes.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openpyxl import Workbook

from datazone.client import ConfigError, InvalidUSCCs, RetryPolicy, ZoneClient, ZoneError, ZoneUnreachable
from datazone.client.psi import (
    OPRF_MAX_ITEMS,
    InstitutionList,
    InvalidListedUSCCs,
    PsiJobFailed,
    PsiMode,
    PsiStateError,
    choose_mode,
    read_institution_list,
)
from datazone.client.sheets import InputFileError
from tests.client.codes import bad_check, make_uscc
from tests.client.fake_gateway import CLIENT_ID, SECRET, URL
from tests.client.psi_gateway import PsiGateway, PsiProduct, free_port

FAST = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01)
# the engine is the client distribution's optional extra: tests/client/test_distribution.py runs
# this file where it is not installed
ENGINE_INSTALLED = importlib.util.find_spec("spu") is not None
PRODUCTS = {
    "dishonest-debtor-psi": PsiProduct("dishonest-debtor-psi", labeled=True),
    "debtor-count-psi": PsiProduct("debtor-count-psi", result="size"),
}
ZONE = [make_uscc(n) for n in range(0, 3000, 7)]  # 429 enterprises on the list
LABELS: dict[str, dict[str, Any]] = {
    code: {"name": f"失信企业{n}", "debt": {"cases": n % 5 + 1, "amount_fen": n * 1000}}
    for code, n in zip(ZONE, range(0, 3000, 7), strict=True)
}


def bank_list(start: int = 1000, count: int = 250) -> list[str]:
    """A list that meets the slice in about one code in seven."""
    return [make_uscc(n) for n in range(start, start + count)]


@pytest.fixture
def gateway() -> Iterator[PsiGateway]:
    stand_in = PsiGateway(zone_slice=ZONE, zone_labels=LABELS, products=dict(PRODUCTS), max_chunk_items=64)
    yield stand_in
    stand_in.close()


def client_for(gateway: PsiGateway, retry: RetryPolicy = FAST) -> ZoneClient:
    zone = ZoneClient(
        url=URL, client_id=CLIENT_ID, client_secret=SECRET, retry=retry, transport=gateway.transport()
    )
    zone._sleep = lambda s: None
    return zone


def plaintext(codes: list[str]) -> set[str]:
    return set(codes) & set(ZONE)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def write_list(path: Path, codes: list[str], header: str = "uscc") -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["客户", header])
        for i, code in enumerate(codes):
            writer.writerow([f"客户{i}", code])
    return path


# -- right answers -----------------------------------------------------------------------------


def test_plain_intersection_equals_the_plaintext_one(gateway: PsiGateway, tmp_path: Path) -> None:
    codes = bank_list()
    source = write_list(tmp_path / "customers.csv", codes)
    seen: list[tuple[int, int]] = []
    out = tmp_path / "matches.csv"
    with client_for(gateway) as zone:
        result = zone.psi(
            "dishonest-debtor-psi",
            source,
            purpose="pre_loan",
            output=out,
            progress=lambda d, t: seen.append((d, t)),
        )
    expected = plaintext(codes)
    assert 30 < len(expected) < 40  # the list really meets the slice, and not everywhere
    assert {m.uscc for m in result.matched} == expected
    assert result.size == len(expected) and result.items == 250 and result.result == "intersection"
    # lines are the file's: header on line 1, code i on line i + 2
    assert all(m.line == codes.index(m.uscc) + 2 for m in result.matched)
    assert [m.line for m in result.matched] == sorted(m.line for m in result.matched)
    assert all(m.labels is None for m in result.matched)
    rows = read_rows(out)
    assert [(int(r["line"]), r["uscc"]) for r in rows] == [(m.line, m.uscc) for m in result.matched]
    assert list(rows[0]) == ["line", "uscc"]
    # 250 codes in chunks of 64: 4 chunks, progress after each, ending at the whole list
    assert [i for i, _ in gateway.puts()] == [0, 1, 2, 3]
    assert seen[0] == (0, 250) and seen[-1] == (250, 250)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    # the state stays as the run's receipt, without the OpenMined client key it no longer needs
    receipt = json.loads((tmp_path / "matches.csv.psi-state.json").read_text())
    assert receipt["client_key"] is None and receipt["pending"] is None and len(receipt["chunks"]) == 4
    assert result.session_id in gateway.sessions and result.charged_fen == 500


def test_rerun_of_a_finished_run_asks_the_zone_nothing_and_pays_nothing(
    gateway: PsiGateway, tmp_path: Path
) -> None:
    """`datazone-client psi` run again on the same list and output: the same matches from the run's
    receipt, no new session, nothing sent; another list with the same output is a new run."""
    codes = bank_list()
    source = write_list(tmp_path / "customers.csv", codes)
    out = tmp_path / "matches.csv"
    with client_for(gateway) as zone:
        first = zone.psi("dishonest-debtor-psi", source, purpose="pre_loan", output=out)
    sent, sessions = len(gateway.raw), len(gateway.sessions)
    out.unlink()
    with client_for(gateway) as zone:
        again = zone.psi("dishonest-debtor-psi", source, purpose="pre_loan", output=out)
    assert len(gateway.raw) == sent and len(gateway.sessions) == sessions  # nothing asked, nothing billed
    assert [m.uscc for m in again.matched] == [m.uscc for m in first.matched]
    assert again.session_id == first.session_id and again.resumed_chunks == 4
    assert again.from_receipt and again.charged_fen == 0 and not first.from_receipt
    assert [(r["line"], r["uscc"]) for r in read_rows(out)] == [(str(m.line), m.uscc) for m in first.matched]
    # another list (one code changed) is another run: a new session, and the receipt replaced
    other = write_list(tmp_path / "customers2.csv", [*codes[:-1], make_uscc(99999)])
    with client_for(gateway) as zone:
        third = zone.psi("dishonest-debtor-psi", other, purpose="pre_loan", output=out)
    assert len(gateway.sessions) == sessions + 1 and third.session_id != first.session_id
    assert third.charged_fen == 500


def test_codes_given_directly_and_duplicates_joined_once(gateway: PsiGateway) -> None:
    codes = bank_list(count=120)
    given = [*codes[:60], codes[3].lower(), f"  {codes[10]} ", *codes[60:]]
    with client_for(gateway) as zone:
        result = zone.psi("dishonest-debtor-psi", given, purpose="post_loan")
    assert {m.uscc for m in result.matched} == plaintext(codes)
    # positions are 1-based lines; the repeats (positions 61, 62) point at their first occurrence
    assert [(d.line, d.first_line) for d in result.duplicates] == [(61, 4), (62, 11)]
    session = gateway.sessions[result.session_id or ""]
    assert session["set_size"] == 120 and session["items_received"] == 120


def test_size_only_product_gives_the_size_and_no_enterprise(gateway: PsiGateway, tmp_path: Path) -> None:
    codes = bank_list(start=1, count=300)
    out = tmp_path / "count.csv"
    with client_for(gateway) as zone:
        result = zone.psi("debtor-count-psi", codes, purpose="anti_fraud", output=out)
    assert result.result == "size" and result.matched == []
    assert result.size == len(plaintext(codes)) > 0
    assert read_rows(out) == [
        {"product": "debtor-count-psi", "items": "300", "intersection_size": str(result.size)}
    ]


def test_labeled_psi_returns_the_fields_of_matched_enterprises_only(
    gateway: PsiGateway, tmp_path: Path
) -> None:
    codes = bank_list(start=2000, count=200)
    out = tmp_path / "labeled.csv"
    with client_for(gateway) as zone:
        result = zone.psi("dishonest-debtor-psi", codes, purpose="pre_loan", labeled=True, output=out)
    expected = plaintext(codes)
    assert {m.uscc for m in result.matched} == expected and expected
    assert all(m.labels == LABELS[m.uscc] for m in result.matched)
    rows = read_rows(out)
    assert list(rows[0]) == ["line", "uscc", "name", "debt.cases", "debt.amount_fen"]
    assert {r["uscc"]: r["name"] for r in rows} == {c: LABELS[c]["name"] for c in expected}
    # the labeled path never needs the OpenMined setup
    assert not any(r.url.endswith("/setup") for r in gateway.psi_requests())


def test_nothing_sent_holds_a_code_or_a_plain_hash_of_one(gateway: PsiGateway) -> None:
    codes = bank_list(start=500, count=150)
    needles: set[bytes] = set()
    for code in codes:
        raw = code.encode()
        needles |= {raw, code.encode("utf-16-le")}
        for algorithm in ("sha256", "sha1", "md5"):
            digest = hashlib.new(algorithm, raw).digest()
            needles |= {digest, digest.hex().encode(), digest.hex().upper().encode()}
    with client_for(gateway) as zone:
        zone.psi("dishonest-debtor-psi", codes, purpose="pre_loan")
        zone.psi("dishonest-debtor-psi", codes, purpose="pre_loan", labeled=True)
        zone.psi("debtor-count-psi", codes, purpose="pre_loan")
    assert len(gateway.puts()) == 9  # three runs of three chunks: the bodies searched below exist
    for request in gateway.raw:
        blob = request.content + request.url.encode() + json.dumps(request.headers).encode()
        leaked = [n for n in needles if n in blob]
        assert leaked == [], f"{request.method} {request.url} carries a code or its hash"


# -- resuming ----------------------------------------------------------------------------------


@pytest.mark.parametrize("labeled", [False, True])
def test_dropped_connection_resumes_from_the_first_missing_chunk(
    gateway: PsiGateway, tmp_path: Path, labeled: bool
) -> None:
    codes = bank_list(start=3000 if labeled else 10, count=300)  # 5 chunks of 64
    out = tmp_path / "matches.csv"
    state = tmp_path / "matches.csv.psi-state.json"
    first_session = "ps_0"
    gateway.drop = ("PUT", f"/v1/psi/sessions/{first_session}/chunks/2")
    with client_for(gateway) as zone, pytest.raises(ZoneUnreachable):
        zone.psi("dishonest-debtor-psi", codes, purpose="pre_loan", labeled=labeled, output=out)
    # the gateway answered chunk 2 (and would bill it); the bank kept chunks 0 and 1 only
    assert gateway.sessions[first_session]["chunks_done"] == [0, 1, 2]
    assert state.exists() and not out.exists()
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    kept = json.loads(state.read_text())
    assert sorted(kept["chunks"]) == ["0", "1"]
    assert all(code not in state.read_text() for code in codes)  # positions and keys, never a code
    first_puts = gateway.puts()
    assert [i for i, _ in first_puts] == [0, 1, 2]

    gateway.up()
    with client_for(gateway) as zone:
        result = zone.psi("dishonest-debtor-psi", codes, purpose="pre_loan", labeled=labeled, output=out)
    resumed_puts = gateway.puts()[len(first_puts) :]
    # continued at chunk 2 with the very body sent before (a free replay), then 3 and 4
    assert [i for i, _ in resumed_puts] == [2, 3, 4]
    assert resumed_puts[0][1] == first_puts[2][1]
    assert len(gateway.sessions) == 1 and result.session_id == first_session
    assert result.resumed_chunks == 2
    assert {m.uscc for m in result.matched} == plaintext(codes)
    if labeled:
        assert all(m.labels == LABELS[m.uscc] for m in result.matched)
    # the state stays as the finished run's receipt, with no key or pending chunk left in it
    receipt = json.loads(state.read_text())
    assert receipt["client_key"] is None and receipt["pending"] is None
    assert len(read_rows(out)) == len(plaintext(codes))


def test_plain_chunk_bodies_are_identical_when_sent_again(gateway: PsiGateway, tmp_path: Path) -> None:
    """Same client key, same codes: the same bytes (what makes a replay free and not a conflict)."""
    codes = bank_list(count=100)
    gateway.drop = ("PUT", "/v1/psi/sessions/ps_0/chunks/0")
    state = tmp_path / "s.json"
    with client_for(gateway) as zone, pytest.raises(ZoneUnreachable):
        zone.psi("dishonest-debtor-psi", codes, purpose="pre_loan", state_path=state)
    gateway.up()
    with client_for(gateway) as zone:
        zone.psi("dishonest-debtor-psi", codes, purpose="pre_loan", state_path=state)
    bodies = [body for index, body in gateway.puts() if index == 0]
    assert len(bodies) == 2 and bodies[0] == bodies[1]
    assert not any(r for r in gateway.raw if "chunk-conflict" in r.url)


def test_lost_session_answer_is_asked_again_under_the_same_key(gateway: PsiGateway, tmp_path: Path) -> None:
    codes = bank_list(count=100)
    gateway.drop = ("POST", "/v1/psi/sessions")
    state = tmp_path / "s.json"
    with client_for(gateway) as zone, pytest.raises(ZoneUnreachable):
        zone.psi("dishonest-debtor-psi", codes, purpose="pre_loan", state_path=state)
    gateway.up()
    with client_for(gateway) as zone:
        result = zone.psi("dishonest-debtor-psi", codes, purpose="pre_loan", state_path=state)
    posts = [r for r in gateway.psi_requests() if r.method == "POST"]
    assert len(posts) == 2 and posts[0].headers["idempotency-key"] == posts[1].headers["idempotency-key"]
    assert len(gateway.sessions) == 1  # opened (and charged) once
    assert {m.uscc for m in result.matched} == plaintext(codes)


def test_another_list_does_not_continue_a_state_file(gateway: PsiGateway, tmp_path: Path) -> None:
    codes = bank_list(count=200)
    gateway.drop = ("PUT", "/v1/psi/sessions/ps_0/chunks/1")
    state = tmp_path / "s.json"
    with client_for(gateway) as zone, pytest.raises(ZoneUnreachable):
        zone.psi("dishonest-debtor-psi", codes, purpose="pre_loan", state_path=state)
    gateway.up()
    sent = len(gateway.raw)
    other = [*codes[:-1], make_uscc(99999)]
    with client_for(gateway) as zone:
        with pytest.raises(PsiStateError) as refused:
            zone.psi("dishonest-debtor-psi", other, purpose="pre_loan", state_path=state)
        assert str(state) in str(refused.value) and "another list" in str(refused.value)
        assert "delete the state file" in str(refused.value)
        with pytest.raises(PsiStateError, match="purpose 'pre_loan' \\(now 'post_loan'\\)"):
            zone.psi("dishonest-debtor-psi", codes, purpose="post_loan", state_path=state)
    assert len(gateway.raw) == sent and state.exists()  # nothing sent, the state kept for the right list


def test_expired_session_says_to_start_anew(gateway: PsiGateway, tmp_path: Path) -> None:
    codes = bank_list(count=200)
    gateway.drop = ("PUT", "/v1/psi/sessions/ps_0/chunks/1")
    state = tmp_path / "s.json"
    with client_for(gateway) as zone, pytest.raises(ZoneUnreachable):
        zone.psi("dishonest-debtor-psi", codes, purpose="pre_loan", state_path=state)
    gateway.up()
    gateway.sessions["ps_0"]["state"] = "expired"
    with client_for(gateway) as zone, pytest.raises(PsiStateError, match="delete the state file"):
        zone.psi("dishonest-debtor-psi", codes, purpose="pre_loan", state_path=state)
    assert [i for i, _ in gateway.puts()] == [0, 1]


def test_garbled_state_file_is_refused_clearly(gateway: PsiGateway, tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    state.write_text("{not json")
    with client_for(gateway) as zone, pytest.raises(PsiStateError, match="cannot be read as a PSI state"):
        zone.psi("dishonest-debtor-psi", bank_list(count=100), purpose="pre_loan", state_path=state)
    assert gateway.raw == []


# -- the gateway's answers ---------------------------------------------------------------------


def test_setup_still_building_is_waited_for(gateway: PsiGateway) -> None:
    gateway.setup_building = 3
    waits: list[float] = []
    with client_for(gateway) as zone:
        zone._sleep = waits.append
        result = zone.psi("dishonest-debtor-psi", bank_list(count=100), purpose="pre_loan")
    assert {m.uscc for m in result.matched} == plaintext(bank_list(count=100))
    assert len([r for r in gateway.psi_requests() if r.url.endswith("/setup")]) == 4
    assert len(waits) == 3


def test_set_below_the_floor_is_refused_and_leaves_no_state(gateway: PsiGateway, tmp_path: Path) -> None:
    out = tmp_path / "m.csv"
    with client_for(gateway) as zone, pytest.raises(ZoneError) as refused:
        zone.psi("dishonest-debtor-psi", bank_list(count=40), purpose="pre_loan", output=out)
    assert refused.value.status == 422 and refused.value.type == "psi-set-below-floor"
    assert "at least 100" in str(refused.value)
    assert gateway.puts() == [] and not out.exists()
    assert not (tmp_path / "m.csv.psi-state.json").exists()


def test_urls_outside_the_gateway_get_no_token(gateway: PsiGateway) -> None:
    original = gateway.create_session

    def elsewhere(body: dict[str, Any]) -> httpx.Response:
        resp = original(body)
        session = json.loads(resp.content)
        session["setup_url"] = "https://collector.example/setup"
        return httpx.Response(201, json=session)

    gateway.create_session = elsewhere  # type: ignore[method-assign]
    with client_for(gateway) as zone, pytest.raises(ZoneError, match="outside the gateway"):
        zone.psi("dishonest-debtor-psi", bank_list(count=100), purpose="pre_loan")
    assert not any("collector.example" in r.url for r in gateway.raw)


def test_another_body_for_a_used_chunk_is_a_conflict(gateway: PsiGateway, tmp_path: Path) -> None:
    """The stand-in keeps the contract the real gateway keeps (409), which the SDK never triggers."""
    codes = bank_list(count=100)
    gateway.drop = ("PUT", "/v1/psi/sessions/ps_0/chunks/0")
    state = tmp_path / "s.json"
    with client_for(gateway) as zone, pytest.raises(ZoneUnreachable):
        zone.psi("dishonest-debtor-psi", codes, purpose="pre_loan", state_path=state)
    gateway.up()
    kept = json.loads(state.read_text())
    kept["client_key"] = "11" * 32  # as if the key had been lost and another one made
    state.write_text(json.dumps(kept))
    with client_for(gateway) as zone, pytest.raises(ZoneError) as refused:
        zone.psi("dishonest-debtor-psi", codes, purpose="pre_loan", state_path=state)
    assert refused.value.status == 409 and refused.value.type == "psi-chunk-conflict"


# -- the bank's file, before anything is sent --------------------------------------------------


def test_invalid_codes_are_reported_by_line_before_anything_is_sent(
    gateway: PsiGateway, tmp_path: Path
) -> None:
    codes = bank_list(count=150)
    codes[3] = bad_check(codes[3])  # line 5
    codes[5] = codes[5][:17]  # line 7
    codes[8] = ""  # line 10
    source = write_list(tmp_path / "customers.csv", codes)
    with client_for(gateway) as zone, pytest.raises(InvalidUSCCs) as refused:
        zone.psi("dishonest-debtor-psi", source, purpose="pre_loan", output=tmp_path / "m.csv")
    error = refused.value
    assert isinstance(error, InvalidListedUSCCs)
    assert error.lines == [5, 7, 10]
    assert [line for line, _ in error.problems] == [5, 7, 10]
    assert "check character" in error.problems[0][1] and "18 characters" in error.problems[1][1]
    assert error.problems[2][1] == "empty"
    message = str(error)
    assert "3 of 150" in message and "line 5:" in message and "line 10: empty" in message
    assert codes[3] not in message and codes[5] not in message  # the list is the bank's secret
    assert gateway.raw == []  # not even a token was asked for
    assert not (tmp_path / "m.csv.psi-state.json").exists()


def test_xlsx_list_with_excel_row_numbers(gateway: PsiGateway, tmp_path: Path) -> None:
    codes = bank_list(start=700, count=120)
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["客户名称", "统一社会信用代码"])
    for i, code in enumerate(codes):
        sheet.append([f"客户{i}", code])
    source = tmp_path / "customers.xlsx"
    book.save(source)
    with client_for(gateway) as zone:
        result = zone.psi("dishonest-debtor-psi", source, purpose="pre_loan")
    assert {m.uscc for m in result.matched} == plaintext(codes)
    assert all(m.line == codes.index(m.uscc) + 2 for m in result.matched)

    sheet.append([f"客户{len(codes)}", 911101050000000017])  # a number: Excel dropped digits
    book.save(source)
    with pytest.raises(InvalidListedUSCCs) as refused:
        read_institution_list(source)
    assert refused.value.lines == [len(codes) + 2]
    assert "format the column as text" in str(refused.value)


def test_unreadable_inputs() -> None:
    with pytest.raises(InputFileError, match="lists no USCCs"):
        read_institution_list([])
    with pytest.raises(InputFileError, match="does not exist"):
        read_institution_list("no-such-file.csv")
    listed = read_institution_list([make_uscc(1), make_uscc(2)])
    assert isinstance(listed, InstitutionList) and make_uscc(1) not in repr(listed)


def test_mode_by_size() -> None:
    assert choose_mode("auto", OPRF_MAX_ITEMS, "127.0.0.1:9000") is PsiMode.oprf
    assert choose_mode("auto", OPRF_MAX_ITEMS + 1, "127.0.0.1:9000") is PsiMode.engine
    assert choose_mode("auto", OPRF_MAX_ITEMS + 1, None) is PsiMode.oprf  # no engine without a peer
    assert choose_mode("oprf", 5_000_000, "127.0.0.1:9000") is PsiMode.oprf
    with pytest.raises(ValueError, match="peer_address"):
        choose_mode("engine", 10, None)
    with pytest.raises(ValueError, match="auto, oprf, engine"):
        choose_mode("fast", 10, None)
    for wrong in ("9000", "host:0", "host:70000", "a b:80"):
        with pytest.raises(ValueError, match="host:port"):
            choose_mode("engine", 10, wrong)


# -- the engine path ---------------------------------------------------------------------------


@pytest.fixture
def engine_gateway(gateway: PsiGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PsiGateway:
    if not ENGINE_INSTALLED:
        pytest.skip("SecretFlow's engine (datazone-client[engine]) is not installed here")
    gateway.workdir = tmp_path / "zone"
    # the SDK's private work directory lands here, so the test can see it is removed
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    return gateway


def test_engine_job_gets_the_plaintext_intersection(engine_gateway: PsiGateway, tmp_path: Path) -> None:
    codes = bank_list(start=100, count=300)
    out = tmp_path / "engine.csv"
    seen: list[tuple[int, int]] = []
    with client_for(engine_gateway) as zone:
        result = zone.psi(
            "dishonest-debtor-psi",
            codes,
            purpose="pre_loan",
            mode="engine",
            peer_address=f"127.0.0.1:{free_port()}",
            output=out,
            progress=lambda d, t: seen.append((d, t)),
            cache_dir=tmp_path / "cache",
        )
    assert result.mode == "engine" and result.protocol == "rr22" and result.job_id is not None
    assert {m.uscc for m in result.matched} == plaintext(codes) and result.size == len(plaintext(codes))
    assert all(m.line == codes.index(m.uscc) + 1 for m in result.matched)
    assert {r["uscc"] for r in read_rows(out)} == plaintext(codes)
    assert seen[0] == (0, 300) and seen[-1] == (300, 300)
    job = engine_gateway.jobs[result.job_id]
    assert engine_gateway.job_view(job)["status"] == "succeeded"
    created = next(r for r in engine_gateway.psi_requests() if r.url.endswith("/v1/psi/jobs"))
    sent = json.loads(created.content)
    assert sent["set_size"] == 300 and "BEGIN CERTIFICATE" in sent["institution_certificate_pem"]
    assert not any(code in created.content.decode() for code in codes)
    assert list((tmp_path / "tmp").iterdir()) == []  # the list's copy and the link keys are gone


def test_engine_job_with_a_wrong_ticket_fails_clearly(engine_gateway: PsiGateway, tmp_path: Path) -> None:
    original = engine_gateway.create_job
    tickets: list[str] = []

    def wrong_ticket(body: dict[str, Any]) -> httpx.Response:
        resp = original(body)
        job = json.loads(resp.content)
        job["ticket"] = "not-the-ticket-" + job["ticket"]
        tickets.append(job["ticket"])
        return httpx.Response(201, json=job)

    engine_gateway.create_job = wrong_ticket  # type: ignore[method-assign]
    with client_for(engine_gateway) as zone, pytest.raises(PsiJobFailed) as failed:
        zone.psi(
            "dishonest-debtor-psi",
            bank_list(count=150),
            purpose="pre_loan",
            mode="engine",
            peer_address=f"127.0.0.1:{free_port()}",
            output=tmp_path / "never.csv",
        )
    assert failed.value.problem["job_id"] == "pj_0"
    assert "ticket" in str(failed.value).lower() and tickets[0] not in str(failed.value)
    assert not (tmp_path / "never.csv").exists()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_unbalanced_job_keeps_the_zone_cache_for_the_next_job(
    engine_gateway: PsiGateway, tmp_path: Path
) -> None:
    codes = bank_list(start=40, count=150)
    cache = tmp_path / "cache"
    with client_for(engine_gateway) as zone:

        def run() -> Any:
            return zone.psi(
                "dishonest-debtor-psi",
                codes,
                purpose="pre_loan",
                mode="engine",
                protocol="unbalanced",
                peer_address=f"127.0.0.1:{free_port()}",
                cache_dir=cache,
            )

        first = run()
        second = run()
    for result in (first, second):
        assert result.protocol == "unbalanced"
        assert {m.uscc for m in result.matched} == plaintext(codes)
    assert first.cache_transferred and not second.cache_transferred
    asked = [
        json.loads(r.content)["have_cache"] for r in engine_gateway.psi_requests() if r.url.endswith("/jobs")
    ]
    assert asked == [False, True]
    cache_id = (cache / "dishonest-debtor-psi.cache-id").read_text().strip()
    assert (cache / cache_id).is_dir() and stat.S_IMODE((cache / cache_id).stat().st_mode) == 0o700


def test_engine_path_without_the_engine_names_the_extra_and_asks_the_zone_nothing(
    gateway: PsiGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules is how Python marks a module absent: find_spec and import both fail,
    # as where the engine extra is not installed (tests/client/test_distribution.py runs it there)
    monkeypatch.setitem(sys.modules, "spu", None)
    with (
        client_for(gateway) as zone,
        pytest.raises(ConfigError, match=r"pip install 'datazone-client\[engine\]'") as refused,
    ):
        zone.psi(
            "dishonest-debtor-psi",
            bank_list(count=150),
            purpose="pre_loan",
            mode="engine",
            peer_address=f"127.0.0.1:{free_port()}",
        )
    assert "OPRF" in str(refused.value)
    assert not any(r.url.endswith("/v1/psi/jobs") for r in gateway.psi_requests())
