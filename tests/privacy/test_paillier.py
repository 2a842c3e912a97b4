"""Paillier over gmpy2 against python-paillier (`phe`): the same ciphertexts for the same n and r,
each side decrypts the other's, homomorphic operations agree; bad keys and malformed ciphertexts
are refused precisely, naming locations and never values."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import replace

import gmpy2
import pytest
from phe import EncryptedNumber
from phe import paillier as phe

from datazone.privacy import paillier
from datazone.privacy.paillier import (
    InvalidPrivateKey,
    InvalidPublicKey,
    KeyTooSmall,
    MalformedCiphertexts,
    PrivateKey,
    PublicKey,
)


@pytest.fixture(scope="module")
def keys() -> Iterator[tuple[PublicKey, PrivateKey]]:
    yield paillier.generate_keypair(2048)


@pytest.fixture(scope="module")
def phe_keys(keys: tuple[PublicKey, PrivateKey]) -> tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey]:
    public, private = keys
    phe_public = phe.PaillierPublicKey(public.n)
    return phe_public, phe.PaillierPrivateKey(phe_public, private.p, private.q)


def b64(value: int, width: int | None = None) -> str:
    raw = value.to_bytes(width or (value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def random_unit(n: int) -> int:
    while True:
        r = secrets.randbelow(n)
        if gmpy2.gcd(r, n) == 1:
            return r


def test_a_generated_key_has_the_size_asked_for_and_its_proof(keys: tuple[PublicKey, PrivateKey]) -> None:
    public, private = keys
    assert public.bits == public.n.bit_length() == 2048
    assert private.p * private.q == public.n and private.p != private.q
    assert gmpy2.is_prime(private.p) and gmpy2.is_prime(private.q)
    assert public.nsquare == public.n**2
    assert len(public.proof) == paillier.KEY_PROOF_ROUNDS
    public.check_proof()
    # repr and str never show the primes (a private key may end up in a log line)
    assert str(private.p) not in repr(private) and str(private.q) not in repr(private)
    assert public.fingerprint in repr(private)


def test_same_n_and_r_give_phes_ciphertext(
    keys: tuple[PublicKey, PrivateKey], phe_keys: tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey]
) -> None:
    public, _ = keys
    phe_public, _ = phe_keys
    for m in (0, 1, 2, 12345, 10**30, public.n - 1, secrets.randbelow(public.n)):
        r = random_unit(public.n)
        ours = public.encrypt(m, factor=int(gmpy2.powmod(r, public.n, public.nsquare)))
        assert ours == phe_public.raw_encrypt(m, r_value=r)
    # a negative m is taken mod n, as phe's encoding of a negative integer is
    r = random_unit(public.n)
    assert public.encrypt(-42, factor=int(gmpy2.powmod(r, public.n, public.nsquare))) == phe_public.raw_encrypt(
        public.n - 42, r_value=r
    )


def test_phe_decrypts_ours_and_we_decrypt_phes(
    keys: tuple[PublicKey, PrivateKey], phe_keys: tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey]
) -> None:
    public, private = keys
    phe_public, phe_private = phe_keys
    for m in (0, 7, -7, 10**40, -(10**40), public.n // 2, -(public.n // 2)):
        assert phe_private.raw_decrypt(public.encrypt(m)) == m % public.n
        assert private.decrypt(phe_public.raw_encrypt(m % public.n)) == m
        assert private.decrypt(public.encrypt(m)) == m
        if abs(m) <= phe_public.max_int:
            # phe's high-level API: signed integers through its encoding (up to n/3)
            assert private.decrypt(phe_public.encrypt(m).ciphertext()) == m
            assert phe_private.decrypt(EncryptedNumber(phe_public, public.encrypt(m))) == m


def test_decryption_is_signed_around_half_of_n(keys: tuple[PublicKey, PrivateKey]) -> None:
    public, private = keys
    half = public.n // 2
    assert private.decrypt(public.encrypt(half)) == half
    assert private.decrypt(public.encrypt(half + 1)) == half + 1 - public.n
    assert private.decrypt_residue(public.encrypt(-1)) == public.n - 1
    with pytest.raises(ValueError, match=r"\(0, n²\)"):
        private.decrypt(public.nsquare)


def test_homomorphic_sums_and_scalar_products_agree_with_phe(
    keys: tuple[PublicKey, PrivateKey], phe_keys: tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey]
) -> None:
    public, private = keys
    phe_public, phe_private = phe_keys
    a, b, k = 123_456_789, -987_654, 31_337
    ca, cb = public.encrypt(a), public.encrypt(b)
    total = ca * cb % public.nsquare
    phe_total = EncryptedNumber(phe_public, ca) + EncryptedNumber(phe_public, cb)
    assert phe_total.ciphertext(be_secure=False) == total
    assert private.decrypt(total) == a + b == phe_private.decrypt(phe_total)
    scaled = pow(ca, k, public.nsquare)
    phe_scaled = EncryptedNumber(phe_public, ca) * k
    assert phe_scaled.ciphertext(be_secure=False) == scaled
    assert private.decrypt(scaled) == a * k == phe_private.decrypt(phe_scaled)
    # a negative scalar: phe multiplies by the inverse, we raise to a negative power
    negated = pow(ca, -k, public.nsquare)
    assert private.decrypt(negated) == -a * k == phe_private.decrypt(EncryptedNumber(phe_public, ca) * -k)


def test_rerandomization_keeps_the_plaintext_and_changes_the_ciphertext(
    keys: tuple[PublicKey, PrivateKey],
) -> None:
    public, private = keys
    factors = paillier.rerandomization_factors(public, 4)
    assert len(set(factors)) == 4
    # each factor is r^n: an encryption of 0
    assert all(private.decrypt(f) == 0 for f in factors)
    c = public.encrypt(-99)
    fresh = [paillier.rerandomize(public, c, f) for f in factors]
    assert len({c, *fresh}) == 5
    assert all(private.decrypt(x) == -99 for x in fresh)
    # encrypt with a given factor is the same as encrypting with a trivial one, then re-randomizing
    assert public.encrypt(5, factor=factors[0]) == paillier.rerandomize(
        public, public.encrypt(5, factor=1), factors[0]
    )


def test_factors_computed_in_two_processes_are_valid(keys: tuple[PublicKey, PrivateKey]) -> None:
    public, private = keys
    factors = paillier.rerandomization_factors(public, 20, processes=2)
    assert len(factors) == len(set(factors)) == 20
    assert all(0 < f < public.nsquare and private.decrypt(f) == 0 for f in factors)
    assert paillier.rerandomization_factors(public, 0, processes=2) == []


def test_a_1024_bit_key_is_refused_with_a_clear_message() -> None:
    small, _ = phe.generate_paillier_keypair(n_length=1024)
    with pytest.raises(KeyTooSmall) as caught:
        PublicKey.from_n(small.n)
    assert str(caught.value) == "a Paillier key of 1024 bits is below the 2048-bit minimum"
    assert caught.value.bits == 1024 and caught.value.minimum == 2048
    assert str(small.n) not in str(caught.value)
    with pytest.raises(KeyTooSmall, match="1024 bits is below the 2048-bit minimum"):
        PublicKey.from_json({"n": b64(small.n)})
    with pytest.raises(KeyTooSmall, match="1024 bits"):
        paillier.generate_keypair(1024)
    # min_bits can only raise the floor, never lower it
    with pytest.raises(KeyTooSmall, match="1024 bits is below the 2048-bit minimum"):
        PublicKey.from_n(small.n, min_bits=512)


def test_a_product_may_ask_for_larger_keys(keys: tuple[PublicKey, PrivateKey]) -> None:
    public, _ = keys
    with pytest.raises(KeyTooSmall, match="2048 bits is below the 3072-bit minimum"):
        PublicKey.from_n(public.n, min_bits=3072)
    assert PublicKey.from_n(public.n, min_bits=2048) == public


@pytest.mark.parametrize(
    ("make_n", "message"),
    [
        (lambda n: n * 2, "even"),
        (lambda n: n * 9973, "prime factor below 10,000"),
        (lambda n: gmpy2.next_prime(n), "prime"),
        (lambda n: n << 2100 | 1, "above the 4096-bit maximum"),
        (lambda n: -n, "positive integer"),
        (lambda n: str(n), "positive integer"),
        (lambda n: True, "positive integer"),
    ],
    ids=["even", "small-factor", "prime", "too-large", "negative", "string", "bool"],
)
def test_a_modulus_that_is_no_paillier_modulus_is_refused(
    keys: tuple[PublicKey, PrivateKey], make_n: object, message: str
) -> None:
    public, _ = keys
    n = make_n(public.n)  # type: ignore[operator]
    with pytest.raises(InvalidPublicKey, match=message) as caught:
        PublicKey.from_n(int(n) if isinstance(n, gmpy2.mpz) else n)
    assert str(public.n)[:30] not in str(caught.value)


def test_public_key_json_round_trip_and_fingerprint(keys: tuple[PublicKey, PrivateKey]) -> None:
    public, _ = keys
    doc = public.to_json()
    assert set(doc) == {"n", "proof"} and "=" not in doc["n"]
    assert base64.urlsafe_b64decode(doc["n"] + "==") == public.n.to_bytes(256, "big")
    again = PublicKey.from_json(doc)
    assert again == public and again.proof == public.proof
    again.check_proof()
    assert public.fingerprint == hashlib.sha256(public.n.to_bytes(256, "big")).hexdigest()[:32]
    for bad, message in [
        ([], "is an object"),
        ({"n": 5}, "base64url"),
        ({"n": doc["n"] + "="}, "base64url"),
        ({"n": doc["n"], "e": "AQAB"}, "unknown fields in the public key: e"),
        ({"n": doc["n"], "proof": "AAAA"}, "10 roots of 256 bytes"),
    ]:
        with pytest.raises(InvalidPublicKey, match=message):
            PublicKey.from_json(bad)


def test_the_modulus_proof_refuses_a_modulus_sharing_a_factor_with_phi() -> None:
    # n = p·q with p | q - 1: a product of two primes, passes every cheap check,
    # but gcd(n, φ(n)) = p, so its n-th powers leave room for a hidden second plaintext
    p = int(gmpy2.next_prime(secrets.randbits(1023) | 1 << 1022))
    k = secrets.randbits(1020) | 1 << 1019
    while not gmpy2.is_prime(2 * k * p + 1):
        k += 1
    q = 2 * k * p + 1
    n = p * q
    public = PublicKey.from_n(n)
    with pytest.raises(InvalidPrivateKey, match=r"gcd\(n, φ\(n\)\) ≠ 1"):
        PrivateKey(public, p, q)
    # roots that are not n-th roots (none exist for most challenges) do not verify
    forged = replace(public, proof=tuple(random_unit(n) for _ in range(paillier.KEY_PROOF_ROUNDS)))
    with pytest.raises(InvalidPublicKey, match="proof does not verify"):
        forged.check_proof()
    with pytest.raises(InvalidPublicKey, match="carries no proof"):
        public.check_proof()


def test_a_proof_belongs_to_its_own_key(keys: tuple[PublicKey, PrivateKey]) -> None:
    public, _ = keys
    other, _ = paillier.generate_keypair(2048)
    with pytest.raises(InvalidPublicKey, match="proof does not verify"):
        replace(other, proof=public.proof).check_proof()


def test_private_key_file_round_trip_and_refusals(keys: tuple[PublicKey, PrivateKey]) -> None:
    public, private = keys
    doc = private.to_json()
    assert doc["format"] == paillier.PRIVATE_KEY_FORMAT and doc["fingerprint"] == public.fingerprint
    loaded = PrivateKey.from_json(doc)
    assert loaded == private and loaded.public.proof == public.proof
    assert loaded.decrypt(public.encrypt(-5)) == -5
    with pytest.raises(InvalidPrivateKey, match="format"):
        PrivateKey.from_json({**doc, "format": "pem"})
    with pytest.raises(InvalidPrivateKey, match="lacks a base64url value for: q"):
        PrivateKey.from_json({**doc, "q": None})
    with pytest.raises(InvalidPrivateKey, match="fingerprint does not match"):
        PrivateKey.from_json({**doc, "fingerprint": "0" * 32})
    with pytest.raises(InvalidPrivateKey, match="two distinct factors"):
        PrivateKey.from_json({**doc, "q": doc["p"]})


def test_ciphertext_encoding_has_the_fixed_width_of_n_squared(keys: tuple[PublicKey, PrivateKey]) -> None:
    public, private = keys
    small = public.encrypt(3, factor=1)  # 1 + 3n: far shorter than n²
    texts = {
        "a": paillier.encode_ciphertext(public, small),
        "b": paillier.encode_ciphertext(public, public.encrypt(4)),
    }
    assert {len(t) for t in texts.values()} == {len(b64(0, 512))} and public.ciphertext_bytes == 512
    decoded = paillier.decode_ciphertexts(public, texts)
    assert private.decrypt(decoded["a"]) == 3 and private.decrypt(decoded["b"]) == 4
    with pytest.raises(ValueError, match=r"\(0, n²\)"):
        paillier.encode_ciphertext(public, 0)


def test_malformed_ciphertexts_are_all_listed_by_location_without_values(
    keys: tuple[PublicKey, PrivateKey],
) -> None:
    public, private = keys
    good = paillier.encode_ciphertext(public, public.encrypt(1))
    not_coprime = b64(private.p * 12345, 512)
    too_big = b64(public.nsquare + 1, 512)
    texts: dict[str, object] = {
        "intercept": good,
        "features.0.weight": 17,
        "features.1.weight": good[:-4] + "!!!!",
        "features.2.weight": good + "==",
        "features.3.weight": b64(12345, 506),
        "features.4.weight": b64(0, 512),
        "features.5.weight": too_big,
        "features.6.weight": not_coprime,
        "features.7.weight": None,
    }
    with pytest.raises(MalformedCiphertexts) as caught:
        paillier.decode_ciphertexts(public, texts)
    error = caught.value
    assert error.locations == [f"features.{i}.weight" for i in range(8)]
    assert error.problems["features.0.weight"] == "a ciphertext is a base64url string, not a number"
    assert "not base64url" in error.problems["features.1.weight"]
    assert "not base64url" in error.problems["features.2.weight"]
    assert error.problems["features.3.weight"] == "506 bytes where a ciphertext under this key has 512"
    assert error.problems["features.4.weight"] == "zero is not a ciphertext"
    assert error.problems["features.5.weight"] == "not below n²"
    assert error.problems["features.6.weight"] == "not coprime to n"
    assert error.problems["features.7.weight"] == "a ciphertext is a base64url string, not null"
    message = str(error)
    assert message.startswith("8 malformed ciphertexts: features.0.weight: ")
    for location in error.locations:
        assert location in message
    for text in (good, not_coprime, too_big, good[:40], str(private.p)[:30]):
        assert text not in message
