"""A change the gateway answers 2xx for is committed before the answer leaves.

Otherwise a client's next request (to any replica) could miss its own change, and a
failure at commit would follow a 2xx the client already believed.
"""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datazone.app import create_app
from datazone.config import Settings
from datazone.db import Database
from datazone.product.models import DemandRequest
from tests.factories import bearer, principal_key


class OrderRecorder:
    """Wraps the app and notes, in order, each commit and the start of each response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.events: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def noted_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.events.append(f"response {message['status']}")
            await send(message)

        await self.app(scope, receive, noted_send)


def test_a_write_is_committed_before_its_response_starts(db: Database, settings: Settings) -> None:
    key = principal_key(db, "institution")
    app = create_app(db, settings)
    recorder = OrderRecorder(app)

    wrote_demand: set[int] = set()

    def note_flush(session: Session, _context: object) -> None:
        if any(isinstance(o, DemandRequest) for o in session.new):
            wrote_demand.add(id(session))

    def note_commit(session: Session) -> None:
        # only the request's own session: the audit sealer commits on its own thread too
        if id(session) in wrote_demand:
            recorder.events.append("commit")

    event.listen(Session, "after_flush", note_flush)
    event.listen(Session, "after_commit", note_commit)
    try:
        with TestClient(recorder) as http:  # type: ignore[arg-type]
            recorder.events.clear()
            filed = http.post(
                "/v1/demands",
                json={"title": "utility arrears for rural co-operatives"},
                headers=bearer(key),
            )
            assert filed.status_code == 201, filed.text
    finally:
        event.remove(Session, "after_flush", note_flush)
        event.remove(Session, "after_commit", note_commit)
    assert recorder.events == ["commit", "response 201"]
