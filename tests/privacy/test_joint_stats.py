"""Joint statistics under HEU equal the plaintext computation; bytes that are not a column of the
job's ciphertexts are refused with a clear message, and nothing is ever unpickled."""

from __future__ import annotations

import base64
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from datazone.privacy import joint_stats as js

ROWS = 3000


@pytest.fixture(scope="module")
def key() -> js.LabelKey:
    return js.LabelKey.generate()


@pytest.fixture(scope="module")
def public(key: js.LabelKey) -> js.PublicKey:
    return js.load_public_key(key.public_key_bytes())


def encrypted_stats(
    key: js.LabelKey,
    public: js.PublicKey,
    names: list[str],
    values: np.ndarray,
    labels: np.ndarray,
    segments: np.ndarray | None = None,
    segment_count: int = 0,
    **options: object,
) -> js.StatsReport:
    rows = len(labels)
    label = js.load_column(public, key.encrypt_column(labels), rows)
    segment_columns = (
        [
            js.load_column(public, key.encrypt_column((segments == k).astype(np.int64)), rows)
            for k in range(segment_count)
        ]
        if segments is not None
        else []
    )
    result = js.compute_result(public, label, segment_columns, names, values, **options)  # type: ignore[arg-type]
    return js.build_report(result, key, positives=int(labels.sum()), segments=segment_count)


def test_random_data_with_ties_constant_negative_values_and_segments(
    key: js.LabelKey, public: js.PublicKey
) -> None:
    rng = np.random.default_rng(7)
    values = np.stack(
        [
            rng.integers(-5000, 5000, ROWS),  # negative values
            rng.integers(0, 4, ROWS),  # heavy ties: fewer bins than asked
            np.full(ROWS, 3),  # constant: one bin
            rng.integers(0, 100_000, ROWS),  # wide range: three base-128 digits in grouped sums
            rng.integers(-100, 1000, ROWS),
        ],
        axis=1,
    )
    labels = (rng.random(ROWS) < 0.2).astype(np.int64)
    segments = rng.integers(0, 3, ROWS)
    names = ["a", "ties", "constant", "wide", "cagr"]
    options = {"bins": 10, "min_count": 30, "grouped": ["a", "wide", "cagr", "constant"]}
    report = encrypted_stats(key, public, names, values, labels, segments, 3, **options)
    plain = js.plain_stats(names, values, labels, segments=segments, segment_count=3, **options)  # type: ignore[arg-type]
    assert report == plain
    by_name = {f.name: f for f in report.features}
    assert len(by_name["a"].totals) == 10
    assert len(by_name["ties"].totals) == 4
    assert by_name["constant"].totals == [ROWS] and by_name["constant"].iv == 0.0
    grouped = {g.name: g for g in report.grouped}
    a = values[:, 0]
    assert grouped["a"].by_label[1] == js.Group(int(labels.sum()), int(a[labels == 1].sum()))
    assert grouped["a"].by_segment[2].sum == int(a[segments == 2].sum())
    assert grouped["a"].by_label[0].mean == pytest.approx(a[labels == 0].mean())


def test_declared_edges_and_their_refusal(key: js.LabelKey, public: js.PublicKey) -> None:
    rng = np.random.default_rng(8)
    values = rng.integers(0, 100, (ROWS, 1))
    labels = rng.integers(0, 2, ROWS)
    edges = {"x": [10.0, 50.0, 90.0]}
    report = encrypted_stats(key, public, ["x"], values, labels, bins=5, min_count=30, declared_edges=edges)
    assert report.features[0].edges == [10.0, 50.0, 90.0]
    assert report == js.plain_stats(["x"], values, labels, bins=5, min_count=30, declared_edges=edges)
    label = js.load_column(public, key.encrypt_column(labels), ROWS)
    with pytest.raises(js.BinsTooSmall, match="bin\\(s\\) 0 with fewer than 30"):
        js.compute_result(public, label, [], ["x"], values, bins=5, min_count=30, declared_edges={"x": [0.5]})


def test_quantile_edges_and_bins() -> None:
    values = np.array([1, 1, 1, 1, 2, 3, 4, 5, 6, 7])
    edges = js.quantile_edges(values, 5)
    # values at ranks 2, 4, 6, 8: 1, 2, 4, 6; the cut at 1 (the minimum) would leave bin 0 empty
    assert edges == [2.0, 4.0, 6.0]
    assert js.bin_index(np.array([0, 2, 3.9, 4, 5.99, 6, 100]), edges).tolist() == [0, 1, 1, 2, 2, 3, 3]
    assert js.quantile_edges(np.full(10, 4), 3) == []
    # a flag that is 1 for 5% of the sample: two bins, not one (every quantile is 0)
    flag = np.array([1] * 5 + [0] * 95)
    assert js.quantile_edges(flag, 10) == [1.0]
    # a count that is 0 for most firms and spread above: "none" gets a bin of its own
    counts = np.array([0] * 92 + list(range(1, 9)))
    assert js.quantile_edges(counts, 5)[0] == 1.0


def test_merge_small_bins() -> None:
    edges, totals = js.merge_small_bins([50, 3, 40, 60, 2], [1.0, 2.0, 3.0, 4.0], 10)
    # the smallest (2, last) goes to its only neighbour; then 3 to its smaller neighbour (40)
    assert (edges, totals) == ([1.0, 3.0], [50, 43, 62])
    assert js.merge_small_bins([5, 5], [1.0], 20) == ([], [10])  # one bin left: the caller refuses
    assert js.merge_small_bins([30, 30], [1.0], 20) == ([1.0], [30, 30])


def test_woe_iv_convention() -> None:
    woe, iv = js.woe_iv([0, 10, 30], [20, 20, 40])
    pos, neg = [0.5 / 40, 10 / 40, 30 / 40], [20 / 40, 10 / 40, 10 / 40]
    expected = [np.log(p / q) for p, q in zip(pos, neg, strict=True)]
    assert woe == pytest.approx(expected)
    assert iv == pytest.approx(sum((p - q) * w for p, q, w in zip(pos, neg, expected, strict=True)))
    with pytest.raises(ValueError, match="no positive"):
        js.woe_iv([0, 0], [3, 4])


def test_weighted_sum_with_signed_values(key: js.LabelKey, public: js.PublicKey) -> None:
    labels = np.array([1, 0, 1, 1])
    x = np.array([[-5, 100_000], [7, 3], [-2, -1], [0, 128]])
    column = js.load_column(public, key.encrypt_column(labels), 4)
    assert key.decrypt(js.weighted_sum(public, column, x), 2).tolist() == (labels @ x).tolist()
    assert key.decrypt(js.column_sums(public, [column, column]), 2).tolist() == [3, 3]


def test_heu_layout_is_read_as_heu_reads_it(key: js.LabelKey) -> None:
    """The byte-level checks read HEU 0.5.2's layout: they must agree with HEU on a real column."""
    blob = key.encrypt_column([0, 1, 1, 0, -3])
    array = js.hnp.CiphertextArray.load_from(blob)
    reader = js._Reader(blob)
    assert reader.array_header() == 4
    assert (reader.unsigned(), reader.unsigned(), reader.unsigned()) == (5, 1, 2)
    assert reader.array_header() == 5
    for row in range(5):
        assert js._ciphertext_value(reader.raw()) == int(str(array[row, 0]))


class WritesAFile:
    """Unpickling this writes a file: proof that something was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


@pytest.fixture
def unpickled_marker(tmp_path: Path) -> Path:
    return tmp_path / "unpickled"


def malformed_inputs(key: js.LabelKey, other: js.LabelKey, marker: Path) -> dict[str, tuple[bytes, str]]:
    column = key.encrypt_column(np.zeros(ROWS, dtype=np.int64))
    return {
        "empty": (b"", "not a HEU ciphertext array|ends early"),
        "random bytes": (os.urandom(5000), "not"),
        "a pickle that would run code": (pickle.dumps(WritesAFile(marker)), "not a HEU ciphertext array"),
        "the public key": (key.public_key_bytes(), "not"),
        "cut short": (column[:-100], "ends early|not a HEU"),
        "one row short": (
            key.encrypt_column(np.zeros(ROWS - 1, dtype=np.int64)),
            f"{ROWS - 1} ciphertexts, {ROWS}",
        ),
        "two columns": (key.encrypt_column(np.zeros(ROWS, dtype=np.int64)) + b"\x00", "after its last"),
        "under another key": (
            other.encrypt_column(np.zeros(ROWS, dtype=np.int64)),
            "not under this job's public key",
        ),
        "under a 3072-bit key": (
            js.LabelKey.generate(3072).encrypt_column(np.zeros(ROWS, dtype=np.int64)),
            "too large",
        ),
        "a header claiming billions": (
            b"\x94\xce\xff\xff\xff\xff\x01\x02\xdd\xff\xff\xff\xff",
            "too large|holds",
        ),
        "padded past the limit": (column + bytes(ROWS * 400), "too large"),
    }


def test_every_malformed_column_is_refused_clearly(
    key: js.LabelKey, public: js.PublicKey, unpickled_marker: Path
) -> None:
    # a key of the same size whose modulus is larger: its ciphertexts fall outside the job's modulus
    # (one with a smaller modulus cannot be told apart; the bank would only get wrong sums back)
    other = next(
        k for k in (js.LabelKey.generate() for _ in range(40)) if k.public_key().modulus > public.modulus
    )
    for name, (blob, why) in malformed_inputs(key, other, unpickled_marker).items():
        with pytest.raises(js.MalformedColumn, match=why) as refused:
            js.load_column(public, blob, ROWS)
        message = str(refused.value)
        assert len(message) < 200, name
        if len(blob) >= 12:
            assert base64.b64encode(blob[:12]).decode() not in message and repr(blob[:12]) not in message, (
                name
            )
    assert not unpickled_marker.exists()


def test_keys_are_never_unpickled(unpickled_marker: Path, key: js.LabelKey) -> None:
    for blob in (
        pickle.dumps(WritesAFile(unpickled_marker)),
        b"",
        os.urandom(800),
        b"\x94" + os.urandom(700),
    ):
        with pytest.raises(js.MalformedKey):
            js.load_public_key(blob)
    assert not unpickled_marker.exists()
    paillier = js.hnp.setup(js.phe.SchemaType.ZPaillier, 2048).public_key().serialize()
    with pytest.raises(js.MalformedKey, match=r"Okamoto-Uchiyama|not a HEU public key"):
        js.load_public_key(paillier)
    source = Path(js.__file__).read_text()
    assert "import pickle" not in source and "pickle.loads" not in source


def test_the_bank_checks_the_zone_answer(key: js.LabelKey, public: js.PublicKey) -> None:
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 2, 500)
    label = js.load_column(public, key.encrypt_column(labels), 500)
    result = js.compute_result(public, label, [], ["x"], rng.integers(0, 9, (500, 1)), bins=4, min_count=10)
    result["features"][0]["positives"] = base64.b64encode(
        key.encrypt_column([0] * len(result["features"][0]["totals"]))
    ).decode()
    with pytest.raises(js.MalformedResult, match="do not add up"):
        js.build_report(result, key, positives=int(labels.sum()))
