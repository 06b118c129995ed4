"""Optional client-certificate (mutual TLS) check for `hsmkms serve`, as the XKS
specification recommends: the client must present a certificate chained to a
configured CA (checked by the TLS handshake itself) whose subject common name is
one of the configured names (AWS KMS presents `cks.kms.<region>.amazonaws.com`).

Python's ssl module has no hook inside the handshake, so the name is checked as
soon as the handshake completes, before any HTTP byte is read: a connection with
another name is aborted without an answer.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("hsmkms.api.mtls")


def common_names(peer_certificate: dict[str, Any] | None) -> set[str]:
    """The subject CNs of a certificate as ssl.getpeercert() returns it."""
    names: set[str] = set()
    for rdn in (peer_certificate or {}).get("subject", ()):
        for attribute, value in rdn:
            if attribute == "commonName":
                names.add(value)
    return names


def subject_checked(base: type[asyncio.Protocol], subjects: Iterable[str]) -> type[Any]:
    """An HTTP protocol class (uvicorn's) that drops connections from other subjects."""
    allowed = frozenset(subjects)

    class SubjectChecked(base):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: asyncio.Transport) -> None:
            names = common_names(transport.get_extra_info("peercert"))
            if not names & allowed:
                peer = transport.get_extra_info("peername")
                log.warning("refused TLS client %s: subject CN %s not allowed", peer, names)
                transport.abort()
                return
            super().connection_made(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            if getattr(self, "transport", None) is not None:
                super().connection_lost(exc)

    return SubjectChecked


def client_tls_options(client_ca: str | None) -> dict[str, Any]:
    """uvicorn.Config keywords that require a client certificate from `client_ca`."""
    if client_ca is None:
        return {}
    return {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": client_ca}
