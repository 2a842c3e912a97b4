"""`datazone consent ...`: an institution's enterprise consents registered from a CSV file,
listed and revoked from the shell, through the consent service the API calls (a change is made
`--as` the institution itself, whose consents they are; see `datazone.shell`).

The settings, the database and the services are imported in the commands that use them, for
start-up time (`datazone consent --help` loads none of them), not to dodge an import cycle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from datazone.errors import DomainError
from datazone.shell import ActAs, AsJson, Reason, database, fail, out, reader, say, when

if TYPE_CHECKING:
    from datazone.consent.schemas import ConsentIn

app = typer.Typer(no_args_is_help=True, help="institutions' enterprise consents: register from CSV, list, revoke")

# the CSV's header: one consent a line, as the API's body names them
# the header line: consent.service.CSV_COLUMNS, written out so that `--help` loads no service
COLUMNS = ("uscc", "purpose", "products", "valid_from", "valid_to", "evidence_ref", "evidence_sha256")


def _read_consents(path: Path) -> list[ConsentIn]:
    """Every line of the file as a consent, or exit listing every line's problem (nothing is written)."""
    # here for start-up time (see the module docstring)
    from datazone.consent.service import read_consents_csv

    try:
        # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        say(f"error: cannot read {path} as a UTF-8 CSV: {exc}")
        raise typer.Exit(2) from None
    consents, problems = read_consents_csv(text)
    if problems:
        say(f"error: {len(problems)} problems in {path}, no consent was registered:")
        for p in problems:
            say(f"  line {p.line}: {p.column}: {p.problem}")
        raise typer.Exit(2)
    return consents


@app.command("register")
def register(
    file: Annotated[Path, typer.Argument(metavar="CSV", help=f"header: {','.join(COLUMNS)}")],
    act_as: ActAs,
) -> None:
    """Register an institution's consents from a CSV file (one a line): all of them, or none."""
    # here for start-up time (see the module docstring)
    from datazone.consent import service
    from datazone.principal import service as principal_service

    consents = _read_consents(file)
    db = database()
    registered = 0
    done = 0
    try:
        # one transaction for the whole file; the service takes at most MAX_BATCH at a time
        with db.unit_of_work() as s:
            institution = principal_service.acting_principal(s, name=act_as)
            for done in range(0, len(consents), service.MAX_BATCH):
                batch = consents[done : done + service.MAX_BATCH]
                registered += len(service.register_consents(s, institution=institution, items=batch))
    except DomainError as exc:
        if not exc.errors:
            raise fail(exc) from None
        # the service numbers the items of its batch; the file's lines are what to fix
        last = min(len(consents), done + service.MAX_BATCH) + 1
        say(f"error: {exc.detail.split(':', 1)[0]} (lines {done + 2} to {last} of {file})")
        for e in exc.errors:
            line = done + int(e.get("index", 0)) + 2
            field = str(e.get("location", "")).split(".", 1)[-1]
            say(f"  line {line}: {field}: {e.get('problem', '')}")
        raise typer.Exit(2) from None
    finally:
        db.dispose()
    out.print(f"{act_as}: {registered} consents registered from {file}", highlight=False, soft_wrap=True)


@app.command("list")
def list_consents(
    institution: Annotated[str | None, typer.Option("--institution", help="one institution's")] = None,
    uscc: Annotated[str | None, typer.Option("--uscc", help="one enterprise's")] = None,
    live: Annotated[
        bool | None, typer.Option("--live/--not-live", help="only those in force now (or only those not)")
    ] = None,
    after_id: Annotated[int | None, typer.Option("--after", help="the page after this consent id")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
    as_json: AsJson = False,
) -> None:
    """Consents, oldest first, a page at a time."""
    # here for start-up time (see the module docstring)
    from datazone.consent import service
    from datazone.consent.schemas import ConsentOut
    from datazone.principal import service as principal_service

    db = database()
    try:
        with db.unit_of_work() as s:
            institution_id = (
                principal_service.named_principal(s, name=institution).id if institution is not None else None
            )
            names = {p.id: p.name for p in principal_service.list_principals(s, kind="institution")}
            consents = service.list_consents(
                s,
                viewer=reader(),
                uscc=uscc,
                live=live,
                institution_id=institution_id,
                after_id=after_id,
                limit=limit,
            )
            rows = [ConsentOut.model_validate(c) for c in consents]
    except DomainError as exc:
        raise fail(exc) from None
    finally:
        db.dispose()
    if as_json:
        print(json.dumps([r.model_dump(mode="json") for r in rows], ensure_ascii=False, indent=2))
        return
    t = Table("consent", "institution", "uscc", "purpose", "products", "valid", "revoked", "evidence")
    for r in rows:
        t.add_row(
            str(r.id),
            names.get(r.institution_id, str(r.institution_id)),
            r.uscc,
            r.purpose,
            ", ".join(r.products) if r.products is not None else "any",
            f"{when(r.valid_from)[:10]} – {when(r.valid_to)[:10]}",
            when(r.revoked_at),
            r.evidence_ref,
        )
    out.print(t)


@app.command("revoke")
def revoke(
    consent_id: Annotated[int, typer.Argument(metavar="ID")], act_as: ActAs, reason: Reason
) -> None:
    """Revoke one of an institution's consents: calls about that enterprise are refused from now on."""
    # here for start-up time (see the module docstring)
    from datazone.consent import service
    from datazone.principal import service as principal_service

    db = database()
    try:
        with db.unit_of_work() as s:
            institution = principal_service.acting_principal(s, name=act_as)
            consent = service.revoke_consent(s, consent_id=consent_id, by=institution, reason=reason)
            shown = f"consent {consent.id} ({consent.uscc}, {consent.purpose}): revoked"
    except DomainError as exc:
        raise fail(exc) from None
    finally:
        db.dispose()
    out.print(shown, highlight=False)
