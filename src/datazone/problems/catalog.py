"""The problem types the gateway can answer, generated from the code: every DomainError subclass
(its class attributes and docstring) and the HTTP layer's own types (errors.HANDLER_PROBLEMS),
so a new error class has its page without anyone editing a list.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from datazone.errors import HANDLER_PROBLEMS, DomainError

# what to do, by status, for a class whose docstring does not say
REMEDY_BY_STATUS: dict[int, str] = {
    400: "Read the detail: it says what in the request could not be processed; fix it and send it again.",
    401: "Send valid credentials: an access token from POST /oauth/token for product calls, or your "
    "datazone key for the control plane.",
    402: "Wait for the next billing month or ask the operator to raise the plan's spend cap.",
    403: "The detail names the gate that refused (`check`): ask for the scope, contract, grant, consent or "
    "role it names; retrying as is will not help.",
    404: "Check the identifier in the request; you may only see what is yours.",
    405: "Use one of the methods in the `Allow` header.",
    409: "Read the current state of the resource (the detail names it) and act on that state.",
    410: "What the request names is gone for good; start anew (a new session, another product).",
    413: "Send a smaller body.",
    422: "Fix every problem listed in `errors` and send the request again; nothing was written.",
    429: "Wait the seconds `Retry-After` says, then try again; or ask the operator for a larger plan.",
    500: "Try again later; give the operator the `incident` id if it persists.",
    503: "Wait the seconds `Retry-After` says, then try again.",
}


@dataclass(frozen=True)
class ProblemPage:
    type: str
    title: str
    status: int
    meaning: str
    remedy: str


def _subclasses(cls: type[DomainError]) -> list[type[DomainError]]:
    found: list[type[DomainError]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


def _meaning(cls: type[DomainError]) -> str:
    own = cls.__dict__.get("__doc__")
    return inspect.cleandoc(own) if own else f"{cls.title}."


def problem_types() -> dict[str, ProblemPage]:
    """Every problem type, by name. Error classes come from every module imported so far (the app
    imports every domain); a subtype a class declares in `subtypes` (name: title) has its page too."""
    pages: dict[str, ProblemPage] = {}
    for handler_type in HANDLER_PROBLEMS:
        pages[handler_type.type] = ProblemPage(
            handler_type.type, handler_type.title, handler_type.status, handler_type.meaning, handler_type.remedy
        )
    classes: list[type[DomainError]] = [DomainError, *_subclasses(DomainError)]
    for cls in classes:
        remedy = REMEDY_BY_STATUS.get(cls.status, REMEDY_BY_STATUS[400])
        pages.setdefault(cls.type, ProblemPage(cls.type, cls.title, cls.status, _meaning(cls), remedy))
        for name, title in getattr(cls, "subtypes", {}).items():
            pages.setdefault(name, ProblemPage(name, title, cls.status, f"{title}. {_meaning(cls)}", remedy))
    return dict(sorted(pages.items()))
