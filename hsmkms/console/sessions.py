"""Console sessions, kept in the database: every `hsmkms serve --workers N` process and
every node sharing a PostgreSQL database knows a session, and signing out ends it
everywhere.

The browser holds a random 256-bit token (an HttpOnly, SameSite=Strict cookie); the
database holds only its SHA-256, with the principal ARN, the access key id, when the
session began and was last used, and the session's CSRF token. Never a secret: the
access key is checked again on every request (a disabled or deleted key ends the
session at once). Last use is written at most every TOUCH_SECONDS (a database write per
page would be one per click); idle expiry is that much coarse.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from hsmkms.config import ConsoleSettings
from hsmkms.store.base import MetadataStore

KIND = "console-sessions"  # store documents: SHA-256 of the cookie token -> Session
TOUCH_SECONDS = 60.0
TOKEN_BYTES = 32


@dataclass(frozen=True)
class Session:
    principal_arn: str
    access_key_id: str
    created: float  # epoch seconds
    last_seen: float
    csrf: str  # the token every state-changing form carries


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    def __init__(
        self,
        store: MetadataStore,
        settings: ConsoleSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock

    def start(self, principal_arn: str, access_key_id: str) -> tuple[str, Session]:
        """A new session: the cookie token (shown to the browser only) and the session.
        Sessions that have expired meanwhile are removed in the same transaction."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = self._clock()
        session = Session(principal_arn, access_key_id, now, now, secrets.token_urlsafe(24))
        with self._store.transaction() as tx:
            for digest, body in tx.list_documents(KIND).items():
                if self._expired(_parse(body), now):
                    tx.delete_document(KIND, digest)
            tx.put_document(KIND, _digest(token), json.dumps(asdict(session)))
        return token, session

    def find(self, token: str) -> Session | None:
        """The live session of a cookie token; None (and the session removed) once it
        has expired."""
        if not token or len(token) > 128:
            return None
        digest = _digest(token)
        body = self._store.get_document(KIND, digest)
        if body is None:
            return None
        session, now = _parse(body), self._clock()
        if session is None or self._expired(session, now):
            self.end(token)
            return None
        if now - session.last_seen >= min(TOUCH_SECONDS, self._settings.idle_seconds / 10):
            session = replace(session, last_seen=now)
            with self._store.transaction() as tx:
                if tx.get_document(KIND, digest) is not None:  # not ended meanwhile
                    tx.put_document(KIND, digest, json.dumps(asdict(session)))
        return session

    def end(self, token: str) -> None:
        digest = _digest(token)
        with self._store.transaction() as tx:
            if tx.get_document(KIND, digest) is not None:
                tx.delete_document(KIND, digest)

    def _expired(self, session: Session | None, now: float) -> bool:
        return (
            session is None
            or now - session.last_seen >= self._settings.idle_seconds
            or now - session.created >= self._settings.session_seconds
        )


def _parse(body: str) -> Session | None:
    try:
        return Session(**json.loads(body))
    except (ValueError, TypeError):
        return None
