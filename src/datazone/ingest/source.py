"""Fetching a run's source: a file from a drop directory, a given path, or an HTTP(S) pull."""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from datazone.dataset.schemas import DatasetSpec, DirectorySource, Mode, UrlSource


class SourceUnavailable(Exception):
    """No file could be had for the run: nothing delivered, a URL that failed or timed out."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class FetchedSource:
    path: Path
    display: str  # what the report shows: a path, or a URL without credentials or query
    sha256: str
    archivable: bool = False  # a drop-directory file, moved aside once the run ends
    superseded: list[Path] = field(default_factory=list)
    cleanup: Path | None = None  # a temporary download to delete


def public_url(url: str) -> str:
    """A URL fit for reports and logs: no user:password, no query string (tokens live there)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(
    spec: DatasetSpec,
    *,
    drop_dir: Path,
    work_dir: Path,
    override: str | None,
    on_progress: Callable[[], None],
) -> FetchedSource:
    if override is not None:
        path = Path(override)
        if not path.is_file():
            raise SourceUnavailable("no_source", f"file {override} does not exist")
        return FetchedSource(path=path, display=str(path), sha256=file_sha256(path))
    if isinstance(spec.source, DirectorySource):
        return _from_directory(spec, spec.source, drop_dir)
    assert isinstance(spec.source, UrlSource)
    return _from_url(spec.source, work_dir, on_progress)


def _from_directory(spec: DatasetSpec, source: DirectorySource, drop_dir: Path) -> FetchedSource:
    pattern = source.path if Path(source.path).is_absolute() else str(drop_dir / source.path)
    files = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_file())
    if not files:
        raise SourceUnavailable("no_source", f"no file matching {pattern} has been delivered")
    if spec.mode is Mode.incremental:
        # deltas apply in the order the department wrote them: oldest first, one per run
        return FetchedSource(
            path=files[0], display=str(files[0]), sha256=file_sha256(files[0]), archivable=True
        )
    # a snapshot supersedes every older one still waiting
    return FetchedSource(
        path=files[-1],
        display=str(files[-1]),
        sha256=file_sha256(files[-1]),
        archivable=source.archive,
        superseded=files[:-1] if source.archive else [],
    )


def _expand(headers: dict[str, str]) -> dict[str, str]:
    """Pull credentials stay out of specs: a header value `${NAME}` is read from the environment."""
    return {k: os.path.expandvars(v) if v.startswith("${") else v for k, v in headers.items()}


def _from_url(source: UrlSource, work_dir: Path, on_progress: Callable[[], None]) -> FetchedSource:
    shown = public_url(source.url)
    work_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="pull-", dir=work_dir)
    target = Path(name)
    h = hashlib.sha256()
    try:
        with (
            open(fd, "wb") as out,
            httpx.Client(timeout=source.timeout_seconds, follow_redirects=True) as client,
            client.stream("GET", source.url, headers=_expand(source.headers)) as resp,
        ):
            if resp.status_code != 200:
                raise SourceUnavailable(
                    "fetch",
                    f"GET {shown} answered {resp.status_code} {resp.reason_phrase}; nothing was loaded",
                )
            for chunk in resp.iter_bytes(1 << 20):
                out.write(chunk)
                h.update(chunk)
                on_progress()
    except httpx.TimeoutException:
        target.unlink(missing_ok=True)
        raise SourceUnavailable(
            "fetch", f"GET {shown} timed out after {source.timeout_seconds:g} s; nothing was loaded"
        ) from None
    except httpx.HTTPError as exc:
        target.unlink(missing_ok=True)
        raise SourceUnavailable(
            "fetch", f"GET {shown} failed: {type(exc).__name__}; nothing was loaded"
        ) from None
    except SourceUnavailable:
        target.unlink(missing_ok=True)
        raise
    return FetchedSource(path=target, display=shown, sha256=h.hexdigest(), cleanup=target)


def archive(fetched: FetchedSource, *, succeeded: bool) -> Path | None:
    """Move a drop-directory file aside so it is never loaded twice: processed/ or rejected/."""
    if fetched.cleanup is not None:
        fetched.cleanup.unlink(missing_ok=True)
        return None
    if not fetched.archivable:
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    moved: Path | None = None
    for path in [fetched.path, *fetched.superseded]:
        dest_dir = path.parent / ("processed" if succeeded else "rejected")
        if path != fetched.path:
            dest_dir = (
                path.parent / "processed"
            )  # superseded snapshots were never loaded; kept for the record
            if not succeeded:
                continue
        dest_dir.mkdir(exist_ok=True)
        dest = dest_dir / f"{stamp}-{path.name}"
        shutil.move(str(path), dest)
        if path == fetched.path:
            moved = dest
    return moved
