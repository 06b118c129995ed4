"""Every change of who may do what (and every other change the CLI makes) is in the audit
trail: the CLI's commands are enumerated from its parser, each must be registered saying
what it records (hsmkms.cli.registry), and each is run, in one process per data dir
through the CLI's own `main`, against its own `hsmkms init` token: a command that records
leaves its record (failed or not), one that does not changes no row of the database,
and no secret it handled is anywhere in the trail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from hsmkms.audit.log import LOGGED_PARAMETERS
from hsmkms.cli import _parser
from hsmkms.cli.registry import COMMANDS, PATH, leaf_commands
from hsmkms.config import default_pkcs11_lib
from hsmkms.policy.principals import ADMIN_POLICY
from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(
    os.environ.get("HSMKMS_TEST_TOKEN", "softhsm") != "softhsm",
    reason="the CLI creates and uses its own SoftHSM2 token (hsmkms init)",
)

ARN = "arn:aws:iam::111122223333:user/audited"
OTHER_ARN = "arn:aws:iam::111122223333:role/generated"
SECRET = "principal-secret-" + "s" * 40
XKS_ID, XKS_SECRET = "XKSAUDITEDACCESSKEY2", "X" * 43 + "="
CLUSTER = "cluster-abcdefghijk23"
NOT_RUN = {("serve",): "blocks until stopped; its API calls are recorded by the server"}

# One run of every command but those in NOT_RUN, in an order where each can work;
# "{key}" is the key `key create` made, "{dir}" a scratch directory.
SAMPLES: list[list[str]] = [
    ["init", "--keep-so-pin"],
    ["key", "create", "--description", "audited"],
    ["key", "list"],
    ["key", "list", "--long"],
    ["status"],
    ["completion", "bash"],
    ["key", "describe", "{key}"],
    ["key", "disable", "{key}"],
    ["key", "enable", "{key}"],
    ["key", "enable-rotation", "{key}", "--period-days", "90"],
    ["key", "rotation-status", "{key}"],
    ["key", "disable-rotation", "{key}"],
    ["key", "rotate", "{key}"],
    ["key", "list-rotations", "{key}"],
    ["alias", "create", "alias/audited", "{key}"],
    ["alias", "list"],
    ["alias", "delete", "alias/audited"],
    ["apply", "{dir}/apply.yaml"],
    ["encrypt", "--key", "{key}", "{dir}/plain", "{dir}/sealed"],
    ["decrypt", "{dir}/sealed", "{dir}/opened"],
    ["principal", "add", "--arn", ARN, "--access-key-id", "AKIAAUDITED000000001",
     "--secret-access-key", SECRET],
    ["principal", "add", "--arn", OTHER_ARN],
    ["principal", "attach-policy", ARN, "{dir}/identity.json", "--name", "audited"],
    ["principal", "tag", ARN, "team=blue"],
    ["principal", "list"],
    ["principal", "show", ARN],
    ["principal", "access-key", "create", ARN],
    ["principal", "access-key", "list"],
    ["principal", "access-key", "disable", "AKIAAUDITED000000001"],
    ["principal", "access-key", "enable", "AKIAAUDITED000000001"],
    ["principal", "access-key", "delete", "AKIAAUDITED000000001"],
    ["principal", "detach-policy", ARN, "audited"],
    ["principal", "remove", OTHER_ARN],
    ["policy", "explain", "--principal", ARN, "--action", "kms:Decrypt", "--key", "{key}"],
    ["keystore", "add", "--id", CLUSTER, "--module", default_pkcs11_lib(),
     "--token-label", "elsewhere"],
    ["keystore", "list"],
    ["keystore", "route", "--host", "xks.example.com", "--url", "http://127.0.0.1:9"],
    ["xks", "credential", "add", "--access-key-id", XKS_ID, "--secret-access-key", XKS_SECRET],
    ["xks", "credential", "add"],
    ["xks", "credential", "list"],
    ["xks", "credential", "remove", XKS_ID],
    ["xks", "policy", "put", "{dir}/xks.json"],
    ["xks", "policy", "get"],
    ["xks", "policy", "remove"],
    ["xks", "key-usage", "{key}", "ENCRYPT"],
    ["maintain"],
    ["key", "schedule-deletion", "{key}", "--days", "7"],
    ["key", "cancel-deletion", "{key}"],
    ["domain", "status"],
    ["domain", "create", "--custodians", "2", "--threshold", "2"],
    ["domain", "join", "--share", "{}"],  # fails: recorded with its error
    ["backup", "create", "{dir}/backup.json", "--allow-partial"],
    ["backup", "restore", "{dir}/backup.json"],  # fails (not an empty target): recorded
    ["audit", "verify"],
    ["audit", "query", "--event", "CreateKey"],
    ["audit", "new-trail", "--reason", "the test's rotation"],
]  # fmt: skip

DRIVER = textwrap.dedent("""
    import contextlib, hashlib, io, json, os, sqlite3, sys
    from pathlib import Path
    from hsmkms.cli import main
    data = Path(os.environ["HSMKMS_DATA_DIR"])

    def records():
        found = {}
        for path in (data / "audit").glob("*.jsonl"):
            if not path.name.endswith(".checkpoints.jsonl"):
                for line in path.read_text().splitlines():
                    record = json.loads(line)
                    found[record["hash"]] = record
        return found

    def rows():
        path = data / "hsmkms.db"
        if not path.exists():
            return ""
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return hashlib.sha256("\\n".join(db.iterdump()).encode()).hexdigest()

    names = {"dir": sys.argv[1]}
    for argv in json.loads(sys.stdin.read()):
        argv = [word.format(**names) if "{" in word and word != "{}" else word
                for word in argv]
        before, state = records(), rows()
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code
        output = out.getvalue()
        with contextlib.suppress(ValueError, KeyError, TypeError):
            names.setdefault("key", json.loads(output)["KeyMetadata"]["KeyId"])
        new = [r for h, r in records().items() if h not in before]
        print(json.dumps({"argv": argv, "code": code, "stdout": output,
                          "stderr": err.getvalue(), "new": new,
                          "rows_changed": rows() != state}), flush=True)
""")


def path_of(argv: list[str]) -> tuple[str, ...]:
    parsed = _parser().parse_args([w if w != "{key}" else "k" for w in argv])
    found: tuple[str, ...] = getattr(parsed, PATH)
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    scratch = tmp_path_factory.mktemp("cli-audited")
    (scratch / "plain").write_bytes(b"file contents")
    (scratch / "identity.json").write_text(ADMIN_POLICY)
    (scratch / "apply.yaml").write_text("keys:\n  - aliases: [alias/applied]\n")
    (scratch / "xks.json").write_text(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "xks:Encrypt", "Resource": "*",
         "Condition": {"StringEquals": {"xks:KmsOperation": "Encrypt"}}}]}))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HSMKMS_", "SOFTHSM2_"))}
    env.update(HSMKMS_DATA_DIR=str(scratch / "data"), PYTHONPATH=str(ROOT))
    env["HSMKMS_SO_PIN_FILE"] = str(scratch / "data" / "so.pin")
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(scratch)], input=json.dumps(SAMPLES), env=env,
        cwd=scratch, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(found) == len(SAMPLES)
    for run in found:
        run["path"] = path_of(run["argv"])
    audit = scratch / "data" / "audit"  # the new trail and the retired one's archive
    found[-1]["trail"] = "".join(p.read_text() for p in audit.rglob("*") if p.is_file())
    found[-1]["pins"] = [(scratch / "data" / n).read_text().strip() for n in ("user.pin", "so.pin")]
    return found


def test_every_command_is_registered_with_what_it_records() -> None:
    parsed = set(leaf_commands(_parser()))
    assert parsed == set(COMMANDS), "register each command with hsmkms.cli.registry.command"
    for spec in COMMANDS.values():
        assert set(spec.request) <= LOGGED_PARAMETERS, (spec.path, "filtered out of records")
        assert not any("Secret" in name or "Pin" in name for name in spec.request), spec.path


def test_every_command_but_serve_is_sampled() -> None:
    """A new command needs a sample here, so the tests below see what it does."""
    assert {path_of(argv) for argv in SAMPLES} | set(NOT_RUN) == set(COMMANDS)


def test_each_command_that_changes_something_is_recorded(runs: list[dict[str, Any]]) -> None:
    for run in runs:
        spec = COMMANDS[run["path"]]
        events = [r["eventName"] for r in run["new"]]
        if spec.records is not None:
            assert spec.records in events, (run["argv"], run["stderr"], events)
            mine = [r for r in run["new"] if r["eventName"] == spec.records]
            assert all(r["userIdentity"]["type"] == "Operator" for r in mine)
            assert all(r["eventSource"] == "hsmkms.cli" for r in mine)
        else:  # says it only reads: then it changes no row
            assert not run["rows_changed"], (run["argv"], "changes rows: declare `records`")


def test_commands_that_failed_are_recorded_with_their_error(runs: list[dict[str, Any]]) -> None:
    failed = [run for run in runs if run["code"] != 0]
    assert {run["path"] for run in failed} == {("domain", "join"), ("backup", "restore")}
    for run in failed:
        (record,) = [r for r in run["new"] if r["eventName"] == COMMANDS[run["path"]].records]
        assert record["errorCode"] and record["errorMessage"]


def by_event(runs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for run in runs for r in run["new"] if r["eventName"] == name]


def test_changes_of_who_may_do_what_say_what_changed(runs: list[dict[str, Any]]) -> None:
    given, generated = by_event(runs, "AddPrincipal")
    assert given["requestParameters"] == {
        "PrincipalArn": ARN,
        "AccessKeyId": "AKIAAUDITED000000001",
    }
    assert generated["responseElements"]["AccessKeyId"].startswith("AKIA")
    (policy,) = by_event(runs, "AttachPrincipalPolicy")
    assert policy["requestParameters"]["PolicyName"] == "audited"
    assert json.loads(policy["requestParameters"]["PolicyDocument"]) == json.loads(ADMIN_POLICY)
    (tag,) = by_event(runs, "TagPrincipal")
    assert tag["requestParameters"]["PrincipalArn"] == ARN
    xks_given, xks_generated = by_event(runs, "AddXksCredential")
    assert xks_given["responseElements"] == {"XksProxyUriPath": "/xks/kms/xks/v1",
                                             "AccessKeyId": XKS_ID}  # fmt: skip
    assert xks_generated["responseElements"]["AccessKeyId"] != XKS_ID
    (removed,) = by_event(runs, "RemoveXksCredential")
    assert removed["requestParameters"] == {"AccessKeyId": XKS_ID}
    (xks_policy,) = by_event(runs, "PutXksPolicy")
    assert "xks:Encrypt" in xks_policy["requestParameters"]["PolicyDocument"]
    (route,) = by_event(runs, "RouteXksProxy")
    assert route["requestParameters"] == {"Host": "xks.example.com", "Url": "http://127.0.0.1:9"}
    (cluster,) = by_event(runs, "RegisterCluster")
    assert cluster["requestParameters"]["CloudHsmClusterId"] == CLUSTER
    (init,) = by_event(runs, "Initialize")
    assert init["responseElements"]["TokenCreated"] is True
    (started,) = by_event(runs, "StartAuditTrail")
    assert started["requestParameters"] == {"Reason": "the test's rotation"}


def test_no_secret_reaches_the_trail(runs: list[dict[str, Any]]) -> None:
    secrets = [SECRET, XKS_SECRET, *runs[-1]["pins"]]
    for run in runs:
        if run["stdout"].startswith("{") and run["path"] != ("audit", "query"):  # JSON lines
            body = json.loads(run["stdout"])
            secrets += [body.get("SecretAccessKey", ""), *body.get("shares", [])]
            credential = body.get("XksProxyAuthenticationCredential", {})
            secrets.append(credential.get("RawSecretAccessKey", ""))
    secrets = [s for s in secrets if s]
    assert len(secrets) >= 8  # given and generated secrets, PINs, the custodian shares
    trail = runs[-1]["trail"]
    for secret in secrets:
        assert secret not in trail
