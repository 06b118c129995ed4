"""Shared by the fault-tolerance tests: a server over its own KeyManager, and a
token session whose lock is held by another thread (a search left unfinished,
which is what python-pkcs11's get_key left behind on MultipleObjectsReturned)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config

from hsmkms.api.app import create_app
from hsmkms.api.ratelimit import RateLimiter
from hsmkms.api.sigv4 import SigV4Verifier
from hsmkms.library import KeyManager
from hsmkms.policy.principals import ADMIN_POLICY, CredentialStore
from hsmkms.token import Hsm
from tests.conftest import ACCOUNT, REGION, running


def client(url: str, access_key_id: str, secret: str) -> Any:
    return boto3.client(
        "kms",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"total_max_attempts": 1}, read_timeout=30),
    )


@contextmanager
def serving(
    km: KeyManager,
    *,
    call_timeout: float | None = None,
    rate_limiter: RateLimiter | None = None,
    principals: tuple[str, ...] = ("tester",),
) -> Iterator[tuple[str, dict[str, Any]]]:
    """An HTTP server over km; yields its URL and one boto3 client per principal."""
    credentials = CredentialStore(km.store, km.hsm)
    clients: dict[str, Any] = {}
    for name in principals:
        arn = f"arn:aws:iam::{ACCOUNT}:user/{name}"
        credential = credentials.add(arn)
        credentials.attach_policy(arn, "admin", ADMIN_POLICY)
        clients[name] = (credential.access_key_id, credential.secret_access_key)
    app = create_app(
        km.context,
        SigV4Verifier(credentials.lookup),
        maintenance_seconds=0,
        call_timeout=call_timeout,
        rate_limiter=rate_limiter,
    )
    with running(app) as url:
        yield url, {name: client(url, *keys) for name, keys in clients.items()}


class PoisonedSession:
    """Take a session out of the pool, leave a search open on it from a helper
    thread (that thread now owns the session's lock), and put it back: the next
    call that draws it blocks until `finish()`."""

    def __init__(self, hsm: Hsm) -> None:
        self._pooled = hsm.pool.acquire()
        self._holding = threading.Event()
        self._finish = threading.Event()
        self._thread = threading.Thread(target=self._hold, daemon=True)
        self._thread.start()
        assert self._holding.wait(10)
        hsm.pool.release(self._pooled)  # the next call draws it (the pool is LIFO)

    def _hold(self) -> None:
        search = self._pooled.session.get_objects({})
        next(search)
        self._holding.set()
        self._finish.wait(60)
        list(search)  # finishes the search: the lock is released on this thread

    def finish(self) -> None:
        self._finish.set()
        self._thread.join(10)
