"""THE edge pipeline: every API request, whichever face it reaches (KMS JSON 1.1 on
`POST /`, the XKS proxy under its URI prefixes), goes through `Edge.serve`:

1. read the body (the face's own bound on top of the server's), decode the headers,
   number the request;
2. the face's admission checks on the event loop (XKS: method, body size, requests
   pending), then the face's `handle` in a worker thread (api/workers.py): SigV4,
   then the operation (KMS: api/invoke.py; XKS: xks/table.py), returning an Outcome —
   the result or the error, and everything the audit record says;
3. THE audit step (api/audit_step.py): the record built from the Outcome, on disk
   before anything is sent (durability `sync`), awaited without holding the loop.
   Refusals at the edge pass the refusal budget first (api/refusals.py): a flood of
   them is counted and summarised, never recorded one by one without bound;
4. the face's wire format for the response (KMS `__type`, XKS `errorName`);
5. metrics and the access log (api/observe.py).

Requests refused below the app (the HTTP protocol's 408/431/503, the body limit's 413)
are recorded by `refusal_record` with the same builder, as the face of their path.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from starlette.types import Receive, Scope, Send

from hsmkms.api.audit_step import record
from hsmkms.api.observe import Observer
from hsmkms.api.refusals import EdgeRefusals, Refusal
from hsmkms.api.workers import WorkerPool
from hsmkms.audit.log import AuditLog
from hsmkms.audit.outcome import Outcome, call_record
from hsmkms.errors import KMSError, KMSInternalException
from hsmkms.store.base import one_generation

log = logging.getLogger("hsmkms.api")
Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class Seen:
    """One HTTP request as the edge received it (read-only from here on)."""

    request_id: str
    method: str
    path: str
    query: str
    headers: Mapping[str, Sequence[str]]  # lower-case name -> every value given
    body: bytes
    client: str | None
    secure: bool
    body_bytes: int = 0  # as received, also past a face's bound

    def header(self, name: str) -> str:
        values = self.headers.get(name)
        return values[0] if values else ""


class Face(Protocol):
    """One protocol on the edge: how it reads a request and writes an answer."""

    pending: int  # requests of this face in progress (the edge counts them)

    @property
    def protocol(self) -> str:
        """ "kms", "xks": metrics and the access log."""

    @property
    def max_body(self) -> int | None:
        """The face's own body bound (None: the server's only)."""

    def names(self, error: KMSError) -> tuple[str, str]:
        """(error code, message) as this protocol's clients are told."""

    def admit(self, seen: Seen) -> KMSError | None:
        """Cheap checks on the event loop before the worker hop."""

    def slow(self, seen: Seen) -> bool:
        """Whether the request takes the workers' slow lane."""

    def handle(self, seen: Seen) -> Outcome:
        """The request, in a worker thread; every failure is an Outcome, not raised."""

    def refused(self, seen: Seen, error: KMSError) -> Outcome:
        """The Outcome of a request refused before or outside `handle`."""

    def respond(self, seen: Seen, outcome: Outcome) -> tuple[int, Headers, bytes]:
        """Status, extra headers and body on the wire."""


async def read_body(receive: Receive, bound: int | None) -> tuple[bytes, int] | None:
    """The body (up to `bound` bytes kept) and its full size; None: the client left."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None  # the client left or was cut off mid-body: nobody to answer
        chunk = message.get("body", b"")
        size += len(chunk)
        if bound is None or size <= bound:
            chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks), size


def decode_headers(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in raw:
        headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    return headers


class Edge:
    def __init__(
        self,
        workers: WorkerPool,
        audit: AuditLog | None,
        observer: Observer,
        faces: Callable[[str], Face],
    ) -> None:
        """`faces`: the face that serves a path (also for refusals below the app)."""
        self._workers = workers
        self._audit = audit
        self._observer = observer
        self._face_of = faces
        self.refusals = EdgeRefusals(audit, self.refusal_record)
        # Request ids: unique per server run without a random draw per request.
        self._run_id, self._numbers = str(uuid.uuid4())[:23], itertools.count()

    def request_id(self) -> str:
        return f"{self._run_id}-{next(self._numbers):012x}"

    async def serve(self, face: Face, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        body = await read_body(receive, face.max_body)
        if body is None:
            return
        client = scope.get("client")
        seen = Seen(
            self.request_id(),
            scope["method"],
            scope["path"],
            scope["query_string"].decode("latin-1"),
            decode_headers(scope["headers"]),
            body[0],
            client[0] if client else None,
            scope.get("scheme") == "https",
            body[1],
        )
        face.pending += 1
        audit = self._audit
        if audit is not None:
            audit.coming += 1  # the writer's group commit waits briefly for this record
        try:
            outcome = await self._outcome(face, seen)
        finally:
            face.pending -= 1
            if audit is not None:
                audit.coming -= 1
        outcome = await self._recorded(face, seen, outcome, started)
        status, extra, payload = face.respond(seen, outcome)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    *extra,
                    (b"content-length", str(len(payload)).encode()),
                    (b"x-amzn-requestid", seen.request_id.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
        error = "" if outcome.error is None else face.names(outcome.error)[0]
        self._observer.answered(face.protocol, outcome, request_id=seen.request_id,
                                client=seen.client, status=status, error=error,
                                seconds=time.perf_counter() - started)  # fmt: skip

    async def _outcome(self, face: Face, seen: Seen) -> Outcome:
        refused = face.admit(seen)
        if refused is not None:
            return face.refused(seen, refused)
        try:
            work: Callable[[], Outcome] = lambda: _handled(face, seen)  # noqa: E731
            return await self._workers.run(work, slow=face.slow(seen))
        except KMSError as exc:  # the worker hop's own: DependencyTimeoutException
            return face.refused(seen, exc)
        except Exception as exc:  # a fault outside the operation: logged, a clean 500
            log.exception("internal error at the edge: %s %s", face.protocol, seen.path[:100])
            internal = KMSInternalException("An internal error occurred.")
            internal.__cause__ = exc
            return face.refused(seen, internal)

    async def _recorded(self, face: Face, seen: Seen, outcome: Outcome, started: float) -> Outcome:
        """The audit step, within the refusal budget; an unwritable record is the answer."""
        if self._audit is None or not self.refusals.should_record(seen.client, outcome.error):
            return outcome
        try:
            await record(self._audit, outcome, request_id=seen.request_id,
                          source_ip=seen.client, user_agent=seen.header("user-agent") or None,
                          processing_seconds=time.perf_counter() - started,
                          names=face.names)  # fmt: skip
        except KMSInternalException as exc:
            return replace(outcome, response=None, error=exc)
        return outcome

    def refusal_record(self, refusal: Refusal) -> dict[str, Any]:
        """The record of a request refused below the app, as the face of its path has it
        (operation, key store); its error as the refusal, KMS-shaped, told the client."""
        face = self._face_of(refusal.path)
        seen = Seen(self.request_id(), "POST", refusal.path, "", refusal.headers, b"",
                    refusal.source, refusal.secure)  # fmt: skip
        outcome = face.refused(seen, refusal.error)
        return call_record(outcome, request_id=seen.request_id, source_ip=refusal.source)


def _handled(face: Face, seen: Seen) -> Outcome:
    """`face.handle` in the worker, reading the store's generation once for the request
    (the credential check and the key cache both ask for it)."""
    with one_generation():
        return face.handle(seen)


Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
