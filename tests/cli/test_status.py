"""`hsmkms status` and `hsmkms key list --long` on a real `hsmkms init` data dir: what an
operator asks about the deployment and its keys, as JSON and as a readable report."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import Cli
from tests.conftest import ROOT

pytestmark = pytest.mark.needs_token(
    "softhsm", reason="the CLI creates and uses its own SoftHSM2 token (hsmkms init)"
)

# status as of a later day: the 90-day rotation and the 7-day deletion are then due.
GATHER_LATER = textwrap.dedent("""
    import json, sys
    from datetime import UTC, datetime, timedelta
    from hsmkms.cli.status import gather
    from hsmkms.config import load_settings
    later = datetime.now(UTC) + timedelta(days=int(sys.argv[1]))
    print(json.dumps(gather(load_settings(), now=later), default=str))
""")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Cli, dict[str, str]]:
    cli = Cli(tmp_path_factory.mktemp("status") / "data")
    cli.ok("init", "--keep-so-pin")
    cli.env["HSMKMS_SO_PIN_FILE"] = str(Path(cli.env["HSMKMS_DATA_DIR"]) / "so.pin")
    cli.ok("domain", "create", "--custodians", "3", "--threshold", "2")
    used = cli.ok("key", "create", "--description", "used")["KeyMetadata"]["KeyId"]
    cli.ok("alias", "create", "alias/orders", used)
    cli.ok("key", "enable-rotation", used, "--period-days", "90")
    plain = Path(cli.env["HSMKMS_DATA_DIR"]).parent / "plain.txt"
    plain.write_text("hello")
    cli.ok("encrypt", "--key", "alias/orders", str(plain), str(plain) + ".enc")
    doomed = cli.ok("key", "create")["KeyMetadata"]["KeyId"]
    cli.ok("key", "schedule-deletion", doomed, "--days", "7")
    signing = cli.ok("key", "create", "--key-spec", "ECC_NIST_P256", "--key-usage", "SIGN_VERIFY")
    cli.ok("backup", "create", str(plain.parent / "backup.json"), "--allow-partial")
    return cli, {"used": used, "doomed": doomed, "signing": signing["KeyMetadata"]["KeyId"]}


def test_key_list_long_is_an_inventory(deployment: tuple[Cli, dict[str, str]]) -> None:
    cli, keys = deployment
    found = {k["KeyId"]: k for k in cli.ok("key", "list", "--long", "--json")["Keys"]}
    assert set(found) == set(keys.values())
    used = found[keys["used"]]
    assert used["Aliases"] == ["alias/orders"]
    assert (used["KeySpec"], used["KeyUsage"], used["KeyState"], used["Origin"]) == (
        "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "Enabled", "AWS_KMS",
    )  # fmt: skip
    assert used["Rotation"]["Enabled"] is True and used["Rotation"]["PeriodInDays"] == 90
    assert used["LastUsed"] is not None  # the file's data key came from it
    assert found[keys["doomed"]]["KeyState"] == "PendingDeletion"
    assert found[keys["doomed"]]["LastUsed"] is None
    assert found[keys["signing"]]["Rotation"] is None  # asymmetric keys do not rotate
    shown = cli.run("key", "list", "--long")
    assert shown.returncode == 0
    header, *rows, total = shown.stdout.splitlines()
    assert header.split()[:3] == ["KEY", "ID", "ALIASES"] and total == "3 keys"
    (row,) = [r for r in rows if r.startswith(keys["used"])]
    assert "alias/orders" in row and "90d, next" in row
    assert cli.ok("key", "list")["Keys"][0].keys() == {"KeyId", "KeyArn"}  # unchanged


def test_status_reports_the_deployment(deployment: tuple[Cli, dict[str, str]]) -> None:
    cli, keys = deployment
    report = cli.ok("status", "--json")
    assert report["Token"]["Reachable"] is True and report["Token"]["Label"] == "hsmkms"
    assert report["Token"]["KeyMaterialObjects"] >= 3
    assert report["Database"]["Reachable"] is True
    domain = report["SecurityDomain"]
    assert domain["Custody"] == "domain" and (domain["Custodians"], domain["Threshold"]) == (3, 2)
    assert report["LastBackup"]["File"].endswith("backup.json")
    assert report["LastBackup"]["AgeDays"] < 1
    chains = report["Audit"]["Chains"]
    assert chains and all(c["LastCheckpoint"] for c in chains)
    assert report["Keys"]["Total"] == 3
    assert report["Keys"]["ByState"] == {"Enabled": 2, "PendingDeletion": 1}
    (pending,) = report["Keys"]["PendingDeletion"]
    assert pending["KeyId"] == keys["doomed"]
    assert report["Keys"]["RotationDueWithin30Days"] == []  # due in 90 days
    assert report["Problems"] == []
    text = cli.run("status")
    assert text.returncode == 0
    for part in ("Token", "Database", "Security domain", "Audit trail", "Backup", "Keys"):
        assert f"\n{part}\n" in text.stdout
    assert "2 of 3 shares needed" in text.stdout


def test_status_later_lists_what_falls_due(deployment: tuple[Cli, dict[str, str]]) -> None:
    cli, keys = deployment
    env = {**cli.env, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", GATHER_LATER, "75"], env=env, cwd=cli.cwd,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    due = report["Keys"]["RotationDueWithin30Days"]
    assert [entry["KeyId"] for entry in due] == [keys["used"]]
    assert "the last backup is 75 days old" in report["Problems"]


def test_status_names_an_unreachable_token(deployment: tuple[Cli, dict[str, str]]) -> None:
    cli, _ = deployment
    broken = Cli(Path(cli.env["HSMKMS_DATA_DIR"]))
    broken.env["HSMKMS_TOKEN_LABEL"] = "not-there"
    result = broken.run("status", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["Token"]["Reachable"] is False
    assert "not-there" in report["Token"]["Error"]
    assert report["Database"]["Reachable"] is True
    assert any(problem.startswith("token: ") for problem in report["Problems"])
