"""SIGHUP makes `hsmkms serve` load its TLS certificate and key again (a certificate
renewed in place), instead of ending the server; a file that does not load leaves the
certificate in use as it was."""

from __future__ import annotations

import shutil
import signal
import ssl
import time
from pathlib import Path

import pytest

from tests.cli.test_cli import Cli, self_signed, serve, stop, wait_healthy
from tests.support.processes import workers_of

pytestmark = pytest.mark.needs_token(
    "softhsm", reason="the CLI creates and uses its own SoftHSM2 token (hsmkms init)"
)


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    runner = Cli(tmp_path_factory.mktemp("tls-reload") / "data")
    runner.ok("init")
    return runner


def presented(port: int) -> str:
    """The certificate the server presents to a new connection (PEM). A connection that
    lands on a worker process just as it is replaced may be closed: connect again."""
    for attempt in range(5):
        try:
            return ssl.get_server_certificate(("127.0.0.1", port), timeout=5)
        except (OSError, ssl.SSLError):
            if attempt == 4:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def same(pem: str, path: Path) -> bool:
    return ssl.PEM_cert_to_DER_cert(pem) == ssl.PEM_cert_to_DER_cert(path.read_text())


def everywhere(port: int, path: Path) -> bool:
    """Every process presents it: with --workers, new connections go to any of them, and
    they are replaced one at a time."""
    return all(same(presented(port), path) for _ in range(8))


def renew(live: Path, directory: Path) -> Path:
    """A new certificate and key written over the live files."""
    directory.mkdir()
    cert, key = self_signed(directory)
    shutil.copy(cert, live / "tls.crt")
    shutil.copy(key, live / "tls.key")
    return cert


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sighup_loads_a_renewed_certificate(cli: Cli, tmp_path: Path, workers: str) -> None:
    live = tmp_path / "live"
    live.mkdir()
    first, key = self_signed(live)
    process, port = serve(
        cli, "--tls-cert", str(first), "--tls-key", str(key), "--workers", workers
    )
    try:
        wait_healthy(f"https://127.0.0.1:{port}", process, verify=False)
        started = workers_of(process.pid)  # none when it serves alone
        original = presented(port)
        renewed = renew(live, tmp_path / "renewed")
        assert not same(original, renewed)
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while not everywhere(port, renewed):
            assert process.poll() is None, "SIGHUP ended the server"
            assert time.monotonic() < deadline, "the renewed certificate was not loaded"
            time.sleep(0.2)
        # Every worker replaced before the next renewal (on a busy machine the last one
        # may still be starting when the new ones already answer every connection).
        while workers_of(process.pid) & started or len(workers_of(process.pid)) < len(started):
            assert time.monotonic() < deadline, "the workers were not all replaced"
            time.sleep(0.2)

        (live / "tls.crt").write_text("half-written")  # a broken renewal
        process.send_signal(signal.SIGHUP)
        time.sleep(2)
        assert process.poll() is None
        assert everywhere(port, renewed)
        wait_healthy(f"https://127.0.0.1:{port}", process, verify=False)
    finally:
        stop(process)
