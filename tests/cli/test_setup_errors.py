"""Set-up mistakes a new operator makes: each is one line on stderr saying what is wrong
and where (the setting, the file, the address), never a traceback or a bare
KMSInternalException."""

from __future__ import annotations

import _ssl
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_cli import Cli, self_signed
from tests.conftest import free_port

pytestmark = pytest.mark.needs_token(
    "softhsm", reason="the CLI creates and uses its own SoftHSM2 token (hsmkms init)"
)


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    runner = Cli(tmp_path_factory.mktemp("setup") / "data")
    runner.ok("init")
    return runner


def with_env(cli: Cli, **env: str) -> Cli:
    other = Cli(Path(cli.env["HSMKMS_DATA_DIR"]))
    other.env.update(env)
    return other


def test_a_shared_library_that_is_not_a_pkcs11_module(cli: Cli, tmp_path: Path) -> None:
    not_a_module = _ssl.__file__  # a real shared object, without C_GetFunctionList
    line = with_env(cli, HSMKMS_PKCS11_LIB=not_a_module).fails("key", "list")
    assert line == (
        f"hsmkms: HSMKMS_PKCS11_LIB: {not_a_module} is not a PKCS#11 module "
        "(no C_GetFunctionList)\n"
    )
    text = tmp_path / "module.so"
    text.write_text("not an ELF file")
    line = with_env(cli, HSMKMS_PKCS11_LIB=str(text)).fails("key", "list")
    assert line.startswith(f"hsmkms: HSMKMS_PKCS11_LIB: {text} is not a PKCS#11 module (")


def test_a_moved_data_dir_names_the_token_directory(cli: Cli, tmp_path: Path) -> None:
    original = Path(cli.env["HSMKMS_DATA_DIR"])
    copy = tmp_path / "moved"
    shutil.copytree(original / "tokens", copy / "tokens")
    for name in ("softhsm2.conf", "user.pin", "hsmkms.db"):
        shutil.copy2(original / name, copy / name)
    # The copy's softhsm2.conf still names the original's token directory: hide that.
    (copy / "softhsm2.conf").write_text(
        (copy / "softhsm2.conf").read_text().replace(str(original), str(tmp_path / "gone"))
    )
    line = Cli(copy).fails("key", "list")
    assert line == (
        f"hsmkms: {copy.resolve() / 'softhsm2.conf'}: directories.tokendir "
        f"{tmp_path / 'gone' / 'tokens'} does not exist (was the data dir moved? its tokens "
        f"are in {copy.resolve() / 'tokens'})\n"
    )


def test_pin_files_that_are_not_there(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pin"
    line = with_env(cli, HSMKMS_PIN_FILE=str(missing)).fails("key", "list")
    assert line == f"hsmkms: HSMKMS_PIN_FILE: no such file: {missing}\n"
    config = tmp_path / "hsmkms.toml"
    config.write_text(f'pin_file = "{missing}"\n')
    line = with_env(cli, HSMKMS_CONFIG=str(config)).fails("key", "list")
    assert line == f"hsmkms: {config}: pin_file: no such file: {missing}\n"
    line = with_env(cli, HSMKMS_SO_PIN_FILE=str(missing)).fails(
        "domain", "create", "--custodians", "2", "--threshold", "2"
    )
    assert line == f"hsmkms: HSMKMS_SO_PIN_FILE: no such file: {missing}\n"


def test_a_data_dir_never_initialised(tmp_path: Path) -> None:
    line = Cli(tmp_path / "empty").fails("key", "list")
    assert line == (
        f"hsmkms: no user PIN: {tmp_path / 'empty' / 'user.pin'} does not exist "
        "(run `hsmkms init`, or set HSMKMS_PIN or HSMKMS_PIN_FILE)\n"
    )


def test_tls_files_are_named(cli: Cli, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    port = str(free_port())
    line = cli.fails("serve", "--port", port, "--tls-cert", str(cert))
    assert line == (
        f"hsmkms: TLS certificate {cert}: no private key in it; give --tls-key (HSMKMS_TLS_KEY)\n"
    )
    absent = tmp_path / "absent.pem"
    line = cli.fails("serve", "--port", port, "--tls-cert", str(absent), "--tls-key", str(key))
    assert line == f"hsmkms: TLS certificate {absent}: no such file\n"
    line = cli.fails("serve", "--port", port, "--tls-cert", str(cert), "--tls-key", str(absent))
    assert line == f"hsmkms: TLS key {absent}: no such file\n"
    (tmp_path / "other").mkdir()
    _, other_key = self_signed(tmp_path / "other")
    line = cli.fails("serve", "--port", port, "--tls-cert", str(cert), "--tls-key", str(other_key))
    assert line == f"hsmkms: TLS key {other_key} does not belong to the certificate {cert}\n"
    assert cli.fails("serve", "--port", port, "--tls-key", str(key)) == (
        "hsmkms: --tls-key (HSMKMS_TLS_KEY) needs a certificate: --tls-cert (HSMKMS_TLS_CERT)\n"
    )


def test_a_busy_port_is_named_and_nothing_claims_to_serve(cli: Cli) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "hsmkms.cli", "serve", "--port", str(port)],
            env={**cli.env, "HSMKMS_MAINTENANCE_SECONDS": "0"}, cwd=cli.cwd,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == f"hsmkms: cannot listen on 127.0.0.1:{port}: Address already in use\n"
