"""The institution's side of anonymous query (匿踪查询): the zone learns a bucket, never the enterprise.

For each enterprise asked about, the SDK sends only the bucket its code hashes into (the
first `prefix_bits` bits of a hash: a set of at least k candidates, k a parameter the zone
publishes per product) and the code's OPRF point blinded by a scalar that never leaves this
machine (`privacy.anonymous_query.prepare`). The zone answers the point evaluated under its
key and its bucket's table: each candidate's answer sealed under a key derived from that
candidate's OPRF output. Unblinding yields this code's output only, which opens this code's
entry only (`open_answers`); the other entries stay sealed. Neither the code nor a plain
hash of it is ever sent.

Before trusting an answer the SDK checks that every bucket answered holds at least k
candidates, the anonymity the product promises, and refuses it otherwise.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from datazone.client.enterprises import checked_distinct
from datazone.client.errors import ZoneError
from datazone.privacy import anonymous_query
from datazone.privacy.labels import label_table_stats
from datazone.purposes import Purpose

if TYPE_CHECKING:
    from datazone.client.sdk import ZoneClient

PARAMETERS_PATIENCE_S = (
    900.0  # the zone builds a product's tables once per epoch; 2.6M candidates take minutes
)
ANSWER_KINDS = ("existence", "full")


class AnonymityNotMet(ZoneError):
    """The zone answered from a bucket holding fewer candidates than the product's k: refused here."""

    def __init__(self, detail: str) -> None:
        super().__init__(None, {"type": "bucket-below-k", "title": "Bucket below k", "detail": detail})


def _unexpected(detail: str) -> ZoneError:
    return ZoneError(None, {"type": "unexpected-answer", "detail": detail})


@dataclass(frozen=True)
class AnonymousParameters:
    """What the zone publishes about a product served by anonymous query (GET /v1/anonymous/{id})."""

    product: str
    answer: str  # "existence" or "full"
    k: int  # every bucket holds at least k candidates
    prefix_bits: int
    buckets: int
    smallest_bucket: int
    candidates: int
    table: int
    epoch: int
    max_queries: int
    price_fen: int | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def withheld(self) -> tuple[str, ...]:
        """Output fields the zone withholds from this product's full answers (they open as null)."""
        masking = self.raw.get("masking")
        if not isinstance(masking, dict):
            return ()
        return tuple(sorted(str(name) for name, how in masking.items() if how == "withheld"))


@dataclass(frozen=True)
class AnonymousAnswer:
    uscc: str
    found: bool  # existence: on the list; full: the zone holds an answer for it
    answer: dict[str, Any] | None  # full answers only
    bucket: int
    candidates: int  # how many enterprises the zone could not tell this one from
    withheld: tuple[str, ...] = ()  # fields of `answer` the zone withholds: null there is not "no value"


@dataclass(frozen=True)
class AnonymousLookup:
    product: str
    answer_kind: str
    k: int
    prefix_bits: int
    table: int
    epoch: int
    results: list[AnonymousAnswer] = field(repr=False)  # one per distinct code, in order
    charged_fen: int | None = None


def _int(body: Mapping[str, Any], name: str, where: str, *, low: int = 0) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise _unexpected(f"{where}: {name} {value!r} is not an integer of at least {low}")
    return value


def parameters(zone: ZoneClient, product: str) -> AnonymousParameters:
    """The product's published parameters; waits out a table the zone is still building."""
    path = f"/v1/anonymous/{quote(product, safe='')}"
    resp = zone._exchange("GET", path, patience=PARAMETERS_PATIENCE_S)
    try:
        body = resp.json()
    except ValueError:
        raise _unexpected(f"GET {path} did not answer JSON") from None
    if not isinstance(body, dict):
        raise _unexpected(f"GET {path} did not answer a JSON object")
    where = f"GET {path}"
    if body.get("answer") not in ANSWER_KINDS:
        raise _unexpected(f"{where}: answer {body.get('answer')!r} is neither 'existence' nor 'full'")
    price = body.get("price_fen")
    params = AnonymousParameters(
        product=product,
        answer=str(body["answer"]),
        k=_int(body, "k", where, low=2),
        prefix_bits=_int(body, "prefix_bits", where),
        buckets=_int(body, "buckets", where, low=1),
        smallest_bucket=_int(body, "smallest_bucket", where),
        candidates=_int(body, "candidates", where),
        table=_int(body, "table", where),
        epoch=_int(body, "epoch", where),
        max_queries=_int(body, "max_queries", where, low=1),
        price_fen=price if isinstance(price, int) else None,
        raw=body,
    )
    if params.prefix_bits > anonymous_query.MAX_PREFIX_BITS:
        raise _unexpected(
            f"{where}: prefix_bits {params.prefix_bits} is above {anonymous_query.MAX_PREFIX_BITS}"
        )
    if params.smallest_bucket < params.k:
        # checked before anything is sent: a query would tell the zone more than the product promises
        raise AnonymityNotMet(
            f"{product}'s smallest bucket holds {params.smallest_bucket} candidates, fewer than its k of"
            f" {params.k}; no query was sent"
        )
    return params


def _b64decode(text: object, where: str) -> bytes:
    if not isinstance(text, str):
        raise _unexpected(f"{where} is not a base64 string")
    try:
        return anonymous_query.b64decode(text)
    except ValueError:
        raise _unexpected(f"{where} is not standard base64") from None


def _read_label(kind: str, label: bytes | None, where: str) -> tuple[bool, dict[str, Any] | None]:
    """(found, answer) from this code's opened entry.

    existence: an entry (empty) means listed, none means not listed. full: an entry holds the
    answer as compact JSON, `null` when the product has no answer for the enterprise; none
    means the enterprise is not among the zone's candidates."""
    if label is None:
        return False, None
    if kind == "existence":
        return True, None
    try:
        answer = json.loads(label.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _unexpected(f"{where}: the opened answer is not JSON") from None
    if answer is None:
        return False, None
    if not isinstance(answer, dict):
        raise _unexpected(f"{where}: the opened answer is not a JSON object")
    return True, answer


def _ask(
    zone: ZoneClient,
    params: AnonymousParameters,
    codes: Sequence[str],
    purpose: Purpose,
) -> tuple[list[AnonymousAnswer], int | None]:
    """One POST of up to max_queries codes: prepared, sent, checked, opened."""
    buckets, blinded = anonymous_query.prepare(list(codes), params.prefix_bits)
    body = {
        "purpose": purpose.value,
        "prefix_bits": params.prefix_bits,
        "queries": [
            {"bucket": bucket, "point": anonymous_query.b64encode(point)}
            for bucket, point in zip(buckets, blinded.points, strict=True)
        ],
    }
    path = f"/v1/anonymous/{quote(params.product, safe='')}/queries"
    # one key for this body: a retry after a dropped connection sends both again and is not billed twice
    answered = zone._call("POST", path, json=body, idempotency_key=str(uuid.uuid4()))
    where = f"POST {path}"
    if not isinstance(answered, dict) or not isinstance(answered.get("answers"), list):
        raise _unexpected(f"{where} answered no answers")
    answers = answered["answers"]
    if len(answers) != len(codes):
        raise _unexpected(f"{where}: {len(answers)} answers for {len(codes)} queries")
    if answered.get("prefix_bits", params.prefix_bits) != params.prefix_bits:
        raise _unexpected(
            f"{where}: answered with prefix_bits {answered.get('prefix_bits')!r}, asked {params.prefix_bits}"
        )
    k = answered.get("k", params.k)
    if not isinstance(k, int) or k < params.k:
        raise AnonymityNotMet(
            f"{where}: the zone answered under k {k!r}, below the product's published {params.k}"
        )
    points: list[bytes] = []
    tables: list[bytes] = []
    sizes: list[int] = []
    for index, (answer, bucket) in enumerate(zip(answers, buckets, strict=True)):
        at = f"{where}: answers.{index}"
        if not isinstance(answer, dict) or answer.get("bucket") != bucket:
            raise _unexpected(f"{at} is not the answer for the bucket asked")
        candidates = _int(answer, "candidates", at)
        points.append(_b64decode(answer.get("point"), f"{at}.point"))
        tables.append(_b64decode(answer.get("entries"), f"{at}.entries"))
        if params.answer == "full":
            # a full answer holds every candidate's entry: count them rather than take the zone's word
            try:
                candidates = min(candidates, label_table_stats(tables[-1])["entries"])
            except ValueError as exc:
                raise _unexpected(f"{at}.entries is not a sealed table ({exc})") from None
        sizes.append(candidates)
    try:
        anonymous_query.check_buckets(sizes, params.k)
    except anonymous_query.BucketTooSmall as exc:
        raise AnonymityNotMet(f"{where}: {exc}; no answer was opened") from None
    try:
        labels = anonymous_query.open_answers(blinded, points, tables)
    except ValueError as exc:  # malformed points or tables from the zone
        raise _unexpected(f"{where}: the answers cannot be opened ({type(exc).__name__}: {exc})") from None
    results = []
    for index, (code, bucket, candidates, label) in enumerate(
        zip(codes, buckets, sizes, labels, strict=True)
    ):
        found, answer = _read_label(params.answer, label, f"{where}: answers.{index}")
        withheld = params.withheld if answer is not None else ()
        results.append(AnonymousAnswer(code, found, answer, bucket, candidates, withheld))
    charged = answered.get("charged_fen")
    return results, charged if isinstance(charged, int) else None


def anonymous_lookup(
    zone: ZoneClient,
    product: str,
    usccs: str | Sequence[str],
    *,
    purpose: Purpose,
) -> AnonymousLookup:
    """Each code's answer from `product` without the zone learning which enterprises were asked.

    Every code is checked first (`InvalidUSCCs`, nothing sent). Codes go in requests of the
    product's max_queries each. When the zone rebuilt its tables between the parameters and a
    request (409 anonymous-parameters-changed), the parameters are fetched and the request
    prepared and sent again, once."""
    codes = checked_distinct([usccs] if isinstance(usccs, str) else list(usccs))
    params = parameters(zone, product)
    results: list[AnonymousAnswer] = []
    charged: int | None = None
    start = 0
    while start < len(codes):
        chunk = codes[start : start + params.max_queries]
        try:
            answers, fen = _ask(zone, params, chunk, purpose)
        except ZoneError as exc:
            if exc.status != 409 or exc.type != "anonymous-parameters-changed":
                raise
            params = parameters(zone, product)
            chunk = codes[start : start + params.max_queries]
            answers, fen = _ask(zone, params, chunk, purpose)
        results.extend(answers)
        if fen is not None:
            charged = (charged or 0) + fen
        start += len(chunk)
    return AnonymousLookup(
        product=product,
        answer_kind=params.answer,
        k=params.k,
        prefix_bits=params.prefix_bits,
        table=params.table,
        epoch=params.epoch,
        results=results,
        charged_fen=charged,
    )


__all__ = [
    "AnonymityNotMet",
    "AnonymousAnswer",
    "AnonymousLookup",
    "AnonymousParameters",
    "anonymous_lookup",
    "parameters",
]
