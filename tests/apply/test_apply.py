"""`hsmkms apply FILE [--plan]` on a real `hsmkms init` data dir: the plan is what apply
then does, a second apply changes nothing, a changed file changes only what changed,
every change is in the audit trail, and mistakes in the file are one line naming the
place in it."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from hsmkms.apply.document import load
from tests.cli.test_cli import Cli

pytestmark = pytest.mark.needs_token(
    "softhsm", reason="the CLI creates and uses its own SoftHSM2 token (hsmkms init)"
)

APP = "arn:aws:iam::111122223333:user/app"
CI = "arn:aws:iam::111122223333:user/ci"
SECRET = "app-secret-from-a-file-0123456789"
XKS_SECRET = "X" * 43 + "="
YAML = textwrap.dedent(f"""
    principals:
      - arn: {APP}
        access_keys:
          - access_key_id: AKIAAPPLIED000000001
            secret_file: app.secret
        policies:
          kms-use:
            Version: "2012-10-17"
            Statement:
              - {{Effect: Allow, Action: ["kms:Encrypt", "kms:Decrypt"], Resource: "*"}}
          audit: policies/audit.json
        tags: {{team: orders}}
      - arn: {CI}
        generate_access_key: true
    keys:
      - aliases: [alias/orders, alias/orders-current]
        description: orders table
        tags: {{app: orders, tier: gold}}
        rotation: {{enabled: true, period_days: 180}}
        grants:
          - name: ci-decrypt
            grantee: {CI}
            operations: [Decrypt]
      - aliases: [alias/signing]
        key_spec: ECC_NIST_P256
        key_usage: SIGN_VERIFY
    xks:
      credentials:
        - access_key_id: XKSAPPLIEDACCESSKEY2
          secret_file: xks.secret
      policies:
        xks:
          Version: "2012-10-17"
          Statement: [{{Effect: Allow, Action: "xks:*", Resource: "*"}}]
""")
AUDIT_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "kms:DescribeKey", "Resource": "*"}]}  # fmt: skip


def actions(changes: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(change["Action"], change["Target"]) for change in changes]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Cli, Path]:
    cli = Cli(tmp_path_factory.mktemp("apply") / "data")
    cli.ok("init")
    files = Path(cli.env["HSMKMS_DATA_DIR"]).parent / "files"
    (files / "policies").mkdir(parents=True)
    (files / "app.secret").write_text(SECRET + "\n")
    (files / "xks.secret").write_text(XKS_SECRET + "\n")
    (files / "policies" / "audit.json").write_text(json.dumps(AUDIT_POLICY))
    (files / "stack.yaml").write_text(YAML)
    return cli, files


@pytest.fixture(scope="module")
def applied(setup: tuple[Cli, Path]) -> dict[str, Any]:
    cli, files = setup
    plan = cli.ok("apply", str(files / "stack.yaml"), "--plan")["Plan"]
    done: dict[str, Any] = cli.ok("apply", str(files / "stack.yaml"))
    done["planned"] = plan
    return done


def test_the_plan_is_what_apply_does(applied: dict[str, Any]) -> None:
    assert actions(applied["planned"]) == actions(applied["Applied"])
    assert Counter(action for action, _ in actions(applied["Applied"])) == {
        "AddPrincipal": 1, "AttachPrincipalPolicy": 2, "TagPrincipal": 1,
        "CreateAccessKey": 1, "CreateKey": 2, "CreateAlias": 3, "EnableKeyRotation": 1,
        "CreateGrant": 1, "AddXksCredential": 1, "PutXksPolicy": 1,
    }  # fmt: skip
    (generated,) = applied["AccessKeys"]
    assert generated["PrincipalArn"] == CI and len(generated["SecretAccessKey"]) >= 40


def test_the_deployment_is_as_the_file_says(setup: tuple[Cli, Path], applied: Any) -> None:
    cli, _ = setup
    orders = cli.ok("key", "describe", "alias/orders")["KeyMetadata"]
    assert orders["Description"] == "orders table"
    assert (
        cli.ok("key", "describe", "alias/orders-current")["KeyMetadata"]["KeyId"]
        == (orders["KeyId"])
    )
    assert cli.ok("key", "rotation-status", orders["KeyId"])["RotationPeriodInDays"] == 180
    signing = cli.ok("key", "describe", "alias/signing")["KeyMetadata"]
    assert (signing["KeySpec"], signing["KeyUsage"]) == ("ECC_NIST_P256", "SIGN_VERIFY")
    app = cli.ok("principal", "show", APP)["Principal"]
    assert sorted(p["PolicyName"] for p in app["Policies"]) == ["audit", "kms-use"]
    assert app["Tags"] == {"team": "orders"}
    assert [k["AccessKeyId"] for k in app["AccessKeys"]] == ["AKIAAPPLIED000000001"]
    credentials = cli.ok("xks", "credential", "list")["Credentials"]
    assert [c["AccessKeyId"] for c in credentials] == ["XKSAPPLIEDACCESSKEY2"]
    inventory = {k["KeyId"]: k for k in cli.ok("key", "list", "--long", "--json")["Keys"]}
    assert inventory[orders["KeyId"]]["Aliases"] == ["alias/orders", "alias/orders-current"]


def test_a_second_apply_changes_nothing(setup: tuple[Cli, Path], applied: Any) -> None:
    cli, files = setup
    again = cli.run("apply", str(files / "stack.yaml"))
    assert again.returncode == 0 and json.loads(again.stdout) == {"Applied": []}
    assert again.stderr == f"hsmkms: {files / 'stack.yaml'}: no change\n"
    assert cli.ok("apply", str(files / "stack.yaml"), "--plan") == {"Plan": []}


def test_every_change_is_recorded_and_no_secret(setup: tuple[Cli, Path], applied: Any) -> None:
    cli, _ = setup
    records = [json.loads(line) for line in cli.run("audit", "query").stdout.splitlines()]
    made = Counter(r["eventName"] for r in records if not r.get("errorCode"))
    for action, count in Counter(a for a, _ in actions(applied["Applied"])).items():
        assert made[action] >= count, action
    assert all(r["eventSource"] == "hsmkms.cli" for r in records)
    trail = "\n".join(json.dumps(r) for r in records)
    for secret in (SECRET, XKS_SECRET, applied["AccessKeys"][0]["SecretAccessKey"]):
        assert secret not in trail


def test_a_changed_file_changes_only_what_changed(setup: tuple[Cli, Path], applied: Any) -> None:
    cli, files = setup
    changed = (
        YAML.replace("tier: gold", "tier: silver")
        .replace("description: orders table", "description: orders (v2)")
        .replace("      audit: policies/audit.json\n", "")
        .replace("operations: [Decrypt]", "operations: [Decrypt, Encrypt]")
        .replace("period_days: 180", "period_days: 90")
    )
    (files / "changed.yaml").write_text(changed)
    plan = cli.ok("apply", str(files / "changed.yaml"), "--plan")["Plan"]
    assert actions(plan) == [
        ("DeletePrincipalPolicy", APP), ("UpdateKeyDescription", "alias/orders"),
        ("TagResource", "alias/orders"), ("EnableKeyRotation", "alias/orders"),
        ("RevokeGrant", "alias/orders"), ("CreateGrant", "alias/orders"),
    ]  # fmt: skip
    assert plan[2]["Tags"] == {"tier": "silver"}
    assert actions(cli.ok("apply", str(files / "changed.yaml"))["Applied"]) == actions(plan)
    assert cli.ok("apply", str(files / "changed.yaml"), "--plan") == {"Plan": []}
    policies = cli.ok("principal", "show", APP)["Principal"]["Policies"]
    assert [p["PolicyName"] for p in policies] == ["kms-use"]


def test_toml_says_the_same_as_yaml(tmp_path: Path) -> None:
    toml = textwrap.dedent(f"""
        [[principals]]
        arn = "{CI}"
        generate_access_key = true

        [[keys]]
        aliases = ["alias/orders"]
        description = "orders table"
        tags = {{app = "orders"}}
        rotation = {{enabled = true, period_days = 180}}
        grants = [{{name = "ci-decrypt", grantee = "{CI}", operations = ["Decrypt"]}}]
    """)
    yaml = textwrap.dedent(f"""
        principals: [{{arn: "{CI}", generate_access_key: true}}]
        keys:
          - aliases: [alias/orders]
            description: orders table
            tags: {{app: orders}}
            rotation: {{enabled: true, period_days: 180}}
            grants: [{{name: ci-decrypt, grantee: "{CI}", operations: [Decrypt]}}]
    """)
    (tmp_path / "a.toml").write_text(toml)
    (tmp_path / "a.yaml").write_text(yaml)
    assert load(tmp_path / "a.toml") == load(tmp_path / "a.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("keys:\n  - description: no alias\n", "keys[0].aliases: Field required"),
        ("keys:\n  - aliases: []\n", "keys[0].aliases: List should have at least 1 item"),
        ("keys:\n  - aliases: [orders]\n",
         "keys[0].aliases: 'orders': an alias name is alias/NAME"),
        ("keys:\n  - aliases: [alias/a]\n    key_id: 1234abcd-12ab-34cd-56ef-1234567890ab\n",
         "keys[0].key_id: keys are found by their aliases"),
        ("keys:\n  - aliases: [alias/a]\n    colour: blue\n",
         "keys[0].colour: Extra inputs are not permitted"),
        ("keys:\n  - aliases: [alias/a]\n  - aliases: [alias/a]\n",
         "keys: alias/a is given to more than one key"),
        ("keys: [\n", "not valid YAML (line 2, column 1)"),
        ("!!python/object/apply:os.system [touch pwned]\n", "not valid YAML"),
    ],
)  # fmt: skip
def test_a_mistake_in_the_file_is_one_line(
    setup: tuple[Cli, Path], tmp_path: Path, text: str, message: str
) -> None:
    cli, _ = setup
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    line = cli.fails("apply", str(path), "--plan")
    assert line.startswith(f"hsmkms: {path}: {message}"), line
    assert not (tmp_path / "pwned").exists() and not (cli.cwd / "pwned").exists()


def test_what_cannot_change_is_refused_before_anything_changes(
    setup: tuple[Cli, Path], applied: Any
) -> None:
    cli, files = setup
    wrong = files / "wrong.yaml"
    wrong.write_text(
        "keys:\n  - aliases: [alias/signing]\n    key_spec: RSA_2048\n    key_usage: SIGN_VERIFY\n"
        "  - aliases: [alias/new-one]\n"
    )
    line = cli.fails("apply", str(wrong))
    assert "keys[0]: alias/signing names key" in line and "cannot change" in line
    assert "NotFoundException" in cli.fails("key", "describe", "alias/new-one")  # nothing made
    split = files / "split.yaml"
    split.write_text("keys:\n  - aliases: [alias/orders, alias/signing]\n")
    assert "keys[0].aliases: name different keys" in cli.fails("apply", str(split))
