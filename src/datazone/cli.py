"""The `datazone` command's own sub-commands (each domain keeps its own in its `cli.py`);
`datazone.command` is the root that loads them when they are run.

Start-up time: Typer needs the command functions and their parameter annotations, nothing
more, so this module imports only Typer, Rich and light modules at load. The settings, the
database, SQLAlchemy, the services and the observability machinery are imported in the
commands that use them, for start-up time (`datazone serve --help` stays well under half a
second; tests/test_command.py checks it), not to dodge an import cycle.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from datazone.command import main as command_main
from datazone.errors import DomainError, InvalidSpec

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from datazone.config import Settings
    from datazone.db import Database
    from datazone.principal.models import Principal

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="datazone: the gateway of a public-data zone"
)
dataset_app = typer.Typer(no_args_is_help=True, help="dataset specs")
department_app = typer.Typer(no_args_is_help=True, help="departments and other suppliers")
ingest_app = typer.Typer(no_args_is_help=True, help="ingest runs")
principal_app = typer.Typer(
    no_args_is_help=True, help="operators, departments and institutions, and their keys"
)
app.add_typer(dataset_app, name="dataset")
app.add_typer(department_app, name="department")
app.add_typer(ingest_app, name="ingest")
app.add_typer(principal_app, name="principal")


out = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    from datazone.config import get_settings  # here for start-up time

    return get_settings()


def _db() -> Database:
    from datazone.db import Database  # here for start-up time

    return Database.from_settings(_settings())


def _shell_actor() -> str:
    from datazone.principal.service import shell_actor  # here for start-up time

    return shell_actor()


def _configure_logging(settings: Settings, default_format: str) -> None:
    from datazone.observability.logs import configure_logging  # here for start-up time

    configure_logging(settings.log_format or default_format, settings.log_level)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    return typer.Exit(code)


def _yaml_documents(path: Path) -> list[Any]:
    if not path.is_file():
        raise _fail(f"{path}: no such file")
    try:
        return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except yaml.YAMLError as exc:
        raise _fail(f"{path}: not valid YAML: {exc}") from None


@department_app.command("apply")
def department_apply(files: list[Path]) -> None:
    """Register or update departments from YAML (a list, or one mapping per document)."""
    # here for start-up time (see the module docstring)
    from pydantic import ValidationError

    from datazone.supplier import service
    from datazone.supplier.schemas import SupplierSpec

    specs: list[SupplierSpec] = []
    for path in files:
        for doc in _yaml_documents(path):
            for item in doc if isinstance(doc, list) else [doc]:
                try:
                    specs.append(SupplierSpec.model_validate(item))
                except ValidationError as exc:
                    raise _fail(f"{path}: {exc}") from None
    db = _db()
    with db.unit_of_work() as s:
        for spec in specs:
            _, created = service.apply_supplier(s, spec=spec)
            out.print(f"department {spec.id}: {'created' if created else 'updated'}")


@dataset_app.command("apply")
def dataset_apply(files: list[Path]) -> None:
    """Create or update datasets from spec files: all of them or none."""
    # here for start-up time (see the module docstring)
    from datazone.dataset import service

    specs = []
    for path in files:
        for i, doc in enumerate(_yaml_documents(path)):
            try:
                specs.append(service.parse_spec(doc, origin=f"{path} (document {i + 1})"))
            except InvalidSpec as exc:
                raise _fail(exc.detail) from None
    db = _db()
    try:
        with db.unit_of_work() as s:
            results = [service.apply_dataset(s, spec=spec, by_name=_shell_actor()) for spec in specs]
    except DomainError as exc:
        raise _fail(exc.detail) from None
    for ds, what in results:
        out.print(f"dataset {ds.id}: {what}")


@dataset_app.command("list")
def dataset_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    # here for start-up time (see the module docstring)
    from datazone.dataset import service

    db = _db()
    with db.unit_of_work() as s:
        rows = [
            {
                "id": d.id,
                "department": d.supplier_id,
                "version": d.current_version,
                "rows": d.current_rows,
                "schedule": service.spec_of(d).schedule,
            }
            for d in service.list_datasets(s)
        ]
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    t = Table("dataset", "department", "version", "rows", "schedule")
    for r in rows:
        t.add_row(
            str(r["id"]),
            str(r["department"]),
            str(r["version"] or "-"),
            f"{r['rows']:,}",
            str(r["schedule"] or "-"),
        )
    out.print(t)


def _report(db: Database, run_id: int) -> dict[str, Any]:
    # here for start-up time (see the module docstring)
    from datazone.ingest import service
    from datazone.ingest.schemas import IngestRunOut, RejectOut

    with db.unit_of_work() as s:
        run = IngestRunOut.model_validate(service.get_run(s, run_id=run_id)).model_dump(mode="json")
        rejects = [
            RejectOut.model_validate(r).model_dump(mode="json")
            for r in service.list_rejects(s, run_id=run_id)
        ]
    return {"run": run, "rejects": rejects}


def _print_report(report: dict[str, Any], *, max_rejects: int = 50) -> None:
    run = report["run"]
    colour = {"succeeded": "green", "failed": "red", "aborted": "yellow"}.get(run["status"], "white")
    out.print(f"run {run['id']} of {run['dataset_id']}: [{colour}]{run['status']}[/{colour}]")
    for k in (
        "source",
        "encoding",
        "version",
        "rows_read",
        "rows_loaded",
        "rows_unchanged",
        "rows_deleted",
        "rows_rejected",
        "error",
        "note",
    ):
        if run.get(k) not in (None, ""):
            out.print(f"  {k:15} {run[k]}", highlight=False)
    rejects = report["rejects"]
    if rejects:
        t = Table("line", "column", "reason", "value", title=f"rejects ({len(rejects)} reported)")
        for r in rejects[:max_rejects]:
            t.add_row(str(r["line"] or ""), r["column"] or "", r["reason"], r["value"] or "")
        out.print(t)
        if len(rejects) > max_rejects:
            out.print(f"  ... {len(rejects) - max_rejects} more: `datazone ingest report {run['id']} --csv`")


@ingest_app.command("run")
def ingest_run(
    dataset: str,
    file: Annotated[
        Path | None, typer.Option("--file", help="load this file instead of the dataset's source")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Run the dataset's ingest now, in this process, and print the run's report."""
    # here for start-up time (see the module docstring)
    from datazone.ingest import service
    from datazone.ingest.pipeline import execute_run

    settings = _settings()
    db = _db()
    try:
        with db.unit_of_work() as s:
            run = service.request_run(
                s, dataset_id=dataset, trigger="cli", requested_by="cli",
                file=str(file.resolve()) if file else None,
            )  # fmt: skip
            run_id = run.id
    except DomainError as exc:
        raise _fail(exc.detail) from None
    done = execute_run(db, run_id=run_id, settings=settings)
    report = _report(db, done.id)
    if as_json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        _print_report(report)
    if done.status != "succeeded":
        raise typer.Exit(1)


@ingest_app.command("report")
def ingest_report(
    run_id: int,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="the whole reject report as CSV")] = False,
) -> None:
    # here for start-up time (see the module docstring)
    from datazone.ingest import service

    db = _db()
    try:
        if as_csv:
            with db.unit_of_work() as s:
                for chunk in service.reject_report_csv(s, run_id=run_id):
                    sys.stdout.write(chunk)
            return
        report = _report(db, run_id)
    except DomainError as exc:
        raise _fail(exc.detail) from None
    if as_json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        _print_report(report)


@ingest_app.command("runs")
def ingest_runs(dataset: Annotated[str | None, typer.Option("--dataset")] = None, limit: int = 20) -> None:
    # here for start-up time (see the module docstring)
    from datazone.ingest import service

    db = _db()
    with db.unit_of_work() as s:
        runs = service.list_runs(s, dataset_id=dataset, limit=limit)
        t = Table(
            "run", "dataset", "status", "trigger", "created", "version", "read", "loaded", "rejected", "error"
        )
        for r in runs:
            t.add_row(
                str(r.id),
                r.dataset_id,
                r.status,
                r.trigger,
                f"{r.created_at:%Y-%m-%d %H:%M:%S}",
                str(r.version or "-"),
                str(r.rows_read),
                str(r.rows_loaded),
                str(r.rows_rejected),
                (r.error or "")[:60],
            )
    out.print(t)


@ingest_app.command("reap")
def ingest_reap() -> None:
    """Abort runs that made no progress for DATAZONE_INGEST_STALL_SECONDS."""
    # here for start-up time (see the module docstring)
    from datazone.ingest import service

    db = _db()
    with db.unit_of_work() as s:
        ids = service.reap_stalled_runs(s, stall_seconds=_settings().ingest_stall_seconds)
    out.print(f"aborted {len(ids)} stalled run(s) {ids if ids else ''}")


@principal_app.command("create")
def principal_create(
    name: str,
    kind: Annotated[str, typer.Option("--kind", help="operator, department or institution")] = "operator",
    role: Annotated[
        list[str] | None, typer.Option("--role", help="an operator's roles: curator, reviewer, auditor")
    ] = None,
    department: Annotated[
        str | None, typer.Option("--department", help="a department principal's supplier id")
    ] = None,
) -> None:
    """Create a principal and print its key once (only a hash of it is stored)."""
    # here for start-up time (see the module docstring)
    from datazone.principal import service

    db = _db()
    try:
        with db.unit_of_work() as s:
            p = service.create_principal(s, kind=kind, name=name, roles=role or [], supplier_id=department)
            issued = service.issue_key(s, principal=p)
            _record_key_change(s, p, "principal.create", issued.key_id)
    except DomainError as exc:
        raise _fail(exc.detail) from None
    out.print(f"{kind} {name}: key {issued.token}", highlight=False)
    err.print("store it now: it is not shown again")


@principal_app.command("list")
def principal_list(
    kind: Annotated[str | None, typer.Option("--kind")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Principals with their roles, department and key ids (never the keys)."""
    # here for start-up time (see the module docstring)
    from datazone.principal import service

    rows: list[dict[str, Any]] = []
    with _db().unit_of_work() as s:
        for p in service.list_principals(s, kind=kind):
            keys = service.list_keys(s, principal=p)
            rows.append(
                {
                    "id": p.id,
                    "kind": p.kind,
                    "name": p.name,
                    "roles": p.roles,
                    "department": p.supplier_id,
                    "live_keys": [k.id for k in keys if k.revoked_at is None],
                    "revoked_keys": [k.id for k in keys if k.revoked_at is not None],
                }
            )
    if as_json:
        out.print_json(json.dumps(rows, ensure_ascii=False))
        return
    table = Table("id", "kind", "name", "roles", "department", "live keys", "revoked keys")
    for r in rows:
        table.add_row(
            str(r["id"]), r["kind"], r["name"], ",".join(r["roles"]), r["department"] or "",
            " ".join(r["live_keys"]), " ".join(r["revoked_keys"]),
        )
    out.print(table)


@principal_app.command("issue-key")
def principal_issue_key(name: str) -> None:
    """Issue another key for a principal (to rotate: issue, deploy, then revoke the old one)."""
    # here for start-up time (see the module docstring)
    from datazone.principal import service

    with _db().unit_of_work() as s:
        p = service.find_principal(s, name=name)
        if p is None:
            raise _fail(f"no principal named {name!r}; `datazone principal list` shows them")
        issued = service.issue_key(s, principal=p)
        _record_key_change(s, p, "principal.key_issue", issued.key_id)
    out.print(f"{p.kind} {name}: key {issued.token}", highlight=False)
    err.print("store it now: it is not shown again")


@principal_app.command("revoke-key")
def principal_revoke_key(key_id: str) -> None:
    """Revoke a key by its id (the part after `dzk_`); requests with it are refused from the next one."""
    # here for start-up time (see the module docstring)
    from datazone.principal import service

    try:
        with _db().unit_of_work() as s:
            key = service.revoke_key(s, key_id=key_id)
            p = service.get_principal(s, principal_id=key.principal_id)
            _record_key_change(s, p, "principal.key_revoke", key_id)
    except DomainError as exc:
        raise _fail(exc.detail) from None
    out.print(f"key {key_id} of {p.kind} {p.name}: revoked")


@principal_app.command("suspend")
def principal_suspend(name: str, reason: Annotated[str, typer.Option("--reason")]) -> None:
    """Suspend a principal: its keys, OAuth clients and tokens are refused from the next request."""
    # here for start-up time (see the module docstring)
    from datazone.principal import service

    try:
        with _db().unit_of_work() as s:
            p = service.suspend_principal(s, name=name, reason=reason)
            _record_key_change(s, p, "principal.suspend", "")
    except DomainError as exc:
        raise _fail(exc.detail) from None
    out.print(f"{p.kind} {name}: suspended")


@principal_app.command("reinstate")
def principal_reinstate(name: str) -> None:
    """Lift a suspension."""
    # here for start-up time (see the module docstring)
    from datazone.principal import service

    try:
        with _db().unit_of_work() as s:
            p = service.reinstate_principal(s, name=name)
            _record_key_change(s, p, "principal.reinstate", "")
    except DomainError as exc:
        raise _fail(exc.detail) from None
    out.print(f"{p.kind} {name}: reinstated")


def _record_key_change(s: Session, principal: Principal, action: str, key_id: str) -> None:
    # here for start-up time (see the module docstring)
    from datazone.audit import service as audit_service

    audit_service.record_principal_change(
        s, principal=principal, action=action, by=None, by_name=_shell_actor(), key_id=key_id
    )


@app.command()
def migrate() -> None:
    """Apply database migrations."""
    _db()
    out.print("database is at the latest migration")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on")] = None,
) -> None:
    """Serve the gateway's HTTP API."""
    # here for start-up time (see the module docstring)
    import uvicorn

    from datazone.app import create_app

    # the address we listen on is also the default OAuth issuer: keep the settings in step
    settings = _settings().model_copy(
        update={k: v for k, v in {"port": port, "host": host}.items() if v is not None}
    )
    _configure_logging(settings, "json")
    # log_config=None: uvicorn's lines go through our handler; the request line is ours (it
    # carries the request id), so uvicorn's access log is off
    uvicorn.run(
        create_app(settings=settings), host=settings.host, port=settings.port, log_config=None, access_log=False
    )


def _serve_process_metrics(settings: Settings, db: Database) -> None:
    """The worker's and the scheduler's own /metrics, on DATAZONE_METRICS_PORT when it is set."""
    if settings.metrics_port is None:
        return
    # here for start-up time: the Prometheus client and a side engine are not small
    from datazone.observability import metrics
    from datazone.observability.probes import side_engine

    metrics.watch_pool("process", db.engine)
    metrics.watch_zone_state(side_engine(db.url, timeout_seconds=settings.readyz_timeout_seconds))
    metrics.serve_on_port(settings.metrics_port, settings.host)


@app.command()
def worker(
    interval: Annotated[float, typer.Option("--interval", help="seconds between passes")] = 30.0,
    once: Annotated[bool, typer.Option("--once", help="one pass, then exit")] = False,
) -> None:
    """Run the zone's heavy work: PSI, anonymous-query tables, scoring and joint jobs (as many as you like)."""
    # here for start-up time (see the module docstring)
    from datazone import worker as zone_worker

    settings = _settings()
    _configure_logging(settings, "json")
    db = _db()
    _serve_process_metrics(settings, db)
    if once:
        done = zone_worker.run_once(db, settings)
        raise typer.Exit(1 if done.failed else 0)
    zone_worker.run_forever(db, settings, interval_seconds=interval)


@app.command()
def scheduler() -> None:
    """Run ingestion schedules (one such process per zone; a second one is harmless)."""
    # here for start-up time (see the module docstring)
    from datazone.audit.sealer import AuditSealer
    from datazone.ingest.scheduler import IngestScheduler

    settings = _settings()
    _configure_logging(settings, "json")
    db = _db()
    _serve_process_metrics(settings, db)
    sealer = AuditSealer(
        db, interval_seconds=settings.audit_seal_seconds, max_entries=settings.audit_block_max_entries
    )
    sealer.start()
    try:
        IngestScheduler(db, settings).start()
    finally:
        sealer.stop()


@app.command()
def demo(
    entities: Annotated[
        int,
        typer.Option(
            min=1_000,
            help="enterprises in the synthetic zone (at least 1,000: the anonymous-query products' k)",
        ),
    ] = 100_000,
    port: Annotated[int | None, typer.Option(help="port for the gateway")] = None,
    host: Annotated[str | None, typer.Option(help="address for the gateway")] = None,
    serve_after: Annotated[
        bool, typer.Option("--serve/--no-serve", help="serve the gateway afterwards")
    ] = True,
) -> None:
    """Generate (or reuse) a synthetic zone, load it through the pipeline, and serve the gateway."""
    settings = _settings().model_copy(
        update={k: v for k, v in {"port": port, "host": host}.items() if v is not None}
    )
    _configure_logging(settings, "text")
    # SIGTERM ends the demo as Ctrl-C does: through the finally below, which stops the embedded
    # PostgreSQL this demo started (uvicorn re-raises the signal once it has shut down)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    from datazone.db import Database, stop_embedded  # here for start-up time

    db = Database.from_settings(settings)
    try:
        _demo(db, settings, entities=entities, serve_after=serve_after)
    finally:
        db.dispose()
        if settings.database_url is None:
            stop_embedded(settings.home)
            out.print(f"stopped the embedded PostgreSQL in {settings.home / 'pgdata'}", highlight=False)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _demo(db: Database, settings: Settings, *, entities: int, serve_after: bool) -> None:
    # here for start-up time (see the module docstring)
    import uvicorn

    from datazone.app import create_app
    from datazone.demo.setup import demo_file, prepare_demo

    zone = prepare_demo(db, settings, entities=entities, say=lambda m: out.print(m, highlight=False))
    if zone.reused:
        out.print(f"reusing the demo zone of {entities:,} enterprises in {settings.home}")
    for r in zone.runs:
        out.print(
            f"  {r.dataset_id:24} version {r.version}  {r.rows_loaded:>10,} rows loaded", highlight=False
        )
    out.print(
        f"demo details in {demo_file(settings)}: url, client_id and client_secret (the demo bank's OAuth"
        " client), consented_usccs (enterprises whose consent it holds), operator_token",
        highlight=False,
    )
    people = zone.info.get("console") or {}
    if people:
        # the console first: people sign in with a password and a code from an authenticator app
        out.print(f"the console: {zone.info['url']}/console (sign in as one of these; passwords and TOTP"
                  f" secrets in {demo_file(settings)} under \"console\")", highlight=False, markup=False)
        for login, person in people.items():
            out.print(f"  {login:16} acts for {person.get('acts_for', '?')}", highlight=False, markup=False)
    sample = zone.info["consented_usccs"][0] if zone.info.get("consented_usccs") else None
    if sample:
        f = demo_file(settings)
        url = zone.info["url"]
        out.print(
            "try:\n"
            f"  TOKEN=$(curl -s -u \"$(jq -r .client_id {f}):$(jq -r .client_secret {f})\""
            f" -d grant_type=client_credentials {url}/oauth/token | jq -r .access_token)\n"
            f"  curl -H \"Authorization: Bearer $TOKEN\" '{url}/v1/products/credit-basic/enterprises/{sample}?purpose=pre_loan'",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    if serve_after:
        out.print(f"serving the gateway on {zone.info['url']}", highlight=False)
        uvicorn.run(
            create_app(db=db, settings=settings), host=settings.host, port=settings.port, log_config=None
        )


def main() -> None:
    """The entry point of installs made before `datazone.command` became the root (their
    `datazone` script still names `datazone.cli:main`); reinstalling points it at the root."""
    command_main()
