"""What every subcommand shares: the consoles, exit codes, the zone client from the root options.

Start-up time: a command module is loaded for its `--help` too, so what this module imports at
load stays light; the SDK (httpx, and through it the token machinery) is imported when a command
makes its zone client, for start-up time, not to dodge an import cycle.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timezone
from typing import TYPE_CHECKING, Any, NoReturn
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from datazone.client.cli import Options
from datazone.client.errors import ConfigError, InvalidUSCCs, ZoneError
from datazone.client.sheets import InputFileError

if TYPE_CHECKING:
    from datazone.client.sdk import ZoneClient

UTC = timezone.utc  # datetime.UTC is Python 3.11+
EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # as a shell reports a process ended by Ctrl-C
SHANGHAI = ZoneInfo("Asia/Shanghai")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(code: int, message: str) -> NoReturn:
    err.print(message, markup=False)
    raise typer.Exit(code)


@contextmanager
def exit_codes() -> Iterator[None]:
    try:
        yield
    except ZoneError as exc:
        fail(EXIT_REFUSED, f"refused: {exc}")
    except (ConfigError, InvalidUSCCs, InputFileError) as exc:
        fail(EXIT_BAD_INPUT, f"error: {exc}")


def zone_client(ctx: typer.Context) -> ZoneClient:
    from datazone.client.sdk import ZoneClient  # here for start-up time (see the module docstring)

    options: Options = ctx.obj or Options()
    return ZoneClient(profile=options.profile)


def print_json(value: Any) -> None:
    out.print_json(json.dumps(value, ensure_ascii=False, default=str))


def progress_bar(description: str = "{task.description}") -> Progress:
    """A progress bar on stderr (left on screen only on a terminal), so stdout stays the answer."""
    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=not err.is_terminal,
    )
