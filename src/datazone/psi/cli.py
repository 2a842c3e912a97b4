"""`datazone psi ...`: the operator's PSI commands: key rotation, precomputation, what is built.

The settings, the database, SQLAlchemy and the PSI service and worker are imported in the
commands that use them, for start-up time (`datazone psi --help` loads none of them), not to
dodge an import cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from datazone.errors import DomainError

if TYPE_CHECKING:
    from datazone.config import Settings
    from datazone.db import Database

app = typer.Typer(no_args_is_help=True, help="private set intersection: key epochs and precomputed slices")
out = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    from datazone.config import get_settings  # here for start-up time

    return get_settings()


def _db() -> Database:
    from datazone.db import Database  # here for start-up time

    return Database.from_settings(_settings())


@app.command("rotate-key")
def rotate_key(reason: Annotated[str, typer.Option("--reason", help="why (recorded in the audit trail)")]) -> None:
    """Start a new zone key epoch; then run `datazone psi build` (or let the worker) to precompute under it."""
    # here for start-up time (see the module docstring)
    from datazone.principal import service as principal_service
    from datazone.psi import service

    settings = _settings()
    db = _db()
    try:
        with db.unit_of_work() as s:
            epoch = service.rotate_key(
                s, settings=settings, by=None, by_name=principal_service.shell_actor(), reason=reason
            )
            epoch_id = epoch.id
    except DomainError as e:
        err.print(f"[red]error:[/red] {e.detail}")
        raise typer.Exit(2) from None
    out.print(f"key epoch {epoch_id} is live")


@app.command("build")
def build() -> None:
    """Precompute what the live epoch and current slices lack (what one worker pass does), then exit."""
    from datazone.psi import worker  # here for start-up time

    settings = _settings()
    done = worker.run_once(_db(), settings)
    for name in done.built:
        out.print(f"built {name}")
    for name in done.failed:
        err.print(f"[red]failed:[/red] {name}")
    if not done.built and not done.failed:
        out.print("nothing to build: every PSI product is ready under the live epoch")
    raise typer.Exit(1 if done.failed else 0)


@app.command("artifacts")
def artifacts() -> None:
    """What is precomputed, per product, epoch and slice version."""
    # here for start-up time (see the module docstring)
    import sqlalchemy as sa

    from datazone.psi.models import PsiArtifact

    db = _db()
    t = Table("product", "kind", "epoch", "slice", "clearance", "state", "items", "bytes", "seconds")
    with db.unit_of_work() as s:
        for a in s.scalars(sa.select(PsiArtifact).order_by(PsiArtifact.id)):
            t.add_row(
                a.product_id, a.kind, str(a.epoch), a.slice_key, str(a.clearance), a.state,
                str(a.items or ""), str(a.size_bytes or ""), str(a.seconds or ""),
            )
    out.print(t)
