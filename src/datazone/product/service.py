"""Data products: apply specs checked against the zone, search the catalog, move products
through their lifecycle (draft -> published -> deprecated -> retired).

A product spec is valid only against the zone it will run on: its datasets and fields
must exist, its outputs must be what its logic produces, and its params what the logic
understands. `validate_product` checks all of it and lists every problem at once;
`apply_product` writes nothing unless the spec passes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.orm import Session

from datazone.audit import service as audit_service
from datazone.dataset import service as dataset_service
from datazone.dataset.schemas import DatasetSpec
from datazone.errors import Conflict, InvalidSpec, NotFound
from datazone.lifecycle import service as lifecycle_service
from datazone.lifecycle.models import Transition
from datazone.principal.models import Principal
from datazone.privacy import anonymous_query
from datazone.product.engine.logics import LOGICS
from datazone.product.models import Product
from datazone.product.schemas import (
    CATEGORY_NAMES,
    VISIBLE_STATES,
    Category,
    OutputOut,
    ProductOut,
    ProductSpec,
    ProductState,
    Tier,
)

SUBJECT = "product"


# ---------------------------------------------------------------- specs


def _locate(loc: Iterable[Any]) -> str:
    return ".".join(str(p) for p in loc) or "(document)"


def parse_product_spec(raw: Any, *, origin: str = "product spec") -> ProductSpec:
    """Validate a spec document's shape, listing every problem at once."""
    try:
        return ProductSpec.model_validate(raw)
    except ValidationError as exc:
        errors = [
            {"location": _locate(e["loc"]), "problem": e["msg"]}
            for e in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        raise InvalidSpec(_summary(origin, errors), errors=errors, origin=origin) from None


def _summary(origin: str, errors: list[dict[str, str]]) -> str:
    listed = "; ".join(f"{e['location']}: {e['problem']}" for e in errors)
    return f"{origin} is not a valid product spec ({len(errors)} problem{'s' if len(errors) > 1 else ''}): {listed}"


def validate_product(session: Session, *, spec: ProductSpec, origin: str | None = None) -> ProductSpec:
    """Check a spec against the zone and the engine; return it with each output's grade and
    masking resolved (from its source field when it shows exactly one). Raises InvalidSpec
    listing every problem, each with its location in the document."""
    problems: list[dict[str, str]] = []

    def problem(location: str, text: str) -> None:
        problems.append({"location": location, "problem": text})

    datasets: dict[str, DatasetSpec] = {}
    for ds_id, fields in spec.sources.items():
        try:
            ds = dataset_service.get_dataset(session, dataset_id=ds_id)
        except NotFound:
            known = ", ".join(d.id for d in dataset_service.list_datasets(session)) or "none yet"
            problem(f"sources.{ds_id}", f"unknown dataset {ds_id!r}; datasets in the zone: {known}")
            continue
        dspec = dataset_service.spec_of(ds)
        datasets[ds_id] = dspec
        names = [f.name for f in dspec.fields]
        for i, name in enumerate(fields):
            if name not in names:
                problem(
                    f"sources.{ds_id}.{i}",
                    f"dataset {ds_id!r} has no field {name!r}; its fields: {', '.join(names)}",
                )

    if spec.psi is not None:
        pop = spec.psi.population
        for name in pop.where:
            if name not in spec.sources.get(pop.dataset, []):
                problem(
                    f"psi.population.where.{name}",
                    f"declare {name!r} in sources.{pop.dataset} to filter the population on it",
                )

    if spec.anonymous is not None:
        for location, text in _anonymous_problems(session, spec=spec, datasets=datasets):
            problem(location, text)

    logic = LOGICS.get(spec.logic)
    if logic is None:
        problem("logic", f"unknown logic {spec.logic!r}; the engine has: {', '.join(LOGICS)}")
    else:
        try:
            params = logic.params_model.model_validate(spec.params)
        except ValidationError as exc:
            for e in exc.errors(include_url=False, include_context=False, include_input=False):
                problem(_locate(["params", *e["loc"]]), e["msg"])
        else:
            for ds_id, needed in sorted(logic.needs(params).items()):
                missing = sorted(needed - set(spec.sources.get(ds_id, [])))
                if missing:
                    problem(
                        f"sources.{ds_id}",
                        f"logic {logic.name!r} reads {', '.join(f'{ds_id}.{m}' for m in missing)}: "
                        "declare every field the product reads",
                    )
        declared = [o.name for o in spec.outputs]
        for i, name in enumerate(declared):
            if name not in logic.outputs:
                problem(
                    f"outputs.{i}.name",
                    f"logic {logic.name!r} does not produce {name!r}; it produces: {', '.join(logic.outputs)}",
                )
        undeclared = [n for n in logic.outputs if n not in declared]
        if undeclared:
            problem(
                "outputs",
                f"logic {logic.name!r} also produces {', '.join(undeclared)}: declare each output "
                "with its sources, so its grade and masking are known",
            )

    resolved = []
    for i, out in enumerate(spec.outputs):
        sources = []
        for j, ref in enumerate(out.from_):
            ds_id, _, field = ref.partition(".")
            if not field:
                problem(f"outputs.{i}.from.{j}", f"{ref!r} is not of the form 'dataset.field'")
            elif field not in spec.sources.get(ds_id, []):
                problem(
                    f"outputs.{i}.from.{j}",
                    f"{ref!r} is not among the declared sources: add {field!r} to sources.{ds_id}",
                )
            elif ds_id in datasets and field in {f.name for f in datasets[ds_id].fields}:
                sources.append(datasets[ds_id].field(field))
        grade, masking = out.grade, out.masking
        if len(out.from_) == 1:
            if sources:
                src = sources[0]
                if grade is not None and grade < src.grade:
                    problem(
                        f"outputs.{i}.grade",
                        f"grade {grade} is below the grade {src.grade} of {out.from_[0]}, the field it "
                        "shows: an output cannot be less protected than its source",
                    )
                grade = src.grade if grade is None else grade
                masking = src.masking if masking is None else masking
        else:
            if grade is None:
                problem(f"outputs.{i}.grade", "state the grade: 'from' names more than one field")
            if masking is None:
                problem(f"outputs.{i}.masking", "state the masking: 'from' names more than one field")
        resolved.append(out.model_copy(update={"grade": grade, "masking": masking}))

    if problems:
        where = origin or f"product {spec.id!r}"
        raise InvalidSpec(_summary(where, problems), errors=problems, product=spec.id)
    return spec.model_copy(update={"outputs": resolved})


def _anonymous_problems(
    session: Session, *, spec: ProductSpec, datasets: dict[str, DatasetSpec]
) -> list[tuple[str, str]]:
    """An anonymous-query configuration checked against the zone's current data: its filters
    name declared fields, and every bucket holds at least k candidates at the declared prefix
    length (or at b = 0, when the length is derived)."""
    anon = spec.anonymous
    assert anon is not None
    problems: list[tuple[str, str]] = []
    for role in ("candidates", "members"):
        pop = getattr(anon, role)
        if pop is None:
            continue
        for name in pop.where:
            if name not in spec.sources.get(pop.dataset, []):
                problems.append(
                    (f"anonymous.{role}.where.{name}", f"declare {name!r} in sources.{pop.dataset} to filter on it")
                )
    pop = anon.candidates
    if problems or pop.dataset not in datasets:
        return problems  # the population cannot be read as declared
    version, candidates = dataset_service.population(session, dataset_id=pop.dataset, where=pop.where)
    try:
        anonymous_query.choose_prefix_bits(candidates, anon.k, prefix_bits=anon.prefix_bits)
    except anonymous_query.BucketTooSmall as exc:
        loaded = "" if version is not None else f" (dataset {pop.dataset!r} holds no data yet)"
        problems.append(("anonymous.prefix_bits" if anon.prefix_bits is not None else "anonymous.k", f"{exc}{loaded}"))
    return problems


# parsed specs by content hash: a stored spec never changes under its hash, so this cannot go
# stale (it caches parsing, not state: lifecycle, grants and contracts are read every request)
_PARSED: dict[tuple[str, str], ProductSpec] = {}


def spec_of(product: Product) -> ProductSpec:
    """The product's spec (shared: do not mutate; use model_copy)."""
    parsed = _PARSED.get((product.id, product.spec_sha256))
    if parsed is None:
        parsed = ProductSpec.model_validate(product.spec)
        if len(_PARSED) > 512:
            _PARSED.clear()
        _PARSED[(product.id, product.spec_sha256)] = parsed
    return parsed


def _stored(spec: ProductSpec) -> dict[str, Any]:
    data: dict[str, Any] = spec.model_dump(mode="json", by_alias=True)
    return data


def _sha(spec: ProductSpec) -> str:
    return hashlib.sha256(json.dumps(_stored(spec), sort_keys=True).encode()).hexdigest()


def apply_product(
    session: Session,
    *,
    spec: ProductSpec,
    by: Principal | None,
    by_name: str | None = None,
    origin: str | None = None,
) -> tuple[Product, str]:
    """Create or update a product. Returns (product, 'created'|'updated'|'unchanged').

    New products start as drafts. Applying the same spec again changes nothing and
    records nothing; a retired product cannot be changed.
    """
    resolved = validate_product(session, spec=spec, origin=origin)
    sha = _sha(resolved)
    existing = session.get(Product, spec.id, with_for_update=True)
    if existing is not None and existing.spec_sha256 == sha:
        return existing, "unchanged"
    if existing is None:
        lifecycle_service.transition(
            session,
            subject_type=SUBJECT,
            subject_id=spec.id,
            from_state=None,
            to_state=ProductState.draft.value,
            by=by,
            by_name=by_name,
            reason="product spec applied",
        )
        product = Product(
            id=spec.id,
            spec=_stored(resolved),
            spec_sha256=sha,
            state=ProductState.draft.value,
            seamless_switch=False,
        )
        session.add(product)
        result = "created"
    else:
        if existing.state == ProductState.retired.value:
            raise Conflict(
                f"product {spec.id!r} is retired and cannot change; declare a new product instead",
                product=spec.id,
                state=existing.state,
            )
        existing.spec, existing.spec_sha256 = _stored(resolved), sha
        product, result = existing, "updated"
    session.flush()
    audit_service.record(
        session,
        actor=by,
        actor_name=by_name,
        action="product.apply",
        object_type=SUBJECT,
        object_id=spec.id,
        detail={"result": result, "spec_sha256": sha, "state": product.state},
        supplier_ids=product_departments(session, product=product),
    )
    return product, result


# ---------------------------------------------------------------- reading


def get_product(session: Session, *, product_id: str, for_update: bool = False) -> Product:
    product = session.get(Product, product_id, with_for_update=for_update)
    if product is None:
        raise NotFound(f"no product {product_id!r}; see GET /v1/catalog/products", product=product_id)
    return product


def readable_by(viewer: Principal) -> sa.ColumnElement[bool]:
    """The products the viewer may read in the catalog, as a WHERE clause: the operator every
    state, everyone else published and deprecated ones (drafts and retired products are the
    operator's business: to others they do not exist)."""
    if viewer.kind == "operator":
        return sa.true()
    return Product.state.in_(VISIBLE_STATES)


def catalog_product(session: Session, *, product_id: str, viewer: Principal) -> Product:
    """One product of the catalog as the viewer may read it (404 otherwise)."""
    product = session.scalar(sa.select(Product).where(Product.id == product_id, readable_by(viewer)))
    if product is None:
        get_product(session, product_id=product_id)  # no such product at all: its own 404
        raise NotFound(f"no product {product_id!r} in the catalog", product=product_id)
    return product


def list_products(
    session: Session, *, states: Sequence[str] | None = None, viewer: Principal | None = None
) -> list[Product]:
    """Products in the given states (None: every state), of those the viewer may read (None: the system)."""
    q = sa.select(Product).order_by(Product.id)
    if viewer is not None:
        q = q.where(readable_by(viewer))
    if states is not None:
        q = q.where(Product.state.in_(list(states)))
    return list(session.scalars(q))


def product_departments(session: Session, *, product: Product) -> list[str]:
    """Supplier ids of the datasets the product reads: whose grants it needs."""
    suppliers = dataset_service.suppliers_of(session, dataset_ids=sorted(spec_of(product).sources))
    return sorted(set(suppliers.values()))


def search_catalog(
    session: Session,
    *,
    category: Category | str | None = None,
    department: str | None = None,
    tier: Tier | str | None = None,
    keyword: str | None = None,
    states: Sequence[str] | None = VISIBLE_STATES,
    viewer: Principal | None = None,
) -> list[Product]:
    """Products matching every given filter. keyword matches (case-insensitively) the id,
    names, description and output names and descriptions; department is a supplier whose
    dataset the product reads. states=None lists every state (the operator's view)."""
    suppliers = dataset_service.suppliers_of(session) if department else {}
    needle = keyword.strip().lower() if keyword and keyword.strip() else None
    found = []
    for product in list_products(session, states=states, viewer=viewer):
        spec = spec_of(product)
        if category is not None and spec.category != Category(category):
            continue
        if tier is not None and spec.tier != Tier(tier):
            continue
        if department is not None and department not in {suppliers.get(ds) for ds in spec.sources}:
            continue
        if needle is not None:
            haystack = [spec.id, spec.name, spec.name_en, spec.description]
            haystack += [o.name for o in spec.outputs] + [o.description for o in spec.outputs]
            if not any(needle in text.lower() for text in haystack):
                continue
        found.append(product)
    return found


def catalog_entries(session: Session, *, products: Sequence[Product]) -> list[ProductOut]:
    """Catalog entries, with the datasets looked up once for the whole list."""
    suppliers = dataset_service.suppliers_of(session)
    out = []
    for product in products:
        spec = spec_of(product)
        out.append(
            ProductOut(
                id=spec.id,
                name=spec.name,
                name_en=spec.name_en,
                description=spec.description,
                category=spec.category,
                category_name=CATEGORY_NAMES[spec.category],
                tier=spec.tier,
                price_fen=spec.price_fen,
                purposes=spec.purposes,
                consent_required=spec.consent_required,
                departments=sorted({suppliers[ds] for ds in spec.sources if ds in suppliers}),
                datasets=sorted(spec.sources),
                outputs=[
                    OutputOut(
                        name=o.name,
                        description=o.description,
                        from_=o.from_,
                        grade=o.grade or 1,
                        masking=o.masking or "none",
                        unit=o.unit,
                    )
                    for o in spec.outputs
                ],
                state=ProductState(product.state),
                successor=product.successor_id,
                seamless_switch=product.seamless_switch,
                updated_at=product.updated_at,
                psi=spec.psi,
                anonymous=spec.anonymous,
                scoring=spec.scoring,
            )
        )
    return out


# ---------------------------------------------------------------- lifecycle


def _require_move(product: Product, to_state: str, *, reason: str) -> None:
    """Refuse an illegal move before anything is written, as transition() would."""
    if not reason or not reason.strip():
        raise InvalidSpec(f"say why the product {product.id!r} moves to {to_state}: 'reason' is empty")
    nexts = lifecycle_service.allowed(SUBJECT, product.state)
    if to_state not in nexts:
        raise lifecycle_service.IllegalTransition(
            f"product {product.id!r} is {product.state}; it cannot move to {to_state}"
            + (f" (it may move to: {', '.join(nexts)})" if nexts else f" ({product.state} is final)"),
            subject_type=SUBJECT,
            subject_id=product.id,
            state=product.state,
            allowed=list(nexts),
        )


def _move(
    session: Session,
    product: Product,
    to_state: str,
    *,
    by: Principal | None,
    by_name: str | None,
    reason: str,
) -> None:
    lifecycle_service.transition(
        session,
        subject_type=SUBJECT,
        subject_id=product.id,
        from_state=product.state,
        to_state=to_state,
        by=by,
        by_name=by_name,
        reason=reason,
    )
    product.state = to_state


def publish_product(
    session: Session, *, product_id: str, by: Principal | None, reason: str, by_name: str | None = None
) -> Product:
    """Draft (or deprecated) -> published. The spec is checked against the zone again:
    datasets may have changed since it was applied."""
    product = get_product(session, product_id=product_id, for_update=True)
    _require_move(product, ProductState.published.value, reason=reason)
    validate_product(session, spec=spec_of(product))
    _move(session, product, ProductState.published.value, by=by, by_name=by_name, reason=reason)
    product.successor_id, product.seamless_switch = None, False
    session.flush()
    return product


def deprecate_product(
    session: Session,
    *,
    product_id: str,
    successor_id: str | None,
    seamless: bool,
    by: Principal | None,
    reason: str,
    by_name: str | None = None,
) -> Product:
    """Published -> deprecated, naming the successor callers should move to. With
    `seamless`, calls to the product once retired are served by the successor."""
    product = get_product(session, product_id=product_id, for_update=True)
    _require_move(product, ProductState.deprecated.value, reason=reason)
    if successor_id is None:
        if seamless:
            raise InvalidSpec(
                "a seamless switch needs a successor to switch to: give 'successor'", location="successor"
            )
    else:
        if successor_id == product_id:
            raise InvalidSpec(f"product {product_id!r} cannot be its own successor", location="successor")
        successor = get_product(session, product_id=successor_id)
        if successor.state != ProductState.published.value:
            raise Conflict(
                f"successor {successor_id!r} is {successor.state}; a successor must be published "
                "so callers have somewhere to go",
                successor=successor_id,
                successor_state=successor.state,
            )
        seen = {product_id}
        cursor: Product | None = successor
        while cursor is not None and cursor.successor_id is not None:
            if cursor.successor_id in seen:
                raise Conflict(
                    f"naming {successor_id!r} as the successor of {product_id!r} makes a cycle of successors",
                    successor=successor_id,
                )
            seen.add(cursor.id)
            cursor = session.get(Product, cursor.successor_id)
    _move(session, product, ProductState.deprecated.value, by=by, by_name=by_name, reason=reason)
    product.successor_id, product.seamless_switch = successor_id, bool(seamless and successor_id)
    session.flush()
    audit_service.record(
        session,
        actor=by,
        actor_name=by_name,
        action="product.successor",
        object_type=SUBJECT,
        object_id=product_id,
        reason=reason.strip(),
        detail={"successor": successor_id, "seamless": product.seamless_switch},
        supplier_ids=product_departments(session, product=product),
    )
    return product


def reinstate_product(
    session: Session, *, product_id: str, by: Principal | None, reason: str, by_name: str | None = None
) -> Product:
    """Deprecated -> published again: the successor and seamless switch are cleared."""
    product = get_product(session, product_id=product_id, for_update=True)
    if product.state != ProductState.deprecated.value:
        raise lifecycle_service.IllegalTransition(
            f"only a deprecated product can be reinstated; {product_id!r} is {product.state}"
            + (" (publish a draft instead)" if product.state == ProductState.draft.value else ""),
            subject_type=SUBJECT,
            subject_id=product_id,
            state=product.state,
            allowed=list(lifecycle_service.allowed(SUBJECT, product.state)),
        )
    return publish_product(session, product_id=product_id, by=by, reason=reason, by_name=by_name)


def retire_product(
    session: Session, *, product_id: str, by: Principal | None, reason: str, by_name: str | None = None
) -> Product:
    """Deprecated (with a named successor) -> retired, or an unpublished draft -> retired."""
    product = get_product(session, product_id=product_id, for_update=True)
    _require_move(product, ProductState.retired.value, reason=reason)
    if product.state == ProductState.deprecated.value and product.successor_id is None:
        raise Conflict(
            f"product {product_id!r} was deprecated without a successor; callers of a retired product "
            "are sent to its successor: reinstate it and deprecate it naming one, then retire it",
            product=product_id,
            state=product.state,
        )
    _move(session, product, ProductState.retired.value, by=by, by_name=by_name, reason=reason)
    session.flush()
    return product


def history(session: Session, *, product_id: str) -> list[Transition]:
    get_product(session, product_id=product_id)
    return lifecycle_service.history(session, subject_type=SUBJECT, subject_id=product_id)
