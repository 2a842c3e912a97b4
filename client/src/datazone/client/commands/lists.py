"""The bank's own lists of enterprises, read and checked before a PSI or scoring job sends anything."""

from __future__ import annotations

from pathlib import Path

from datazone.client.commands.common import EXIT_BAD_INPUT, err, fail
from datazone.client.psi import InstitutionList, InvalidListedUSCCs, read_institution_list
from datazone.client.sheets import InputFileError


def institution_list(input_file: Path, column: str | None, *, once: str) -> InstitutionList:
    """A CSV/XLSX list of USCCs, every code checked here first: invalid lines exit 2 (nothing is
    sent); repeated codes are noted on stderr (`once`: what becomes of them)."""
    try:
        listed = read_institution_list(input_file, column)
    except InvalidListedUSCCs as exc:
        lines = "\n".join(f"  line {line}: {why}" for line, why in exc.problems[:50])
        more = f"\n  ... and {len(exc.problems) - 50} more" if len(exc.problems) > 50 else ""
        fail(
            EXIT_BAD_INPUT,
            f"error: {len(exc.problems)} USCCs in {input_file} are invalid; nothing was sent:\n{lines}{more}",
        )
    except InputFileError as exc:
        fail(EXIT_BAD_INPUT, f"error: {exc}")
    if listed.duplicates:
        shown = ", ".join(f"line {d.line} repeats line {d.first_line}" for d in listed.duplicates[:10])
        more = f", and {len(listed.duplicates) - 10} more" if len(listed.duplicates) > 10 else ""
        err.print(f"note: {len(listed.duplicates)} duplicate USCCs {once} ({shown}{more})", markup=False)
    return listed
