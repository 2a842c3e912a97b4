"""The SDK's and `datazone-client`'s secure scoring: key and model files, registration, single
scores and batch jobs.

Files and bad input are tested without a gateway (a fake transport shows nothing was sent);
the rest runs against the real gateway on loopback over the scoring tests' zone
(tests/scoring/conftest.py: the synthetic zone, an institution of its own with consents, a
contract limiting jobs to 400 enterprises, chunks of 50), with the scoring worker running in a
thread as `datazone worker` would. Every score is compared with `plain_score` over the features
the product engine computes (the plaintext truth), up to the product's stochastic rounding.
"""

from __future__ import annotations

import csv
import json
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from datazone.client import RetryPolicy, ZoneClient, ZoneError, scoring
from datazone.client import cli as client_cli
from datazone.client.commands import common
from datazone.client.errors import ConfigError
from datazone.client.psi import InvalidListedUSCCs
from datazone.oauth import service as oauth_service
from datazone.privacy import paillier
from datazone.privacy import scoring as circuits
from datazone.scoring import worker as scoring_worker
from tests.client.fake_gateway import CLIENT_ID, SECRET, URL, FakeGateway
from tests.client.relay import Relay
from tests.client.wire import Wire
from tests.factories import bad_check, make_uscc
from tests.scoring import conftest as scoring_conftest
from tests.scoring.conftest import PRODUCT, ScoringZone
from tests.scoring.helpers import LOGISTIC_WEIGHTS, SCORECARD, assert_rounded, review

# the scoring tests' zone (module scope), here for this module's tests
scoring_zone = scoring_conftest.scoring_zone
QUICK = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)
PRICE_FEN = 200
runner = CliRunner()


def invoke(*args: str) -> Any:
    return runner.invoke(client_cli.app, list(args))


def logistic_doc(
    name: str, *, weights: dict[str, float] = LOGISTIC_WEIGHTS, scale: int = 10_000
) -> dict[str, Any]:
    """A logistic model as a risk team writes it."""
    return {
        "format": circuits.MODEL_FORMAT,
        "name": name,
        "product": PRODUCT,
        "purpose": "pre_loan",
        "kind": "logistic",
        "scale": scale,
        "intercept": -1.5,
        "description": "小微企业贷前评分",
        "features": [{"name": f, "weight": w} for f, w in weights.items()],
    }


def scorecard_doc(name: str, *, scale: int = 100) -> dict[str, Any]:
    features: list[dict[str, Any]] = []
    for f, (bins, points, missing) in SCORECARD.items():
        entry: dict[str, Any] = {"name": f, "bins": bins, "points": points}
        if missing is not None:
            entry["missing_points"] = missing
        features.append(entry)
    return {
        "format": circuits.MODEL_FORMAT,
        "name": name,
        "product": PRODUCT,
        "purpose": "pre_loan",
        "kind": "scorecard",
        "scale": scale,
        "intercept": 600,
        "features": features,
    }


def write_json(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def write_list(path: Path, codes: list[str], header: str = "uscc") -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["客户", header])
        for i, code in enumerate(codes):
            writer.writerow([f"客户{i}", code])
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeGateway:
    """A stand-in transport behind the CLI: it records whatever would have been sent."""
    gateway = FakeGateway()

    def client(ctx: Any) -> ZoneClient:
        return ZoneClient(
            url=URL, client_id=CLIENT_ID, client_secret=SECRET, retry=QUICK, transport=gateway.transport()
        )

    monkeypatch.setattr(common, "zone_client", client)
    return gateway


# -- key files ------------------------------------------------------------------------------------


def test_keygen_writes_a_private_key_file_once_and_reads_it_back(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "bank.json"
    result = invoke("model", "keygen", "--out", str(path))
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = scoring.read_key_file(path)
    assert key.public.bits == 2048 and key.fingerprint in result.output
    # the output names the fingerprint, never a factor of the key
    assert str(key.private.p)[:30] not in result.output and str(key.private.q)[:30] not in result.output
    # the key decrypts what its public half encrypts
    assert key.private.decrypt(key.public.encrypt(-4242)) == -4242
    before = path.read_bytes()
    again = invoke("model", "keygen", "--out", str(path))
    assert again.exit_code == 2 and "exists already" in again.output and "never overwritten" in again.output
    assert path.read_bytes() == before
    small = invoke("model", "keygen", "--out", str(tmp_path / "small.json"), "--bits", "1024")
    assert small.exit_code == 2 and not (tmp_path / "small.json").exists()
    with pytest.raises(scoring.KeyFileError, match="2048 to 4096 bits"):
        scoring.generate_key_file(tmp_path / "big.json", bits=8192)


def test_a_key_file_others_can_read_or_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bank.json"
    scoring.generate_key_file(path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600") as exposed:
        scoring.read_key_file(path)
    assert "readable by other users" in str(exposed.value)
    path.chmod(0o600)
    doc = json.loads(path.read_text())
    doc["fingerprint"] = "0" * 32
    altered = write_json(tmp_path / "altered.json", doc)
    altered.chmod(0o600)
    with pytest.raises(scoring.KeyFileError, match="altered"):
        scoring.read_key_file(altered)
    doc = json.loads(path.read_text())
    doc["private_key"]["p"] = doc["private_key"]["q"]
    broken = write_json(tmp_path / "broken.json", doc)
    broken.chmod(0o600)
    with pytest.raises(scoring.KeyFileError) as unusable:
        scoring.read_key_file(broken)
    assert "no usable private key" in str(unusable.value)
    assert doc["private_key"]["q"][:20] not in str(unusable.value)  # the key's numbers stay out of messages
    other = write_json(tmp_path / "model.json", logistic_doc("not-a-key"))
    other.chmod(0o600)
    with pytest.raises(scoring.KeyFileError, match="not a datazone scoring key file"):
        scoring.read_key_file(other)
    with pytest.raises(scoring.KeyFileError, match="model keygen"):
        scoring.read_key_file(tmp_path / "missing.json")


# -- bad input, nothing sent ----------------------------------------------------------------------


def test_an_invalid_model_file_lists_every_location_and_sends_nothing(
    tmp_path: Path, fake: FakeGateway
) -> None:
    key = tmp_path / "key.json"
    scoring.generate_key_file(key)
    doc = scorecard_doc("bad-card")
    doc["kind"] = "scorecard"
    doc["scale"] = 0
    doc["features"][0]["points"] = doc["features"][0]["points"][:-1]  # 3 points for 3 edges
    doc["features"][1]["bins"] = [5, 3, 1]  # not increasing
    doc["features"][2]["name"] = doc["features"][3]["name"]  # twice
    model = write_json(tmp_path / "model.json", doc)
    result = invoke("model", "register", "--model", str(model), "--key", str(key))
    assert result.exit_code == 2, result.output
    assert "nothing was sent" in result.output
    # all five problems, each on its own line with its location
    for location in (
        "scale",
        "features.0.points",
        "features.1.bins.1",
        "features.1.bins.2",
        "features.3.name",
    ):
        assert f"\n  {location}: " in result.output, location
    assert "(5 problems)" in result.output
    (tmp_path / "garbled.json").write_text('{"format": "datazone-scoring-model/1",', encoding="utf-8")
    garbled = invoke("model", "register", "--model", str(tmp_path / "garbled.json"), "--key", str(key))
    assert garbled.exit_code == 2 and "not JSON" in garbled.output
    missing = invoke("model", "register", "--model", str(tmp_path / "none.json"), "--key", str(key))
    assert missing.exit_code == 2 and "does not exist" in missing.output
    assert fake.seen == []


def test_invalid_codes_in_a_list_are_reported_by_line_and_nothing_is_sent(
    tmp_path: Path, fake: FakeGateway
) -> None:
    codes = [make_uscc(1), bad_check(make_uscc(2)), make_uscc(3), "91110000", make_uscc(4)]
    source = write_list(tmp_path / "customers.csv", codes)
    model = write_json(tmp_path / "model.json", logistic_doc("m"))
    result = invoke("score", str(source), "--model", str(model), "--key", str(tmp_path / "key.json"))
    assert result.exit_code == 2, result.output
    assert "2 USCCs" in result.output and "nothing was sent" in result.output
    assert "line 3:" in result.output and "line 5:" in result.output and "check character" in result.output
    assert bad_check(make_uscc(2)) not in result.output  # lines and reasons, not the bank's codes
    both = invoke("score", str(source), "--model", str(model), "--uscc", make_uscc(1))
    assert both.exit_code == 2 and "not both" in both.output
    one = invoke("score", "--model", str(model), "--uscc", bad_check(make_uscc(1)))
    assert one.exit_code == 2 and "check character" in one.output
    nokey = invoke("score", "--model", str(model), "--uscc", make_uscc(1))
    assert nokey.exit_code == 2 and "--key" in nokey.output
    assert fake.seen == []


# -- against the real gateway ---------------------------------------------------------------------


@dataclass
class Bank:
    client_id: str
    secret: str
    key_path: Path
    key: scoring.ScoringKey
    workdir: Path

    def client(self, zone: ScoringZone, *, url: str | None = None, wire: Wire | None = None) -> ZoneClient:
        return ZoneClient(
            url=url or zone.url,
            client_id=self.client_id,
            client_secret=self.secret,
            retry=QUICK,
            transport=wire,
        )


@pytest.fixture(scope="module")
def bank(scoring_zone: ScoringZone, tmp_path_factory: pytest.TempPathFactory) -> Bank:
    """An OAuth client of the scoring tests' institution and a key file made by the SDK."""
    with scoring_zone.db.unit_of_work() as s:
        client, secret = oauth_service.create_client(
            s, institution_id=scoring_zone.institution_id, name="sdk", by_name="sdk tests"
        )
        client_id = client.client_id
    assert secret is not None
    workdir = tmp_path_factory.mktemp("scoring-sdk")
    key_path = workdir / "bank-key.json"
    return Bank(client_id, secret, key_path, scoring.generate_key_file(key_path), workdir)


@pytest.fixture
def cli_env(scoring_zone: ScoringZone, bank: Bank, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAZONE_URL", scoring_zone.url)
    monkeypatch.setenv("DATAZONE_CLIENT_ID", bank.client_id)
    monkeypatch.setenv("DATAZONE_CLIENT_SECRET", bank.secret)
    monkeypatch.setenv("DATAZONE_PROFILE", "/nonexistent/client.toml")


@contextmanager
def worker_running(zone: ScoringZone) -> Iterator[None]:
    """The scoring worker's passes in a thread until the block ends, as `datazone worker` runs them."""
    stop = threading.Event()
    failures: list[str] = []

    def passes() -> None:
        settings = zone.worker_settings(scoring_processes=1)
        while not stop.is_set():
            failures.extend(
                r
                for r in scoring_worker.run_once(zone.db, settings, worker_name="sdk-tests")
                if r.startswith("failed:")
            )
            stop.wait(0.2)

    thread = threading.Thread(target=passes, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(120)
    assert not failures, failures


def approve(zone: ScoringZone, model_id: str) -> None:
    r = review(zone, model_id)
    assert r.status_code == 200 and r.json()["state"] == "approved", r.text


def registered(
    zone: ScoringZone, bank: Bank, doc: dict[str, Any], *, approved: bool = True
) -> tuple[Path, str]:
    """The model file written, registered through the SDK (and approved): (its path, its id)."""
    path = write_json(bank.workdir / f"{doc['name']}.json", doc)
    with bank.client(zone) as client:
        view = client.register_model(path, bank.key_path)
    if approved:
        approve(zone, view["id"])
    return path, str(view["id"])


def expected_units(zone: ScoringZone, model: circuits.ScoringModel, codes: list[str]) -> dict[str, int]:
    features = zone.features(codes)
    return {c: circuits.plain_score(model, features[c], zone.bounds) for c in codes}


def resolution_of(zone: ScoringZone, model: circuits.ScoringModel) -> int:
    spec = zone.spec.scoring
    assert spec is not None
    return circuits.resolution_units(
        model.kind,
        model.scale,
        logit_resolution=spec.logit_resolution,
        points_resolution=spec.points_resolution,
    )


def count(zone: ScoringZone, query: str, **params: Any) -> int:
    with zone.db.engine.connect() as conn:
        return int(conn.execute(sa.text(query), params).scalar_one())


def billed(zone: ScoringZone) -> int:
    return count(
        zone,
        "SELECT count(*) FROM usage_event WHERE institution_id = :i AND product_id = :p",
        i=zone.institution_id,
        p=PRODUCT,
    )


def jobs(zone: ScoringZone) -> int:
    return count(zone, "SELECT count(*) FROM scoring_job WHERE institution_id = :i", i=zone.institution_id)


@pytest.mark.e2e
def test_register_review_and_score_one_equals_the_plaintext_score(
    scoring_zone: ScoringZone, bank: Bank, cli_env: None
) -> None:
    zone = scoring_zone
    doc = logistic_doc("sdk-logistic-one")
    path = write_json(bank.workdir / "logistic-one.json", doc)
    wire = Wire()
    with bank.client(zone, wire=wire) as client:
        view = client.register_model(path, bank.key_path)
    assert view["state"] == "pending_review" and view["key_fingerprint"] == bank.key.fingerprint
    # what went to the zone: the weights as ciphertexts of the key's size, never the numbers
    (posted,) = [s for s in wire.sent if (s.method, s.path) == ("POST", "/v1/scoring/models")]
    body = json.loads(posted.body)
    width = len(paillier.encode_ciphertext(bank.key.public, bank.key.public.encrypt(1)))
    assert [len(f["weight"]) for f in body["features"]] == [width] * len(LOGISTIC_WEIGHTS)
    numbers = {k for k, v in body.items() if isinstance(v, (int, float))}
    assert (
        numbers == {"scale", "score_bits"} and [set(f) for f in body["features"]] == [{"name", "weight"}] * 10
    )
    # each ciphertext is the fixed-point weight under the bank's key, and only the bank can tell
    texts = {f["name"]: f["weight"] for f in body["features"]} | {"intercept": body["intercept"]}
    opened = {
        name: bank.key.private.decrypt(c)
        for name, c in paillier.decode_ciphertexts(bank.key.public, texts).items()
    }
    assert opened == {name: circuits.fixed_point(w, 10_000) for name, w in LOGISTIC_WEIGHTS.items()} | {
        "intercept": -15_000
    }
    # the registration is recorded next to the model file: its id and key, nothing secret
    record = json.loads(scoring.registration_path(path).read_text())
    assert record["model_id"] == view["id"] and record["key_fingerprint"] == bank.key.fingerprint
    assert record["key_file"] == str(bank.key_path.resolve()) and "weight" not in json.dumps(record)
    code = zone.take(1)[0]
    pending = invoke("score", "--model", str(path), "--uscc", code)
    assert pending.exit_code == 1 and "pending_review" in pending.output and "reviewer" in pending.output
    approve(zone, view["id"])
    # the key file comes from the registration record: no --key
    shown = invoke("score", "--model", str(path), "--uscc", code)
    assert shown.exit_code == 0, shown.output
    assert "probability" in shown.output and view["id"] in shown.output
    model = scoring.read_model_file(path)
    with bank.client(zone) as client:
        single = client.score(path, code)
    exact = expected_units(zone, model, [code])[code]
    scored = single.enterprise
    assert scored.found and scored.score_units is not None and single.model_id == view["id"]
    assert_rounded(scored.score_units, exact, resolution_of(zone, model))
    assert scored.score == scored.score_units / 10_000
    assert scored.probability == pytest.approx(circuits.link(model, scored.score_units / 10_000))
    assert single.charged_fen == PRICE_FEN and single.data_versions
    assert f"{scored.probability:.6f}"[:5] in shown.output or "probability" in shown.output
    # an enterprise the zone does not hold: found false, not billed
    with bank.client(zone) as client:
        outsider = client.score(path, zone.outsiders[0])
    assert not outsider.enterprise.found and outsider.charged_fen == 0
    # the model file edited since its registration: refused, the zone would score the old weights
    doc["features"][0]["weight"] = 0.5
    write_json(path, doc)
    edited = invoke("score", "--model", str(path), "--uscc", code)
    assert edited.exit_code == 2 and "changed since it was registered" in edited.output
    # the models the institution holds, as the CLI lists them
    listed = invoke("model", "status")
    assert listed.exit_code == 0 and view["id"] in listed.output and "approved" in listed.output
    one = invoke("model", "status", view["id"], "--json")
    assert one.exit_code == 0 and json.loads(one.output)["state"] == "approved"


@pytest.mark.e2e
def test_a_batch_job_from_the_cli_writes_every_score_in_input_order(
    scoring_zone: ScoringZone, bank: Bank, cli_env: None, tmp_path: Path
) -> None:
    zone = scoring_zone
    path, model_id = registered(zone, bank, scorecard_doc("sdk-card-batch"))
    model = scoring.read_model_file(path)
    found = zone.take(120)
    codes = [
        *found[:60],
        zone.outsiders[1],
        *found[60:],
        found[5],
        zone.outsiders[2],
    ]  # a repeat, 2 outsiders
    source = write_list(tmp_path / "customers.csv", codes)
    out = tmp_path / "scores.csv"
    before = billed(zone)
    with worker_running(zone):
        result = invoke("score", str(source), "--model", str(path), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "1 duplicate USCCs scored once" in result.output and "line 123 repeats line 7" in result.output
    assert f"charged {120 * PRICE_FEN / 100:.2f} yuan" in result.output
    rows = read_rows(out)
    assert list(rows[0]) == ["line", "uscc", "found", "points"]
    distinct = list(dict.fromkeys(codes))
    assert [r["uscc"] for r in rows] == distinct
    assert [int(r["line"]) for r in rows] == [codes.index(c) + 2 for c in distinct]
    exact = expected_units(zone, model, found)
    resolution = resolution_of(zone, model)
    for row in rows:
        if row["uscc"] in zone.outsiders:
            assert row["found"] == "false" and row["points"] == ""
            continue
        assert row["found"] == "true"
        assert_rounded(round(float(row["points"]) * model.scale), exact[row["uscc"]], resolution)
    assert billed(zone) - before == 120  # the found ones, once each
    assert not scoring.default_state_path(out).exists()
    with bank.client(zone) as client:
        assert scoring.find_model(client, model, bank.key, model_path=path)["id"] == model_id


@pytest.mark.e2e
def test_dropped_answers_resume_the_same_job_billed_once(
    scoring_zone: ScoringZone, bank: Bank, tmp_path: Path
) -> None:
    zone = scoring_zone
    path, model_id = registered(zone, bank, logistic_doc("sdk-logistic-drops", scale=1_000_000))
    model = scoring.read_model_file(path)
    codes = zone.take(130)  # three chunks of 50

    def drop(method: str, path_: str, number: int) -> bool:
        # the job's creation, and the first download of chunk 1: answered by the gateway, never delivered
        return (method, path_, number) == ("POST", "/v1/scoring/jobs", 1) or (
            method == "GET" and path_.endswith("/chunks/1") and number == 1
        )

    before_billed, before_jobs = billed(zone), jobs(zone)
    phases: list[tuple[str, int, int]] = []
    with (
        worker_running(zone),
        Relay(zone.url, drop=drop) as relay,
        bank.client(zone, url=relay.url) as client,
    ):
        result = client.score_batch(
            path,
            codes,
            output=tmp_path / "scores.csv",
            progress=lambda phase, done, total: phases.append((phase, done, total)),
            poll_interval=0.2,
        )
    assert [(m, p) for m, p, _ in relay.dropped] == [
        ("POST", "/v1/scoring/jobs"),
        ("GET", f"/v1/scoring/jobs/{result.job_id}/chunks/1"),
    ]
    keys = {h["Idempotency-Key"] for m, p, h in relay.seen if (m, p) == ("POST", "/v1/scoring/jobs")}
    assert len(keys) == 1  # the retry sent the same key: the same job
    assert jobs(zone) - before_jobs == 1 and billed(zone) - before_billed == 130
    assert (
        result.model_id == model_id
        and result.items == result.found == 130
        and result.charged_fen == 130 * PRICE_FEN
    )
    exact = expected_units(zone, model, codes)
    resolution = resolution_of(zone, model)
    for scored in result.scores:
        assert scored.score_units is not None and scored.probability is not None
        assert_rounded(scored.score_units, exact[scored.uscc], resolution)
        assert scored.probability == pytest.approx(circuits.link(model, scored.score_units / model.scale))
    rows = read_rows(tmp_path / "scores.csv")
    assert list(rows[0]) == ["line", "uscc", "found", "logit", "probability"]
    assert [r["uscc"] for r in rows] == codes
    assert float(rows[0]["logit"]) == pytest.approx(result.scores[0].score)
    # progress: the upload, the zone's chunks and the downloads, each ending complete
    for phase, total in (("upload", 130), ("compute", 3), ("download", 3)):
        seen = [(d, t) for p, d, t in phases if p == phase]
        assert seen[-1] == (total, total) and [d for d, _ in seen] == sorted(d for d, _ in seen), phase


@pytest.mark.e2e
def test_rerunning_a_finished_score_command_returns_its_job_billed_and_capped_once(
    scoring_zone: ScoringZone, bank: Bank, cli_env: None, tmp_path: Path
) -> None:
    zone = scoring_zone
    path, _ = registered(zone, bank, scorecard_doc("sdk-card-rerun"))
    codes = zone.take(70)
    source = write_list(tmp_path / "customers.csv", codes)
    out = tmp_path / "scores.csv"

    def debits() -> int:
        return count(
            zone,
            "SELECT count(*) FROM ledger_entry WHERE institution_id = :i AND product_id = :p AND kind = 'debit'",
            i=zone.institution_id,
            p=PRODUCT,
        )

    def tallied() -> int:
        return count(
            zone,
            "SELECT count(*) FROM scoring_tally WHERE institution_id = :i AND uscc = ANY(:u)",
            i=zone.institution_id,
            u=codes,
        )

    before = (billed(zone), jobs(zone), debits(), tallied())
    with worker_running(zone):
        first = invoke("score", str(source), "--model", str(path), "--out", str(out))
    assert first.exit_code == 0, first.output
    after_first = (billed(zone), jobs(zone), debits(), tallied())
    assert [a - b for a, b in zip(after_first, before, strict=True)] == [70, 1, 1, 70]
    scores_first = out.read_text(encoding="utf-8-sig")
    out.unlink()
    # the same command again: the same job, its scores downloaded again, nothing billed or capped anew
    again = invoke("score", str(source), "--model", str(path), "--out", str(out))
    assert again.exit_code == 0, again.output
    assert (billed(zone), jobs(zone), debits(), tallied()) == after_first
    assert out.read_text(encoding="utf-8-sig") == scores_first
    # another output is another job, asked for on purpose
    with worker_running(zone):
        other = invoke("score", str(source), "--model", str(path), "--out", str(tmp_path / "other.csv"))
    assert other.exit_code == 0, other.output
    assert jobs(zone) == after_first[1] + 1


class Crash(Exception):
    """Stands for the bank's process dying mid-job."""


@pytest.mark.e2e
def test_a_crash_after_the_job_was_created_resumes_the_job_from_the_state_file(
    scoring_zone: ScoringZone, bank: Bank, tmp_path: Path
) -> None:
    zone = scoring_zone
    path, _ = registered(zone, bank, logistic_doc("sdk-logistic-crash"))
    codes = zone.take(60)
    out = tmp_path / "scores.csv"
    state = scoring.default_state_path(out)

    def crash_when_computing(phase: str, done: int, total: int) -> None:
        if phase == "compute":
            raise Crash

    before_billed, before_jobs = billed(zone), jobs(zone)
    with bank.client(zone) as client, pytest.raises(Crash):
        client.score_batch(path, codes, output=out, progress=crash_when_computing)
    saved = json.loads(state.read_text())
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert saved["job_id"].startswith("sjb_") and saved["items"] == 60 and not out.exists()
    # what a resumed run needs, and no score
    assert set(saved) == {
        "kind",
        "version",
        "model_id",
        "key_fingerprint",
        "input_digest",
        "items",
        "idempotency_key",
        "job_id",
    }
    # the same list with another one's state: refused, naming why and what to do
    with bank.client(zone) as client, pytest.raises(scoring.ScoringStateError, match="another list"):
        client.score_batch(path, codes[:59], output=out)
    with worker_running(zone), bank.client(zone) as client:
        result = client.score_batch(path, codes, output=out, poll_interval=0.2)
    assert result.resumed and result.job_id == saved["job_id"]
    assert jobs(zone) - before_jobs == 1 and billed(zone) - before_billed == 60  # one job, billed once
    assert [r["uscc"] for r in read_rows(out)] == codes and not state.exists()


@pytest.mark.e2e
def test_the_cap_refuses_a_fourth_score_of_one_enterprise(
    scoring_zone: ScoringZone, bank: Bank, cli_env: None
) -> None:
    zone = scoring_zone
    path, _ = registered(zone, bank, logistic_doc("sdk-logistic-cap"))
    code = zone.take(1)[0]
    with bank.client(zone) as client:
        for _ in range(3):  # cap_scores: 3 per enterprise per 30 days
            assert client.score(path, code).enterprise.found
        before = billed(zone)
        with pytest.raises(ZoneError) as capped:
            client.score(path, code)
    assert capped.value.status == 403 and capped.value.type == "scoring-cap-exceeded"
    assert billed(zone) == before
    result = invoke("score", "--model", str(path), "--uscc", code)
    assert (
        result.exit_code == 1
        and "403 scoring-cap-exceeded" in result.output
        and capped.value.detail[:40] in result.output
    )


@pytest.mark.e2e
def test_a_model_outside_the_catalog_or_the_grants_is_refused_with_every_problem(
    scoring_zone: ScoringZone, bank: Bank, cli_env: None
) -> None:
    zone = scoring_zone
    # two features, one of which the product does not offer: refused here, before the zone sees it
    doc = logistic_doc("sdk-two-features", weights={"tax_grade_code": 0.3, "profit_margin_pct": 0.1})
    path = write_json(bank.workdir / "two-features.json", doc)
    wire = Wire()
    with bank.client(zone, wire=wire) as client, pytest.raises(scoring.ModelDoesNotFit) as unfit:
        client.register_model(path, bank.key_path)
    assert [e["location"] for e in unfit.value.errors] == ["features.1.name", "features"]
    assert "at least 3" in unfit.value.errors[1]["problem"]
    assert wire.paths() == [("GET", "/v1/products")]  # the catalog read, nothing registered
    shown = invoke("model", "register", "--model", str(path), "--key", str(bank.key_path))
    assert shown.exit_code == 2 and "features.1.name" in shown.output and "profit_margin_pct" in shown.output
    # patents are granted for post_loan only: the zone refuses a pre_loan model using them, and says so
    weights = {**dict(list(LOGISTIC_WEIGHTS.items())[:3]), "invention_patents": 0.02}
    path = write_json(bank.workdir / "patents.json", logistic_doc("sdk-patents", weights=weights))
    result = invoke("model", "register", "--model", str(path), "--key", str(bank.key_path))
    assert result.exit_code == 1 and "422 features-not-granted" in result.output
    assert "invention_patents" in result.output
    assert not scoring.registration_path(path).exists()


@pytest.mark.e2e
def test_an_invalid_list_is_refused_before_the_model_is_looked_up(
    scoring_zone: ScoringZone, bank: Bank, tmp_path: Path
) -> None:
    zone = scoring_zone
    path, _ = registered(zone, bank, logistic_doc("sdk-logistic-badlist"), approved=False)
    wire = Wire()
    with bank.client(zone, wire=wire) as client, pytest.raises(InvalidListedUSCCs) as bad:
        client.score_batch(path, [make_uscc(5), bad_check(make_uscc(6))], output=tmp_path / "s.csv")
    assert bad.value.lines == [2] and wire.paths() == []
    # an approved model is required: the state file is not even written for a pending one
    with bank.client(zone) as client, pytest.raises(ZoneError, match="pending_review"):
        client.score_batch(path, zone.take(1), output=tmp_path / "s.csv")
    assert not scoring.default_state_path(tmp_path / "s.csv").exists()


@pytest.mark.e2e
def test_a_batch_over_the_contract_limit_is_refused_and_leaves_nothing_to_resume(
    scoring_zone: ScoringZone, bank: Bank, tmp_path: Path
) -> None:
    zone = scoring_zone
    path, _ = registered(zone, bank, logistic_doc("sdk-logistic-limit"))
    codes = [make_uscc(500_000 + i) for i in range(scoring_conftest.MAX_BATCH + 1)]
    out = tmp_path / "s.csv"
    before = jobs(zone)
    with bank.client(zone) as client, pytest.raises(ZoneError) as over:
        client.score_batch(path, codes, output=out)
    assert over.value.status == 422 and over.value.type == "scoring-batch-over-limit"
    assert str(scoring_conftest.MAX_BATCH) in over.value.detail
    # refused outright: no job, and no state file that a rerun would try to continue
    assert jobs(zone) == before and not scoring.default_state_path(out).exists() and not out.exists()
