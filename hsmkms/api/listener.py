"""Where `hsmkms serve` listens, checked before it says it serves: the socket bound
first (a busy or unusable address is one line naming it), the TLS files loaded once
(a missing file, a certificate without its key, a key that does not match, named by
path), and SIGHUP loading the certificate and key again instead of ending the server.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
import threading
from pathlib import Path

import uvicorn

from hsmkms.config import ConfigError, ServingSettings

log = logging.getLogger("hsmkms.api")


def address(serving: ServingSettings) -> str:
    host = f"[{serving.host}]" if ":" in serving.host else serving.host
    return f"{host}:{serving.port}"


def listening_socket(serving: ServingSettings) -> socket.socket:
    """A socket bound to the configured address and listening (uvicorn's choice of
    family: IPv6 for an address with a colon)."""
    family = socket.AF_INET6 if ":" in serving.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((serving.host, serving.port))
        sock.listen(2048)  # uvicorn's default backlog
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise ConfigError(f"cannot listen on {address(serving)}: {reason}") from None
    return sock


def _exists(path: Path | None, what: str) -> None:
    if path is not None and not path.is_file():
        raise ConfigError(f"{what} {path}: no such file")


def check_tls_files(serving: ServingSettings) -> None:
    """Load the configured certificate, key and client CA once, as the server will,
    so that a mistake is named before the server starts (ssl says only "PEM lib")."""
    cert, key, client_ca = serving.tls_cert, serving.tls_key, serving.tls_client_ca
    if cert is None:
        if key is not None or client_ca is not None:
            given = (
                "--tls-key (HSMKMS_TLS_KEY)" if key else "--tls-client-ca (HSMKMS_TLS_CLIENT_CA)"
            )
            raise ConfigError(f"{given} needs a certificate: --tls-cert (HSMKMS_TLS_CERT)")
        return
    _exists(cert, "TLS certificate")
    _exists(key, "TLS key")
    _exists(client_ca, "TLS client CA")
    if b"-----BEGIN CERTIFICATE-----" not in cert.read_bytes():
        raise ConfigError(f"TLS certificate {cert}: not a PEM certificate")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if key is None:
            raise ConfigError(
                f"TLS certificate {cert}: no private key in it; give --tls-key (HSMKMS_TLS_KEY)"
            ) from None
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise ConfigError(f"TLS key {key} does not belong to the certificate {cert}") from None
        raise ConfigError(
            f"TLS certificate {cert} / key {key}: not a PEM certificate and private key "
            f"({exc.reason or exc})"
        ) from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"TLS client CA {client_ca}: not PEM certificates ({exc.reason or exc})"
            ) from None


class ReloadingServer(uvicorn.Server):
    """uvicorn's server; on SIGHUP it loads its TLS certificate and key again, for the
    connections made from then on (a certificate renewed in place), and keeps serving.
    A file that does not load leaves the certificate in use as it was."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if threading.current_thread() is threading.main_thread():  # not a test's thread
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload_tls)

    def reload_tls(self) -> None:
        context, cert = self.config.ssl, self.config.ssl_certfile
        if context is None or cert is None:
            log.warning("SIGHUP: no TLS certificate to load again (serving plain HTTP)")
            return
        key = self.config.ssl_keyfile
        try:
            context.load_cert_chain(cert, None if key is None else str(key))
        except (OSError, ssl.SSLError) as exc:
            log.error(
                "SIGHUP: TLS certificate %s not loaded, the previous one stays: %s", cert, exc
            )
            return
        log.warning("SIGHUP: TLS certificate loaded again from %s", cert)
