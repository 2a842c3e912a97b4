"""`datazone product ...`: apply product files, list the catalog, move products through
their lifecycle. The command acts as the system operator: its audit entries and
transitions name the account that ran it (`cli:<user>`).

The settings, the database and the services are imported in the commands that use them, for
start-up time (`datazone product --help` loads none of them), not to dodge an import cycle.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from datazone.errors import DomainError, InvalidSpec

if TYPE_CHECKING:
    from datazone.db import Database
    from datazone.product.models import Product

app = typer.Typer(no_args_is_help=True, help="data products: apply, list, publish, deprecate, retire")
out = Console()
err = Console(stderr=True)


def _db() -> Database:
    # here for start-up time (see the module docstring)
    from datazone.config import get_settings
    from datazone.db import Database

    return Database.from_settings(get_settings())


def _shell_actor() -> str:
    from datazone.principal.service import shell_actor  # here for start-up time

    return shell_actor()


def _print_problems(where: str, exc: DomainError) -> None:
    if not exc.errors:
        err.print(f"{where}: {exc.detail}", highlight=False, markup=False, soft_wrap=True)
    for e in exc.errors:
        err.print(
            f"{where}: {e.get('location', '')}: {e.get('problem', '')}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def _documents(path: Path) -> list[Any] | str:
    """The YAML documents of a file, or what is wrong with reading it."""
    if not path.is_file():
        return "no such file"
    try:
        return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        return f"not valid YAML: {exc}"


@app.command("apply")
def apply(files: list[Path]) -> None:
    """Create or update products from their files: all of them, or none if any has a problem."""
    # here for start-up time (see the module docstring)
    from datazone.product import service

    parsed: list[tuple[str, Any]] = []
    failed = False
    for path in files:
        docs = _documents(path)
        if isinstance(docs, str):
            err.print(f"{path}: {docs}", highlight=False, markup=False, soft_wrap=True)
            failed = True
            continue
        for i, doc in enumerate(docs):
            where = str(path) if len(docs) == 1 else f"{path} (document {i + 1})"
            try:
                parsed.append((where, service.parse_product_spec(doc, origin=where)))
            except InvalidSpec as exc:
                _print_problems(where, exc)
                failed = True
    ids = [spec.id for _, spec in parsed]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        err.print(
            f"product {dup!r} is declared in more than one file",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        failed = True
    if failed:
        raise typer.Exit(2)
    results: list[tuple[str, str]] = []
    db = _db()
    try:
        with db.unit_of_work() as s:
            # check every file against the zone first, so one report lists all problems
            for where, spec in parsed:
                try:
                    service.validate_product(s, spec=spec, origin=where)
                except InvalidSpec as exc:
                    _print_problems(where, exc)
                    failed = True
            if failed:
                raise typer.Exit(2)
            for where, spec in parsed:
                product, what = service.apply_product(
                    s, spec=spec, by=None, by_name=_shell_actor(), origin=where
                )
                results.append((product.id, what))
    except DomainError as exc:
        _print_problems("error", exc)
        raise typer.Exit(2) from None
    finally:
        db.dispose()
    for product_id, what in results:
        out.print(f"product {product_id}: {what}", highlight=False, soft_wrap=True)


@app.command("list")
def list_products(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every product in every state (the operator's view)."""
    # here for start-up time (see the module docstring)
    from datazone.product import service

    db = _db()
    with db.unit_of_work() as s:
        entries = service.catalog_entries(s, products=service.list_products(s))
        rows = [e.model_dump(mode="json", by_alias=True) for e in entries]
    db.dispose()
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    t = Table("product", "name", "category", "tier", "price (fen)", "state", "successor")
    for r in rows:
        t.add_row(
            r["id"],
            r["name"],
            r["category_name"],
            r["tier"],
            str(r["price_fen"]),
            r["state"],
            (r["successor"] or "-") + (" (seamless)" if r["seamless_switch"] else ""),
        )
    out.print(t)


Reason = Annotated[str, typer.Option("--reason", help="why: recorded with the transition")]


def _move(action: str, product_id: str, reason: str, **kwargs: Any) -> None:
    # here for start-up time (see the module docstring)
    from datazone.product import service

    moves: dict[str, Callable[..., Product]] = {
        "publish": service.publish_product,
        "deprecate": service.deprecate_product,
        "reinstate": service.reinstate_product,
        "retire": service.retire_product,
    }
    db = _db()
    try:
        with db.unit_of_work() as s:
            product = moves[action](
                s, product_id=product_id, by=None, by_name=_shell_actor(), reason=reason, **kwargs
            )
            state, successor, seamless = product.state, product.successor_id, product.seamless_switch
    except DomainError as exc:
        _print_problems("error", exc)
        raise typer.Exit(2) from None
    finally:
        db.dispose()
    extra = f", successor {successor}" + (" (seamless switch)" if seamless else "") if successor else ""
    out.print(f"product {product_id}: {state}{extra}", highlight=False, soft_wrap=True)


@app.command("publish")
def publish(product_id: Annotated[str, typer.Argument(metavar="ID")], reason: Reason) -> None:
    """Draft -> published."""
    _move("publish", product_id, reason)


@app.command("deprecate")
def deprecate(
    product_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Reason,
    successor: Annotated[
        str | None, typer.Option("--successor", help="the product callers should move to")
    ] = None,
    seamless: Annotated[
        bool, typer.Option("--seamless", help="once retired, serve its calls with the successor")
    ] = False,
) -> None:
    """Published -> deprecated, naming its successor."""
    _move("deprecate", product_id, reason, successor_id=successor, seamless=seamless)


@app.command("reinstate")
def reinstate(product_id: Annotated[str, typer.Argument(metavar="ID")], reason: Reason) -> None:
    """Deprecated -> published again."""
    _move("reinstate", product_id, reason)


@app.command("retire")
def retire(product_id: Annotated[str, typer.Argument(metavar="ID")], reason: Reason) -> None:
    """Deprecated (with a successor) or draft -> retired."""
    _move("retire", product_id, reason)
