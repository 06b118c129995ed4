"""`hsmkms audit verify` as a subprocess against its own `hsmkms init` data dir, with a
trail checkpointed by that data dir's token."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.cli.test_cli import Cli
from tests.conftest import ROOT

WRITE = textwrap.dedent("""
    from hsmkms.audit.log import AuditLog
    from hsmkms.audit.operator import operator_event
    from hsmkms.bootstrap import open_hsm
    from hsmkms.config import load_settings
    from hsmkms.token.audit import TokenAuditAnchor
    settings = load_settings()
    hsm = open_hsm(settings)
    log = AuditLog(settings.data_dir / "audit", anchor=TokenAuditAnchor(hsm), node_id="ops")
    for n in range(5):
        log.record(operator_event("DescribeKey", parameters={"KeyId": f"key-{n}"}))
    log.close()
    hsm.close()
""")


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    runner = Cli(tmp_path_factory.mktemp("auditcli") / "data")
    runner.ok("init")
    return runner


def test_verify_checks_checkpoints_with_the_token(cli: Cli) -> None:
    env = {**cli.env, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", WRITE], env=env, check=True, timeout=120)
    verified = cli.ok("audit", "verify")
    assert verified["Valid"] is True and verified["Records"] == 6  # with init's record
    assert verified["Chains"]["ops.w0"] == {"records": 5, "checkpoints": 2, "covered": 5}
    found = cli.run("audit", "query", "--key", "key-3").stdout.splitlines()
    assert [json.loads(line)["requestParameters"] for line in found] == [{"KeyId": "key-3"}]

    audit = Path(cli.env["HSMKMS_DATA_DIR"]) / "audit"
    (audit / "ops.w0.checkpoints.jsonl").unlink()
    stderr = cli.fails("audit", "verify")
    assert "ops.w0.checkpoints.jsonl is missing or empty: the token holds checkpoint 2" in stderr


def test_cli_actions_are_audited_with_the_operator(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Operator actions that change or use keys are in the same trail as API calls."""
    cli = Cli(tmp_path_factory.mktemp("operator") / "data")
    cli.ok("init")
    key_id = cli.ok("key", "create", "--description", "audited")["KeyMetadata"]["KeyId"]
    cli.ok("key", "schedule-deletion", key_id, "--days", "7")
    failed = cli.run("key", "describe", "alias/missing")
    assert failed.returncode != 0
    records = [json.loads(line) for line in cli.run("audit", "query").stdout.splitlines()]
    by_name = {r["eventName"]: r for r in records}
    assert {"CreateKey", "ScheduleKeyDeletion", "DescribeKey"} <= set(by_name)
    for record in records:
        assert record["userIdentity"]["type"] == "Operator"
        assert record["eventSource"] == "hsmkms.cli"
        assert record["userIdentity"]["userName"] and record["userIdentity"]["host"]
    assert by_name["ScheduleKeyDeletion"]["resources"][0]["ARN"].endswith(key_id)
    assert by_name["DescribeKey"]["errorCode"] == "NotFoundException"
    found = cli.run("audit", "query", "--key", key_id).stdout.splitlines()
    assert {json.loads(line)["eventName"] for line in found} == {
        "CreateKey",
        "ScheduleKeyDeletion",
    }
    verified = cli.ok("audit", "verify")
    assert verified["Valid"] is True and verified["Records"] == len(records)
