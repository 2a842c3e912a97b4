"""`datazone audit ...`: verify the chain, seal pending entries now, export the published roots.

The settings, the database and the audit service are imported in the commands that use them, for
start-up time (`datazone audit --help` loads none of them), not to dodge an import cycle.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

app = typer.Typer(no_args_is_help=True, help="the audit trail: verify, seal, export roots")


def _fail(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def _read_roots(path: Path) -> list[Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        _fail(f"{path}: no such file")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"{path}: cannot read it: {exc}")
    except json.JSONDecodeError as exc:
        _fail(f"{path}: not JSON ({exc}); export roots with `datazone audit roots --output FILE`")
    if isinstance(raw, dict) and isinstance(raw.get("blocks"), list):
        raw = raw["blocks"]
    if not isinstance(raw, list):
        _fail(f"{path}: expected a JSON list of blocks as `datazone audit roots` writes it")
    return raw


@app.command("verify")
def verify(
    roots: Annotated[
        Path | None,
        typer.Option("--roots", help="roots exported earlier: the chain must still contain these blocks"),
    ] = None,
) -> None:
    """Check the hash chain; exit 1 naming the first bad block, 0 when intact."""
    # here for start-up time (see the module docstring)
    from datazone.audit import service
    from datazone.config import get_settings
    from datazone.db import Database
    from datazone.errors import DomainError

    published = _read_roots(roots) if roots is not None else None
    try:
        db = Database.from_settings(get_settings())
        with db.unit_of_work() as session:
            report = service.verify_chain(session, roots=published)
    except DomainError as exc:
        _fail(exc.detail)
    if not report.ok:
        print(
            f"audit chain BROKEN at block {report.first_bad_block}: {report.problem} "
            f"({report.blocks_checked} blocks before it are intact)"
        )
        raise typer.Exit(1)
    against = f", {report.roots_checked} match the published roots" if roots is not None else ""
    print(
        f"audit chain intact: {report.blocks_checked} blocks, {report.entries_checked} entries sealed"
        f"{against}; {report.unsealed_entries} entries waiting to be sealed"
    )


@app.command("seal")
def seal() -> None:
    """Seal every pending entry now (the gateway's background sealer does this every few seconds)."""
    # here for start-up time (see the module docstring)
    from datazone.audit import service
    from datazone.config import get_settings
    from datazone.db import Database

    settings = get_settings()
    db = Database.from_settings(settings)
    heights: list[int] = []
    entries = 0
    while True:
        with db.unit_of_work() as session:
            block = service.seal_pending(session, max_entries=settings.audit_block_max_entries)
            if block is None:
                left = service.pending_count(session)
                break
            heights.append(block.height)
            entries += block.entry_count
    if heights:
        span = str(heights[0]) if len(heights) == 1 else f"{heights[0]}..{heights[-1]}"
        print(f"sealed {entries} entries into {len(heights)} block(s): height {span}")
    else:
        print("nothing sealed")
    if left:
        print(f"{left} entries still pending: another sealer holds the lock and is sealing them")


@app.command("roots")
def roots(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write here instead of stdout")
    ] = None,
) -> None:
    """Export the published roots (every block's header) as JSON, for `verify --roots` later."""
    # here for start-up time (see the module docstring)
    from datazone.audit import service
    from datazone.config import get_settings
    from datazone.db import Database

    db = Database.from_settings(get_settings())
    with db.unit_of_work() as session:
        blocks = service.list_blocks(session)
    text = json.dumps(blocks, indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        _fail(f"{output}: cannot write it: {exc}")
    print(f"{len(blocks)} block roots written to {output}", file=sys.stderr)
