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


ENCRYPT_MANY = textwrap.dedent("""
    from hsmkms.bootstrap import build_key_manager
    from hsmkms.config import load_settings
    km = build_key_manager(load_settings())
    key = km.create_key(description="queried")["KeyMetadata"]["KeyId"]
    km.create_alias(alias_name="alias/queried", target_key_id=key)
    for _ in range(300):
        km.encrypt(key_id="alias/queried", plaintext=b"x")
    km.close()
    print(key)
""")


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Cli, str]:
    """A data dir whose trail holds a key's 300 Encrypt calls, made through its alias."""
    runner = Cli(tmp_path_factory.mktemp("busy") / "data")
    runner.ok("init")
    env = {**runner.env, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", ENCRYPT_MANY], env=env, cwd=runner.cwd,
        check=True, timeout=300, capture_output=True, text=True,
    )  # fmt: skip
    return runner, done.stdout.strip()


def test_query_takes_aliases_and_event_names_in_any_case(busy: tuple[Cli, str]) -> None:
    cli, key_id = busy
    lines = cli.run("audit", "query", "--key", "alias/queried", "--event", "ENCRYPT").stdout
    records = [json.loads(line) for line in lines.splitlines()]
    assert len(records) == 300 and {r["eventName"] for r in records} == {"Encrypt"}
    lines = cli.run("audit", "query", "--key", "alias/queried").stdout
    # the key's creation names it by id only: found through the alias's current target
    assert {json.loads(line)["eventName"] for line in lines.splitlines()} == {
        "CreateKey", "CreateAlias", "Encrypt",
    }  # fmt: skip
    arn = "arn:aws:kms:us-east-1:111122223333:alias/queried"
    by_arn = cli.run("audit", "query", "--key", arn, "--event", "kms:createalias").stdout
    assert [json.loads(line)["eventName"] for line in by_arn.splitlines()] == ["CreateAlias"]
    by_id = cli.run("audit", "query", "--key", key_id, "--event", "encrypt").stdout
    assert len(by_id.splitlines()) == 300


def test_query_piped_to_head_stops_quietly(busy: tuple[Cli, str]) -> None:
    cli, _ = busy
    reader = subprocess.Popen(
        [sys.executable, "-m", "hsmkms.cli", "audit", "query"], env=cli.env, cwd=cli.cwd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert reader.stdout is not None and reader.stderr is not None
    assert json.loads(reader.stdout.readline())["eventName"] == "Initialize"
    reader.stdout.close()  # what `head -1` does once it has its line
    assert reader.wait(timeout=60) == 0
    assert reader.stderr.read() == b""


def test_a_failing_verify_still_prints_its_verdict(busy: tuple[Cli, str]) -> None:
    cli, _ = busy
    audit = Path(cli.env["HSMKMS_DATA_DIR"]) / "audit"
    (trail,) = audit.glob("*.000001.jsonl")
    lines = trail.read_text().splitlines()
    lines[5] = lines[5].replace('"Encrypt"', '"Decrypt"')
    trail.write_text("\n".join(lines) + "\n")
    result = cli.run("audit", "verify")
    assert result.returncode == 1
    verdict = json.loads(result.stdout)
    assert verdict["Valid"] is False and verdict["Problems"]
    assert result.stderr.count("\n") == 1 and f"{trail.name} record 6" in result.stderr
