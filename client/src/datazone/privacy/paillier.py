"""Paillier encryption over gmpy2, for secure scoring (安全评分).

The institution holds the private key; the zone only ever sees the public key
and ciphertexts. With g = n + 1, g^m = 1 + m·n (mod n²), so

    Enc(m; r) = (1 + m·n) · r^n  (mod n²),   r uniform in Z_n*

and the costly part of an encryption is the factor r^n mod n², which does not
depend on m: the zone computes these re-randomization factors ahead of time,
off the request path (`rerandomization_factors`). Decryption is the standard
CRT form (L_p(c^(p-1) mod p²)·h_p mod p, the same for q, then CRT), as in
python-paillier (`phe`), which the tests use as the reference: the same n and r
give the same ciphertext as phe's `raw_encrypt(m, r_value=r)`.

A key's public part carries a non-interactive proof that gcd(n, φ(n)) = 1
(Goldberg, Reyzin, Sagga, Baldimtsi, "Efficient noninteractive certification of
RSA moduli and beyond", 2019): the n-th roots of `KEY_PROOF_ROUNDS` values
derived from n by hashing. The zone relies on it: when gcd(n, φ(n)) = 1 the
n-th powers r^n have index exactly n in Z_{n²}*, so multiplying a ciphertext by
a fresh r^n leaves the institution its plaintext and nothing else. A modulus
built otherwise (say n = p·q with p | q - 1) has a larger quotient, and crafted
"ciphertexts" could then carry a second, hidden linear function of the zone's
features through the scoring circuit. Trial division up to 10,000 is what makes
10 rounds enough: a bad modulus passes one round with probability at most
1/10,000, so all ten with probability below 2^-128.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import multiprocessing
import re
import secrets
import threading
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property
from itertools import repeat
from typing import Any

import gmpy2
from gmpy2 import mpz

MIN_KEY_BITS = 2048
MAX_KEY_BITS = 4096
# Trial division bound and proof rounds: 10,000^10 > 2^128 (see the module docstring).
SMALL_PRIME_BOUND = 10_000
KEY_PROOF_ROUNDS = 10
PRIVATE_KEY_FORMAT = "datazone-paillier-private-key/1"

_PROOF_TAG = b"datazone/paillier/v1/nth-root-challenge"
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_SHOWN_LOCATIONS = 20
# Below this many factors a process pool costs more to start than it saves.
_PARALLEL_MIN_FACTORS = 16


def _small_primorial() -> mpz:
    product, prime = mpz(1), mpz(2)
    while prime < SMALL_PRIME_BOUND:
        product *= prime
        prime = gmpy2.next_prime(prime)
    return product


_SMALL_PRIMORIAL = _small_primorial()
_ONE = mpz(1)
# keys whose modulus proof verified, oldest first (a dict keeps insertion order)
_verified_proofs: dict[tuple[int, tuple[int, ...]], None] = {}
_VERIFIED_PROOFS_KEPT = 256
_verified_lock = threading.Lock()


class KeyTooSmall(ValueError):
    """A Paillier modulus shorter than the minimum the caller accepts."""

    def __init__(self, bits: int, minimum: int) -> None:
        self.bits = bits
        self.minimum = minimum
        super().__init__(f"a Paillier key of {bits} bits is below the {minimum}-bit minimum")


class InvalidPublicKey(ValueError):
    """A public key that is not a usable Paillier modulus (the message says why, never its digits)."""


class InvalidPrivateKey(ValueError):
    """A private key file that does not hold a consistent Paillier key."""


class MalformedCiphertexts(ValueError):
    """Some texts are not ciphertexts under the key. `locations` lists every one of
    them and `problems` says what is wrong with each; the message names locations
    and reasons, never the texts or their values."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        self.locations = list(self.problems)
        shown = "; ".join(f"{loc}: {why}" for loc, why in list(self.problems.items())[:_SHOWN_LOCATIONS])
        more = len(self.locations) - _SHOWN_LOCATIONS
        if more > 0:
            shown += f"; and {more} more"
        super().__init__(f"{len(self.locations)} malformed ciphertexts: {shown}")


@dataclass(frozen=True, repr=False)
class PublicKey:
    """A Paillier public key: the modulus n (g = n + 1), and the proof that
    gcd(n, φ(n)) = 1 when the key came from its private part."""

    n: int
    proof: tuple[int, ...] = field(default=(), compare=False)

    def __repr__(self) -> str:
        return f"PublicKey(bits={self.bits}, fingerprint={self.fingerprint!r})"

    @classmethod
    def from_n(cls, n: int, *, min_bits: int = MIN_KEY_BITS) -> PublicKey:
        """A validated public key: at least max(min_bits, 2048) and at most 4096
        bits, odd, not prime, with no prime factor below 10,000."""
        _check_modulus(n, min_bits=min_bits)
        return cls(int(n))

    @cached_property
    def bits(self) -> int:
        return self.n.bit_length()

    @cached_property
    def nsquare(self) -> int:
        return self.n * self.n

    @cached_property
    def ciphertext_bytes(self) -> int:
        """Bytes of an encoded ciphertext: those of n², fixed for the key."""
        return (self.nsquare.bit_length() + 7) // 8

    @cached_property
    def fingerprint(self) -> str:
        """The first 32 hex digits of SHA-256 over n, big-endian: how people name a key."""
        return hashlib.sha256(_int_bytes(self.n)).hexdigest()[:32]

    def to_json(self) -> dict[str, str]:
        doc = {"n": _b64(_int_bytes(self.n))}
        if self.proof:
            width = _modulus_bytes(self.n)
            doc["proof"] = _b64(b"".join(root.to_bytes(width, "big") for root in self.proof))
        return doc

    @classmethod
    def from_json(cls, doc: object, *, min_bits: int = MIN_KEY_BITS) -> PublicKey:
        """Parse {"n": base64url, "proof"?: base64url}; KeyTooSmall or InvalidPublicKey.
        The proof is parsed, not verified: `check_proof` verifies it."""
        if not isinstance(doc, Mapping):
            raise InvalidPublicKey('a public key is an object {"n": base64url of the modulus}')
        unknown = sorted(str(k) for k in doc if k not in ("n", "proof"))
        if unknown:
            raise InvalidPublicKey(f"unknown fields in the public key: {', '.join(unknown)}")
        raw = _b64decode(doc.get("n"))
        if raw is None:
            raise InvalidPublicKey(
                'the public key\'s "n" must be the modulus, big-endian, in base64url without padding'
            )
        key = cls.from_n(int.from_bytes(raw, "big"), min_bits=min_bits)
        if doc.get("proof") is None:
            return key
        proof = _b64decode(doc["proof"])
        width = _modulus_bytes(key.n)
        if proof is None or len(proof) != KEY_PROOF_ROUNDS * width:
            raise InvalidPublicKey(
                f'the public key\'s "proof" must be {KEY_PROOF_ROUNDS} roots of {width} bytes each, '
                "concatenated, in base64url without padding"
            )
        roots = tuple(int.from_bytes(proof[i : i + width], "big") for i in range(0, len(proof), width))
        return replace(key, proof=roots)

    def check_proof(self) -> None:
        """Verify the proof that gcd(n, φ(n)) = 1; InvalidPublicKey when it is missing or fails."""
        if not self.proof:
            raise InvalidPublicKey(
                "the public key carries no proof that gcd(n, φ(n)) = 1; send the public key of a key "
                "generated or loaded with its private part (PrivateKey.public)"
            )
        with _verified_lock:
            if (self.n, self.proof) in _verified_proofs:
                return
        n = mpz(self.n)
        if len(self.proof) != KEY_PROOF_ROUNDS or any(
            not 0 < root < self.n or gmpy2.powmod(root, n, n) != challenge
            for root, challenge in zip(self.proof, _proof_challenges(self.n), strict=False)
        ):
            raise InvalidPublicKey(
                "the public key's proof does not verify: the modulus is not a valid Paillier modulus "
                "(gcd(n, φ(n)) ≠ 1) or the proof belongs to another key"
            )
        # a gateway checks the same registered keys again and again: remember the last few
        with _verified_lock:
            _verified_proofs[(self.n, self.proof)] = None
            while len(_verified_proofs) > _VERIFIED_PROOFS_KEPT:
                _verified_proofs.pop(next(iter(_verified_proofs)))

    def encrypt(self, m: int, *, factor: int | None = None) -> int:
        """Enc(m) = (1 + m·n) · factor mod n², m taken mod n (so a negative m
        encrypts n - |m|); factor = r^n mod n² (fresh when not given)."""
        n, nsquare = self.n, mpz(self.nsquare)
        randomizer = _factor(mpz(n), nsquare) if factor is None else mpz(factor)
        return int(mpz(1 + (m % n) * n) * randomizer % nsquare)


@dataclass(frozen=True)
class PrivateKey:
    """A Paillier private key: the public key and its primes. Constructing one
    attaches the modulus proof to `public` when it has none."""

    public: PublicKey
    p: int = field(repr=False)
    q: int = field(repr=False)

    def __post_init__(self) -> None:
        if self.p <= 1 or self.q <= 1 or self.p == self.q or self.p * self.q != self.public.n:
            raise InvalidPrivateKey(
                "the primes of a private key must be two distinct factors of its modulus n"
            )
        if not self.public.proof:
            object.__setattr__(self, "public", replace(self.public, proof=self._prove()))

    def _prove(self) -> tuple[int, ...]:
        n = mpz(self.public.n)
        phi = mpz((self.p - 1) * (self.q - 1))
        if gmpy2.gcd(n, phi) != 1:
            raise InvalidPrivateKey("gcd(n, φ(n)) ≠ 1: the primes do not make a Paillier key")
        exponent = gmpy2.invert(n, phi)
        return tuple(
            int(gmpy2.powmod(challenge, exponent, n)) for challenge in _proof_challenges(self.public.n)
        )

    @cached_property
    def _crt(self) -> tuple[mpz, mpz, mpz, mpz, mpz, mpz, mpz]:
        p, q = mpz(self.p), mpz(self.q)
        psquare, qsquare = p * p, q * q
        g = mpz(self.public.n + 1)
        hp = gmpy2.invert(_lower(gmpy2.powmod(g, self.p - 1, psquare), p), p)
        hq = gmpy2.invert(_lower(gmpy2.powmod(g, self.q - 1, qsquare), q), q)
        return p, q, psquare, qsquare, hp, hq, gmpy2.invert(q, p)

    def decrypt_residue(self, c: int) -> int:
        """The plaintext of c as a residue in [0, n)."""
        if not 0 < c < self.public.nsquare:
            raise ValueError("a ciphertext must be in (0, n²)")
        p, q, psquare, qsquare, hp, hq, qinv = self._crt
        value = mpz(c)
        mp = _lower(gmpy2.powmod(value, self.p - 1, psquare), p) * hp % p
        mq = _lower(gmpy2.powmod(value, self.q - 1, qsquare), q) * hq % q
        return int(mq + (mp - mq) * qinv % p * q)

    def decrypt(self, c: int) -> int:
        """The plaintext of c, signed: residues above n // 2 stand for negative numbers."""
        m = self.decrypt_residue(c)
        return m - self.public.n if m > self.public.n // 2 else m

    def to_json(self) -> dict[str, str]:
        """The institution's key file (never sent): the modulus and both primes, base64url."""
        return {
            "format": PRIVATE_KEY_FORMAT,
            "fingerprint": self.public.fingerprint,
            "n": _b64(_int_bytes(self.public.n)),
            "p": _b64(_int_bytes(self.p)),
            "q": _b64(_int_bytes(self.q)),
        }

    @classmethod
    def from_json(cls, doc: object, *, min_bits: int = MIN_KEY_BITS) -> PrivateKey:
        if not isinstance(doc, Mapping) or doc.get("format") != PRIVATE_KEY_FORMAT:
            raise InvalidPrivateKey(f'a private key file is an object with "format": "{PRIVATE_KEY_FORMAT}"')
        parts = {name: _b64decode(doc.get(name)) for name in ("n", "p", "q")}
        missing = [name for name, raw in parts.items() if raw is None]
        if missing:
            raise InvalidPrivateKey(f"the private key file lacks a base64url value for: {', '.join(missing)}")
        n, p, q = (int.from_bytes(raw or b"", "big") for raw in parts.values())
        try:
            public = PublicKey.from_n(n, min_bits=min_bits)
        except InvalidPublicKey as exc:
            raise InvalidPrivateKey(f"the private key's modulus is not usable: {exc}") from None
        if not (gmpy2.is_prime(p, 40) and gmpy2.is_prime(q, 40)):
            raise InvalidPrivateKey("the private key's p and q must be primes")
        key = cls(public, p, q)
        if "fingerprint" in doc and doc["fingerprint"] != public.fingerprint:
            raise InvalidPrivateKey("the private key file's fingerprint does not match its modulus")
        return key


def generate_keypair(bits: int = MIN_KEY_BITS) -> tuple[PublicKey, PrivateKey]:
    """A fresh key of exactly `bits` bits (even, 2048 to 4096) from two primes of
    bits/2 bits each, drawn from the OS CSPRNG."""
    if bits < MIN_KEY_BITS:
        raise KeyTooSmall(bits, MIN_KEY_BITS)
    if bits > MAX_KEY_BITS or bits % 2:
        raise ValueError(f"a Paillier key has an even number of bits up to {MAX_KEY_BITS}; got {bits}")
    half = bits // 2
    while True:
        p, q = _random_prime(half), _random_prime(half)
        n = p * q
        # equal-size primes make gcd(n, φ(n)) = 1 all but certain; check it anyway
        if p != q and n.bit_length() == bits and gmpy2.gcd(n, mpz((int(p) - 1) * (int(q) - 1))) == 1:
            break
    private = PrivateKey(PublicKey(int(n)), int(p), int(q))
    return private.public, private


def encode_ciphertext(pub: PublicKey, c: int) -> str:
    """base64url without padding of c, big-endian on the fixed width of n²."""
    if not 0 < c < pub.nsquare:
        raise ValueError("a ciphertext must be in (0, n²)")
    return _b64(int(c).to_bytes(pub.ciphertext_bytes, "big"))


def decode_ciphertexts(pub: PublicKey, texts: Mapping[str, object]) -> dict[str, int]:
    """Decode location -> text; MalformedCiphertexts lists every bad location
    (not a string, not base64url, wrong length, zero, not below n², not coprime to n)."""
    width = pub.ciphertext_bytes
    n, nsquare = mpz(pub.n), mpz(pub.nsquare)
    decoded: dict[str, int] = {}
    problems: dict[str, str] = {}
    for location, text in texts.items():
        if not isinstance(text, str):
            problems[location] = f"a ciphertext is a base64url string, not {_kind(text)}"
            continue
        raw = _b64decode(text)
        if raw is None:
            problems[location] = "not base64url (A-Z a-z 0-9 - _, without padding)"
            continue
        if len(raw) != width:
            problems[location] = f"{len(raw)} bytes where a ciphertext under this key has {width}"
            continue
        value = mpz(int.from_bytes(raw, "big"))
        if value == 0:
            problems[location] = "zero is not a ciphertext"
        elif value >= nsquare:
            problems[location] = "not below n²"
        elif gmpy2.gcd(value, n) != 1:
            problems[location] = "not coprime to n"
        else:
            decoded[location] = int(value)
    if problems:
        raise MalformedCiphertexts(problems)
    return decoded


def rerandomization_factors(pub: PublicKey, count: int, *, processes: int = 1) -> list[int]:
    """`count` factors r^n mod n², r uniform in Z_n* from `secrets`; in `processes`
    spawned processes when asked (each costs a full-size modular exponentiation)."""
    if count < 0:
        raise ValueError("the number of factors cannot be negative")
    if processes <= 1 or count < _PARALLEL_MIN_FACTORS:
        return _factors(pub.n, count)
    # Several chunks per process so a slow one does not hold up the end.
    parts = min(count, processes * 4)
    sizes = [count // parts + (1 if i < count % parts else 0) for i in range(parts)]
    # spawn, not fork: the caller (a gateway or worker) may hold threads and database pools.
    context = multiprocessing.get_context("spawn")
    factors: list[int] = []
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        for chunk in pool.map(_factors, repeat(pub.n), sizes):
            factors.extend(chunk)
    return factors


def rerandomize(pub: PublicKey, c: int, factor: int) -> int:
    """c · factor mod n²: the same plaintext under fresh randomness."""
    return int(mpz(c) * mpz(factor) % mpz(pub.nsquare))


def _factors(n: int, count: int) -> list[int]:
    modulus = mpz(n)
    nsquare = modulus * modulus
    return [int(_factor(modulus, nsquare)) for _ in range(count)]


def _factor(n: mpz, nsquare: mpz) -> mpz:
    while True:
        r = mpz(secrets.randbelow(int(n)))
        if gmpy2.gcd(r, n) == 1:  # r = 0 included
            return gmpy2.powmod(r, n, nsquare)


def _random_prime(bits: int) -> mpz:
    while True:
        # top two bits set, so the product of two such primes has exactly 2·bits bits
        candidate = mpz(secrets.randbits(bits)) | (mpz(3) << (bits - 2)) | 1
        prime = gmpy2.next_prime(candidate)
        if prime.bit_length() == bits and gmpy2.is_prime(prime, 40):
            return prime


def _check_modulus(n: object, *, min_bits: int) -> None:
    if min_bits > MAX_KEY_BITS:
        raise ValueError(f"min_bits {min_bits} is above the {MAX_KEY_BITS}-bit maximum")
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise InvalidPublicKey("a Paillier modulus is a positive integer")
    bits, minimum = n.bit_length(), max(MIN_KEY_BITS, min_bits)
    if bits < minimum:
        raise KeyTooSmall(bits, minimum)
    if bits > MAX_KEY_BITS:
        raise InvalidPublicKey(f"a Paillier key of {bits} bits is above the {MAX_KEY_BITS}-bit maximum")
    if n % 2 == 0:
        raise InvalidPublicKey("the modulus is even; a Paillier modulus is the product of two odd primes")
    if gmpy2.gcd(n, _SMALL_PRIMORIAL) != 1:
        raise InvalidPublicKey(
            f"the modulus has a prime factor below {SMALL_PRIME_BOUND:,}; "
            "a Paillier modulus is the product of two large primes"
        )
    if gmpy2.is_prime(n, 25):
        raise InvalidPublicKey("the modulus is prime; a Paillier modulus is the product of two large primes")


def _proof_challenges(n: int) -> list[mpz]:
    """The values whose n-th roots make the proof: SHAKE-256 of (tag, n, i), 128 bits
    longer than n and reduced mod n, so their bias is below 2^-128."""
    n_bytes = _int_bytes(n)
    size = _modulus_bytes(n) + 16
    head = _PROOF_TAG + len(n_bytes).to_bytes(4, "big") + n_bytes
    return [
        mpz(int.from_bytes(hashlib.shake_256(head + i.to_bytes(4, "big")).digest(size), "big") % n)
        for i in range(KEY_PROOF_ROUNDS)
    ]


def _lower(x: mpz, prime: mpz) -> mpz:
    """L_p(x) = (x - 1) / p, for x = 1 (mod p)."""
    return (x - _ONE) // prime


def _modulus_bytes(n: int) -> int:
    return (n.bit_length() + 7) // 8


def _int_bytes(value: int) -> bytes:
    return int(value).to_bytes(_modulus_bytes(value), "big")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: object) -> bytes | None:
    """Strict base64url without padding: None unless `text` is the canonical encoding of some bytes."""
    if not isinstance(text, str) or not text or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if _b64(raw) == text else None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__
    )
