"""A suite written for moto_server (tests/support/moto_style_kms.py: boto3 at an endpoint,
`POST /moto-api/reset` before each test, alias names reused, keys counted from zero),
pointed at a real `hsmkms serve --dev` in moto's account, runs twice in a row with the
same results. Also: development mode says so loudly at start, HSMKMS_DEV_MODE turns it on
as --dev does, and `serve` refuses it in one line where it cannot run."""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_cli import Cli, admin, serve, stop, wait_healthy
from tests.conftest import ROOT
from tests.support import loopback
from tests.support.parallel import serial

pytestmark = [
    serial,  # server processes, and the reset's time
    pytest.mark.needs_token("softhsm", reason="`hsmkms init` makes a SoftHSM2 token"),
]
MOTO_ACCOUNT = "123456789012"
SUITE = ROOT / "tests" / "support" / "moto_style_kms.py"


class DevServe:
    def __init__(self, cli: Cli, url: str, stderr: Path, directory: Path) -> None:
        self.cli, self.url, self.stderr, self.directory = cli, url, stderr, directory


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServe]:
    """`hsmkms init`, moto's credentials (testing/testing) for a principal of moto's
    account, then `hsmkms serve --dev`."""
    directory = tmp_path_factory.mktemp("moto-style")
    cli = Cli(directory / "data")
    cli.env.update({"PYTHONPATH": str(ROOT), "HSMKMS_ACCOUNT_ID": MOTO_ACCOUNT})
    cli.ok("init")
    arn = f"arn:aws:iam::{MOTO_ACCOUNT}:user/tests"
    cli.ok("principal", "add", "--arn", arn, "--access-key-id", "testing",
           "--secret-access-key", "testing")  # fmt: skip
    admin(cli, directory, arn)
    stderr = directory / "serve.stderr"
    with stderr.open("wb") as sink:
        # --workers 2 is set aside: a reset in one of several processes would leave the
        # others' token handles behind
        process, port = serve(cli, "--dev", "--workers", "2", stderr=sink)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield DevServe(cli, url, stderr, directory)
    finally:
        stop(process)


def run_suite(dev: DevServe, name: str) -> dict[str, str]:
    """The suite, unchanged, as its users run it: its own pytest, no hsmkms fixtures.
    Returns each test's outcome."""
    workdir = dev.directory / name
    workdir.mkdir()
    shutil.copy(SUITE, workdir / "test_kms_moto_style.py")
    report = workdir / "report.xml"
    env = {
        **{k: v for k, v in dev.cli.env.items() if not k.startswith("HSMKMS_")},
        "KMS_TEST_ENDPOINT": dev.url,
        "KMS_TEST_ACCOUNT": MOTO_ACCOUNT,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    finished = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--noconftest", "-p", "no:cacheprovider",
         "-p", "no:xdist", "-o", "addopts=", "--rootdir", str(workdir),
         f"--junitxml={report}", "test_kms_moto_style.py"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    outcomes = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        outcomes[case.get("name", "")] = "failed" if failed else "passed"
    assert outcomes, finished.stdout + finished.stderr
    return outcomes


def test_a_moto_suite_runs_twice_with_the_same_results(dev: DevServe) -> None:
    first = run_suite(dev, "first")
    second = run_suite(dev, "second")
    assert first == second
    assert set(first.values()) == {"passed"} and len(first) >= 15, first


def test_development_mode_is_said_loudly_at_start(dev: DevServe) -> None:
    said = dev.stderr.read_text()
    assert "DEVELOPMENT MODE" in said and "DESTROYS every key" in said
    assert f"account {MOTO_ACCOUNT}" in said
    assert "development mode serves from one process, not 2" in said
    health = loopback.get(dev.url + "/_localstack/health").json()
    assert health["services"] == {"kms": "running"}


def test_serve_refuses_development_mode_over_a_security_domain(tmp_path: Path) -> None:
    """HSMKMS_DEV_MODE turns it on as --dev does; over a token in a security domain it is
    refused in one line before anything listens, and nothing is wiped."""
    cli = Cli(tmp_path / "data")
    cli.env["PYTHONPATH"] = str(ROOT)
    cli.ok("init", "--keep-so-pin")
    assert cli.ok("domain", "create", "--custodians", "2", "--threshold", "2")["domain"]
    key_id = cli.ok("key", "create")["KeyMetadata"]["KeyId"]
    cli.env["HSMKMS_DEV_MODE"] = "true"
    result = cli.run("serve", "--port", "1")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("hsmkms: --dev (HSMKMS_DEV_MODE): refused: token "), lines
    assert "security domain" in lines[-1] and "DEVELOPMENT MODE" not in result.stderr
    del cli.env["HSMKMS_DEV_MODE"]
    assert cli.ok("key", "describe", key_id)["KeyMetadata"]["KeyState"] == "Enabled"
