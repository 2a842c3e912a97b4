"""One reader of consent files for the CLI and the console: dates as people write them, every problem listed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from datazone.consent.service import read_consents_csv

HEADER = "uscc,purpose,products,valid_from,valid_to,evidence_ref,evidence_sha256\n"
FIRM = "91110108992150078M"


def test_a_date_alone_is_midnight_in_shanghai_and_products_split_on_semicolons() -> None:
    items, problems = read_consents_csv(
        "\ufeff" + HEADER + f"{FIRM},pre_loan,credit-basic;risk-insight,2027-01-01,2027-06-30T18:00:00+08:00,ref,{'a' * 64}\n"
    )
    assert problems == []
    (item,) = items
    assert item.valid_from == datetime(2027, 1, 1, tzinfo=timezone(timedelta(hours=8)))
    assert item.valid_from.utcoffset() == timedelta(hours=8)
    assert item.products == ["credit-basic", "risk-insight"]


def test_every_line_s_problems_are_listed_with_their_line_and_column() -> None:
    items, problems = read_consents_csv(
        HEADER
        + f"{FIRM},pre_loan,,2027-01-01,tomorrow,ref,{'a' * 64}\n"
        + f"{FIRM},pre_loan,,2027-01-01T00:00:00,2027-02-01,ref,{'a' * 64}\n"
    )
    assert items == []
    assert [(p.line, p.column) for p in problems] == [(2, "valid_to"), (3, "valid_from")]
    assert "'tomorrow' is not a time" in problems[0].problem
    assert "timezone" in problems[1].problem


def test_a_file_without_its_columns_or_lines_says_so() -> None:
    _, problems = read_consents_csv("uscc,purpose\n1,2\n")
    assert problems[0].code == "header" and "no column valid_from" in problems[0].problem
    _, problems = read_consents_csv(HEADER)
    assert problems[0].code == "empty"
