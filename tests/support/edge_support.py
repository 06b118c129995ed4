"""A real hsmkms HTTP server for edge tests: uvicorn with hsmkms's edge protocol and
limits (`hsmkms.api.server.build_server`) on a loopback port, with its own database,
admin principal and audit trail. Leaving the context shuts it down the way `serve`
does (lifespan end: the audit trail is closed), so the trail can be read whole."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hsmkms.api.app import create_app
from hsmkms.api.server import build_server
from hsmkms.api.sigv4 import SigV4Verifier
from hsmkms.audit.files import segments
from hsmkms.audit.log import AuditLog
from hsmkms.config import EdgeLimits, ServingSettings
from hsmkms.library import KeyManager
from hsmkms.operations.context import Deployment
from hsmkms.policy.principals import ADMIN_POLICY, CredentialStore
from hsmkms.store.sqlite import SqliteStore
from hsmkms.token import Hsm
from tests.conftest import ACCOUNT, REGION, Server, free_port


@contextmanager
def edge_server(
    hsm: Hsm,
    directory: Path,
    *,
    limits: EdgeLimits | None = None,
    trusted_proxies: Sequence[str] = (),
    **app_options: Any,
) -> Iterator[Server]:
    directory.mkdir(parents=True, exist_ok=True)
    store = SqliteStore(directory / "hsmkms.db")
    km = KeyManager(Deployment(store, hsm, account_id=ACCOUNT), REGION)
    credentials = CredentialStore(store, hsm)
    arn = f"arn:aws:iam::{ACCOUNT}:user/edge"
    credential = credentials.add(arn)
    credentials.attach_policy(arn, "admin", ADMIN_POLICY)
    audit = AuditLog(directory / "audit")
    verifier = SigV4Verifier(credentials.lookup)
    app = create_app(km.context, verifier, maintenance_seconds=0, audit=audit, **app_options)
    port = free_port()
    edge = (limits or EdgeLimits()).model_copy(update={"trusted_proxies": tuple(trusted_proxies)})
    server = build_server(app, ServingSettings(port=port), edge)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield Server(
            f"http://127.0.0.1:{port}",
            credential.access_key_id,
            credential.secret_access_key,
            arn,
            km,
            audit,
        )
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        audit.close()
        store.close()


def trail(audit: AuditLog) -> list[dict[str, Any]]:
    """Every record of the trail's directory, in order per chain."""
    audit.flush()
    records = []
    for files in segments(audit.directory).values():
        for _, path in files:
            records.extend(json.loads(line) for line in path.read_text().splitlines())
    return records
