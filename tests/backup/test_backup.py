"""Security domain, backup and restore end to end: the CLI as subprocesses over two data
dirs, each with its own `hsmkms init` SoftHSM2 token; the second token is brand new and
joins the domain from custodian shares before the backup is restored into it."""

from __future__ import annotations

import base64
import json
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import Cli
from tests.support.pg import PgServer

pytestmark = pytest.mark.needs_token(
    "softhsm", reason="the CLI creates and uses its own SoftHSM2 token (hsmkms init)"
)

# Runs in a subprocess over a data dir: the library, as an application would use it.
_LIBRARY = """
import base64, json, os, sys
from hsmkms.bootstrap import build_key_manager
from hsmkms.config import load_settings
from hsmkms.policy.principals import CredentialStore
from hsmkms.token.templates import MaterialRef
args = json.loads(os.environ["TEST_ARGS"])
b64 = lambda v: base64.b64encode(v).decode() if isinstance(v, bytes) else v
unb64 = base64.b64decode
km = build_key_manager(load_settings(), audited=False)
try:
    result = None
{code}
finally:
    km.close()
print(json.dumps(result, default=b64))
"""


class Node(Cli):
    def __init__(self, data_dir: Path, database_url: str | None = None) -> None:
        super().__init__(data_dir)
        self.data_dir = data_dir
        if database_url:
            self.env["HSMKMS_DATABASE_URL"] = database_url

    def lib(self, code: str, **args: Any) -> Any:
        """Run library code (which sets `result`) against this data dir."""
        body = "\n".join("    " + line for line in code.strip().splitlines())
        env = {**self.env, "TEST_ARGS": json.dumps(args)}
        done = subprocess.run(
            [sys.executable, "-c", _LIBRARY.format(code=body)],
            env=env, cwd=self.cwd, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def node(tmp: Path, name: str, database_url: str | None = None) -> Node:
    made = Node(tmp / name, database_url)
    assert made.ok("init", "--keep-so-pin")["token_created"] is True  # domain commands
    return made


# Everything a deployment holds, made in `a` after its domain exists.
_POPULATE = """
e = km.create_key(description="envelope")["KeyMetadata"]["KeyId"]
old = km.encrypt(key_id=e, plaintext=b"before rotation", encryption_context={"app": "x"})
km.rotate_key_on_demand(key_id=e)
new = km.encrypt(key_id=e, plaintext=b"after rotation")
km.create_alias(alias_name="alias/envelope", target_key_id=e)
km.tag_resource(key_id=e, tags=[{"TagKey": "team", "TagValue": "blue"}])
grant = km.create_grant(key_id=e, grantee_principal=args["arn"], operations=["Decrypt"])
h = km.create_key(key_spec="HMAC_256", key_usage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
mac = km.generate_mac(key_id=h, message=b"m", mac_algorithm="HMAC_SHA_256")["Mac"]
signs = {}
for spec, algorithm in (("RSA_2048", "RSASSA_PSS_SHA_256"), ("ECC_NIST_P256", "ECDSA_SHA_256")):
    k = km.create_key(key_spec=spec, key_usage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    sig = km.sign(key_id=k, message=b"doc", signing_algorithm=algorithm)["Signature"]
    signs[k] = [algorithm, b64(sig), b64(km.get_public_key(key_id=k)["PublicKey"])]
policy = km.get_key_policy(key_id=h)["Policy"]
km.put_key_policy(key_id=h, policy=policy.replace("Enable IAM", "Enable iam"))
result = {"e": e, "old": b64(old["CiphertextBlob"]), "new": b64(new["CiphertextBlob"]),
          "grant": grant["GrantId"], "h": h, "mac": b64(mac), "signs": signs}
"""

# In `b` after the restore: everything made in `a` still works.
_CHECK = """
m = args["made"]
old = km.decrypt(ciphertext_blob=unb64(m["old"]), encryption_context={"app": "x"})
new = km.decrypt(ciphertext_blob=unb64(m["new"]))
mac = km.verify_mac(key_id=m["h"], message=b"m", mac_algorithm="HMAC_SHA_256", mac=unb64(m["mac"]))
signs = {}
for k, (algorithm, sig, public) in m["signs"].items():
    ok = km.verify(key_id=k, message=b"doc", signature=unb64(sig), signing_algorithm=algorithm)
    signs[k] = [ok["SignatureValid"], b64(km.get_public_key(key_id=k)["PublicKey"]) == public]
secret = CredentialStore(km.store, km.hsm, km.clock).lookup(args["access_key"])
facts = [f for v in (1, 2) for f in km.hsm.facts(MaterialRef(m["e"], v))]
result = {
    "old": old["Plaintext"], "new": new["Plaintext"], "mac": mac["MacValid"], "signs": signs,
    "alias": km.describe_key(key_id="alias/envelope")["KeyMetadata"]["KeyId"],
    "tags": km.list_resource_tags(key_id=m["e"])["Tags"],
    "grants": [g["GrantId"] for g in km.list_grants(key_id=m["e"])["Grants"]],
    "policy": km.get_key_policy(key_id=m["h"])["Policy"],
    "rotations": len(km.list_key_rotations(key_id=m["e"])["Rotations"]),
    "secret": secret.secret_access_key if secret else None,
    "custody": [[f.sensitive, f.extractable, f.never_extractable] for f in facts],
}
"""


@pytest.fixture(params=["sqlite", "postgres"])
def databases(request: pytest.FixtureRequest) -> Iterator[tuple[str | None, str | None]]:
    if request.param == "sqlite":
        yield None, None
        return
    server: PgServer = request.getfixturevalue("pg_server")
    made = [server.create_database() for _ in range(2)]
    yield made[0][1], made[1][1]
    for name, _ in made:
        server.drop_database(name)


def test_backup_restores_into_a_fresh_token_that_joined_the_domain(
    tmp_path: Path, databases: tuple[str | None, str | None]
) -> None:
    a = node(tmp_path, "a", databases[0])
    domain = a.ok("domain", "create", "--custodians", "3", "--threshold", "2")
    shares = domain["shares"]
    assert len(shares) == 3
    assert [json.loads(s)["index"] for s in shares] == [1, 2, 3]
    assert {json.loads(s)["domain"] for s in shares} == {domain["domain"]}
    assert a.ok("domain", "status")["custody"] == "domain"

    arn = "arn:aws:iam::111122223333:user/backup-test"
    principal = a.ok("principal", "add", "--arn", arn)  # after the domain: carried
    made = a.lib(_POPULATE, arn=arn)
    out = tmp_path / "backup.json"
    report = a.ok("backup", "create", str(out))
    assert report["versions_carried"] == 5 and report["not_carried"] == []
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    text = out.read_text()
    assert principal["SecretAccessKey"] not in text  # secrets travel wrapped only

    b = node(tmp_path, "b", databases[1])
    assert b.ok("domain", "status")["domain"] is None
    # A token outside the domain cannot even check the seal.
    assert "does not belong to a security domain" in b.fails("backup", "restore", str(out))
    assert "needs 2 of its 3" in b.fails("domain", "join", "--share", shares[0])
    other = node(tmp_path, "c").ok("domain", "create", "--custodians", "2", "--threshold", "2")
    mixed = ("--share", shares[0], "--share", other["shares"][1])
    assert "different security domains" in b.fails("domain", "join", *mixed)
    joined = b.ok("domain", "join", "--share", shares[2], "--share", shares[0])
    assert joined == {"domain": domain["domain"], "check_value": domain["check_value"]}

    # Damaged files are refused before anything is written.
    bad = tmp_path / "bad.json"
    bad.write_text(text[: len(text) // 2])
    assert "truncated or damaged" in b.fails("backup", "restore", str(bad))
    document = json.loads(text)
    edited = document["payload"].replace('"envelope"', '"evil"', 1)
    assert edited != document["payload"]
    bad.write_text(json.dumps({**document, "payload": edited}))
    assert "altered" in b.fails("backup", "restore", str(bad))
    payload = json.loads(document["payload"])
    payload["materials"][0]["usages"] = ["encrypt", "decrypt", "wrap", "unwrap"]
    bad.write_text(json.dumps({**document, "payload": json.dumps(payload, sort_keys=True)}))
    assert "altered" in b.fails("backup", "restore", str(bad))
    assert b.ok("key", "list") == {"Keys": []}

    restored = b.ok("backup", "restore", str(out))
    assert restored["versions_carried"] == 5 and restored["keys"] == 4
    seen = b.lib(_CHECK, made=made, access_key=principal["AccessKeyId"])
    assert base64.b64decode(seen["old"]) == b"before rotation"
    assert base64.b64decode(seen["new"]) == b"after rotation"
    assert seen["mac"] is True
    assert seen["signs"] == {k: [True, True] for k in made["signs"]}
    assert seen["alias"] == made["e"] and seen["rotations"] == 1
    assert seen["tags"] == [{"TagKey": "team", "TagValue": "blue"}]
    assert seen["grants"] == [made["grant"]] and "Enable iam" in seen["policy"]
    assert seen["secret"] == principal["SecretAccessKey"]
    # Same custody as in `a`: sensitive, extractable only under the trusted domain key.
    assert seen["custody"] == [[True, True, False], [True, True, False]]
    assert "not empty" in b.fails("backup", "restore", str(out))

    # A's trail (kept elsewhere, as an operator would) verifies against B's token: the
    # backup carried A's audit keys and latest checkpoints, and B's token lists A's trail
    # as carried (retired), so B's own trail verifies as B's alone.
    archive = tmp_path / "a-trail"
    shutil.copytree(a.data_dir / "audit", archive)
    verified = b.run("audit", "verify", "--archive", str(archive))
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["Valid"] is True
    own = b.run("audit", "verify")
    assert own.returncode == 0, own.stderr
    assert any("carried by a backup" in note for note in json.loads(own.stdout)["Notes"])


def test_keys_made_before_the_domain_are_not_carried(tmp_path: Path) -> None:
    a = node(tmp_path, "a")
    before = a.ok("key", "create")["KeyMetadata"]["KeyId"]
    # The SO PIN from HSMKMS_SO_PIN_FILE when init's copy is not there; never stored.
    kept = tmp_path / "so-pin-elsewhere"
    (a.data_dir / "so.pin").rename(kept)
    assert "SO PIN is needed" in a.fails(
        "domain", "create", "--custodians", "2", "--threshold", "2"
    )
    a.env["HSMKMS_SO_PIN_FILE"] = str(kept)
    created = a.run("domain", "create", "--custodians", "2", "--threshold", "2")
    assert created.returncode == 0 and len(json.loads(created.stdout)["shares"]) == 2
    assert "1 key material version(s) made before the domain" in created.stderr
    assert not (a.data_dir / "so.pin").exists()
    after = a.ok("key", "create")["KeyMetadata"]["KeyId"]
    # SoftHSM2 cannot wrap Ed25519 private keys: made all the same, with a warning.
    spec = ("--key-spec", "ECC_NIST_EDWARDS25519", "--key-usage", "SIGN_VERIFY")
    made = a.run("key", "create", *spec)
    assert made.returncode == 0, made.stderr
    ed = json.loads(made.stdout)["KeyMetadata"]["KeyId"]
    assert made.stderr.startswith("hsmkms: warning: ") and ed in made.stderr
    assert "backups cannot carry" in made.stderr
    out = tmp_path / "partial.json"
    refused = a.fails("backup", "create", str(out))
    assert "never-extractable" in refused and before in refused and not out.exists()
    report = a.ok("backup", "create", str(out), "--allow-partial")
    reasons = {m["key_id"]: m["reason"] for m in report["not_carried"]}
    assert set(reasons) == {before, ed}
    assert "never-extractable" in reasons[before] and "EC_EDWARDS" in reasons[ed]
    assert report["versions_carried"] == 1
    payload = json.loads(json.loads(out.read_text())["payload"])
    assert [m["label"] for m in payload["materials"]] == [f"hsmkms/{after}/v1"]

    # The setting keeps new keys never-extractable even with a domain.
    a.env["HSMKMS_KEEP_NEVER_EXTRACTABLE"] = "true"
    assert a.ok("domain", "status")["custody"] == "never-extractable"
    kept = a.ok("key", "create")["KeyMetadata"]["KeyId"]
    assert kept in a.fails("backup", "create", str(tmp_path / "again.json"))


def test_domain_and_backup_commands_are_audited(tmp_path: Path) -> None:
    a = node(tmp_path, "a")
    a.ok("domain", "create", "--custodians", "2", "--threshold", "2")
    assert "not an hsmkms domain share" in a.fails("domain", "join", "--share", "{}")
    a.ok("backup", "create", str(tmp_path / "b.json"))
    lines = a.run("audit", "query").stdout.splitlines()
    events = [(e["eventName"], e.get("errorCode")) for e in map(json.loads, lines)]
    assert ("CreateSecurityDomain", None) in events and ("CreateBackup", None) in events
    assert ("JoinSecurityDomain", "ValidationException") in events
    assert a.run("audit", "verify").returncode == 0
