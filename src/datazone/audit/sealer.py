"""The background sealer: closes a block of pending audit entries every few seconds.

Runs in a daemon thread of the gateway (and of `datazone scheduler`); any number of
replicas may run one, since `seal_pending` lets one sealer at a time work and the
others skip the tick. A failed tick is logged and retried at the next one.
"""

from __future__ import annotations

import logging
import threading

from datazone.audit import service
from datazone.db import Database

log = logging.getLogger(__name__)


class AuditSealer:
    def __init__(self, db: Database, *, interval_seconds: float = 2.0, max_entries: int = 5000) -> None:
        if interval_seconds < 0:
            raise ValueError("interval_seconds must be positive, or 0 to leave sealing to another process")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.db = db
        self.interval_seconds = interval_seconds
        self.max_entries = max_entries
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> int:
        """Seal everything pending now, one block per transaction; the number of blocks sealed."""
        sealed = 0
        while not self._stop.is_set():
            with self.db.unit_of_work() as session:
                block = service.seal_pending(session, max_entries=self.max_entries)
                if block is None:
                    return sealed
                height, count = block.height, block.entry_count
            sealed += 1
            log.info("sealed audit block %d with %d entries", height, count)
            if count < self.max_entries:
                return sealed  # the backlog is drained
        return sealed

    def _run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception as exc:
                # the message only: a traceback could carry statement parameters into the log
                log.warning(
                    "audit sealing failed, retrying in %.1fs: %s: %s",
                    self.interval_seconds,
                    type(exc).__name__,
                    str(exc).splitlines()[0] if str(exc) else "",
                )
            if self._stop.wait(self.interval_seconds):
                return

    def start(self) -> None:
        """Start sealing in the background; with interval 0 sealing is left to another process."""
        if self.interval_seconds == 0:
            log.info("audit sealer disabled here (interval 0): another process seals")
            return
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="audit-sealer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
