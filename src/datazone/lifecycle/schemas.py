"""Requests and answers every lifecycle move shares: the reason, and a recorded transition."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from datazone.limits import RequestBody

Reason = Annotated[str, Field(min_length=1, max_length=2000, description="why: recorded with the transition")]


class TransitionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    subject_type: str
    subject_id: str
    from_state: str | None
    to_state: str
    by_name: str
    reason: str
    at: datetime


class ReasonIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    reason: Reason
