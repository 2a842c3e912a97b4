"""How a refusal reads, and that it never carries a credential."""

from __future__ import annotations

import httpx

from datazone.client import ZoneError, ZoneUnreachable


def test_problem_text_names_type_detail_and_check() -> None:
    resp = httpx.Response(
        403,
        headers={"content-type": "application/problem+json"},
        json={
            "type": "https://datazone.example/problems/consent-missing",
            "title": "No live consent",
            "status": 403,
            "detail": "register the enterprise's consent for pre_loan first",
            "check": "consent",
        },
    )
    error = ZoneError.from_response(resp)
    assert (error.status, error.type, error.check) == (403, "consent-missing", "consent")
    assert str(error) == (
        "403 consent-missing (No live consent): register the enterprise's consent for pre_loan first [check: consent]"
    )


def test_oauth_error_text() -> None:
    resp = httpx.Response(401, json={"error": "invalid_client", "error_description": "unknown client"})
    error = ZoneError.from_response(resp)
    assert error.type == "invalid_client"
    assert str(error) == "401 invalid_client: unknown client"


def test_listed_errors_are_shown() -> None:
    problem = {
        "type": "https://datazone.example/problems/invalid-spec",
        "title": "The spec is not valid",
        "detail": "2 USCCs are invalid",
        "errors": [
            {"location": "usccs[0]", "problem": "bad check"},
            {"location": "usccs[3]", "problem": "too short"},
        ],
    }
    text = str(ZoneError(422, problem))
    assert "usccs[0]: bad check; usccs[3]: too short" in text


def test_non_json_answer_from_a_proxy() -> None:
    error = ZoneError.from_response(httpx.Response(502, text="<html>Bad Gateway</html>"))
    assert error.status == 502 and error.type == "about:blank"
    assert "<html>Bad Gateway</html>" in str(error)


def test_credentials_are_scrubbed_everywhere() -> None:
    token, secret = "eyJhbGciOiJFUzI1NiJ9.payload.sig", "client-secret-123"
    problem = {
        "type": "x",
        "detail": f"token {token} was sent with {secret}",
        "errors": [{"location": "header", "problem": token}],
        "nested": {"echo": secret},
    }
    error = ZoneError(401, problem, redact=[token, secret, ""])
    for text in (str(error), repr(error), repr(error.problem)):
        assert token not in text and secret not in text
    assert "[redacted]" in str(error)


def test_unreachable_has_no_status() -> None:
    error = ZoneUnreachable("POST http://127.0.0.1:9/x: ConnectError: refused", attempts=3)
    assert error.status is None
    assert str(error).startswith("unreachable (Gateway unreachable): POST http://127.0.0.1:9/x")


def test_redaction_does_not_rewrite_the_message() -> None:
    # a user who typed the wrong secret "wrong" must read the zone's message, not "[redacted]"
    problem = {"error": "invalid_client", "error_description": "the client secret is wrong"}
    error = ZoneError(401, problem, redact=["wrong", "is"])
    assert "the client secret is wrong" in str(error) and "[redacted]" not in str(error)
    # a credential of the zone's length is still scrubbed wherever it stands
    secret = "s3cr3t-Value_0123456789"
    echoed = ZoneError(401, {"detail": f"got ?secret={secret}&x"}, redact=[secret])
    assert echoed.detail == "got ?secret=[redacted]&x"
