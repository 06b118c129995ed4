"""Progress bars on long work (backup, restore, audit verify, apply) when stderr is a
terminal, and not a byte of them when it is not; stdout stays the JSON it was."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_cli import Cli

pytestmark = pytest.mark.needs_token(
    "softhsm", reason="the CLI creates and uses its own SoftHSM2 token (hsmkms init)"
)


def on_terminal(cli: Cli, *args: str) -> tuple[int, str, str]:
    """The command with stderr on a pseudo-terminal: (exit code, stdout, terminal)."""
    main, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "hsmkms.cli", *args], env=cli.env, cwd=cli.cwd,
        stdout=subprocess.PIPE, stderr=secondary,
    )  # fmt: skip
    os.close(secondary)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the terminal's other end closed: the process ended
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    assert process.stdout is not None
    out = process.stdout.read().decode()
    return process.wait(timeout=120), out, shown.decode(errors="replace")


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    runner = Cli(tmp_path_factory.mktemp("progress") / "data")
    runner.ok("init", "--keep-so-pin")
    runner.env["HSMKMS_SO_PIN_FILE"] = str(Path(runner.env["HSMKMS_DATA_DIR"]) / "so.pin")
    runner.ok("domain", "create", "--custodians", "2", "--threshold", "2")
    for _ in range(3):
        runner.ok("key", "create")
    return runner


def test_backup_and_verify_draw_a_bar_on_a_terminal(cli: Cli, tmp_path: Path) -> None:
    code, out, terminal = on_terminal(cli, "backup", "create", str(tmp_path / "b.json"))
    assert code == 0, terminal
    assert json.loads(out)["versions_carried"] == 3
    assert "hsmkms: backup" in terminal and "key/s" in terminal
    code, out, terminal = on_terminal(cli, "audit", "verify")
    assert code == 0 and json.loads(out)["Valid"] is True
    assert "hsmkms: audit verify" in terminal


def test_no_bar_when_stderr_is_not_a_terminal(cli: Cli, tmp_path: Path) -> None:
    piped = cli.run("backup", "create", str(tmp_path / "b.json"))
    assert piped.returncode == 0 and piped.stderr == ""
    piped = cli.run("audit", "verify")
    assert piped.returncode == 0 and piped.stderr == ""
