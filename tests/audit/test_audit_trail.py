"""The audit trail against a real token: checkpoints, chains per process, torn tails,
rotation. Every tampering case must be found and named (file and record number)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from hsmkms.api.app import create_app
from hsmkms.api.sigv4 import SigV4Verifier
from hsmkms.audit.files import genesis, seal
from hsmkms.audit.log import AuditLog, verify
from hsmkms.audit.shelf import DatabaseShelf
from hsmkms.library import KeyManager
from hsmkms.policy.principals import ADMIN_POLICY, CredentialStore
from hsmkms.store.sqlite import SqliteStore
from hsmkms.token import Hsm
from hsmkms.token.audit import KEY_LABEL, TokenAuditAnchor
from hsmkms.token.templates import InternalRef
from tests.conftest import ROOT, TokenEnv, running

NODE = "node-a"
CHAIN = f"{NODE}.w0"
FILE = f"{CHAIN}.000001.jsonl"


@pytest.fixture
def anchor(hsm: Hsm, shelf: DatabaseShelf) -> TokenAuditAnchor:
    """The token's audit key; checkpoints in the token, or (a token without data
    objects) in a database shared with the writer processes below. Each test is its
    own deployment (scope) on the session's token."""
    return TokenAuditAnchor(hsm, shelf, scope=uuid.uuid4().hex)


@pytest.fixture(scope="module")
def shelf_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoint database shared with the writer processes below (this worker's own)."""
    return tmp_path_factory.mktemp("audit-shelf") / "shelf.db"


@pytest.fixture(scope="module")
def shelf(shelf_path: Path) -> DatabaseShelf:
    return DatabaseShelf(SqliteStore(shelf_path))


def trail(directory: Path, anchor: TokenAuditAnchor, count: int = 10, **options: object) -> Path:
    """A closed chain of `count` records with checkpoints every 4 records and on close."""
    log = AuditLog(directory, anchor=anchor, node_id=NODE, checkpoint_records=4, **options)  # type: ignore[arg-type]
    for n in range(1, count + 1):
        log.record({"eventName": "Encrypt", "n": n})
    log.close()
    return directory / FILE


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines()


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def rehash(lines: list[str], chain: str = CHAIN) -> list[str]:
    """What an attacker with write access to the file can do: recompute the chain."""
    previous, out = genesis(chain), []
    for line in lines:
        record = json.loads(line)
        record.pop("hash")
        record.pop("previousHash")
        sealed, previous = seal(record, previous)
        out.append(sealed.rstrip("\n"))
    return out


def test_the_audit_key_never_leaves_the_token(hsm: Hsm, anchor: TokenAuditAnchor) -> None:
    anchor.key_id()
    (facts,) = hsm.facts(InternalRef(KEY_LABEL, b""))
    assert facts.object_class == "SECRET_KEY" and facts.token and facts.private
    assert facts.sensitive and not facts.extractable and facts.never_extractable


def test_checkpoints_cover_the_chain(tmp_path: Path, anchor: TokenAuditAnchor) -> None:
    trail(tmp_path, anchor)
    history = [json.loads(line) for line in lines_of(tmp_path / f"{CHAIN}.checkpoints.jsonl")]
    # the first announces the chain to the token, before its first record
    assert [(c["number"], c["sequence"]) for c in history] == [(1, 0), (2, 4), (3, 8), (4, 10)]
    result = verify(tmp_path, anchor)
    assert result.ok, result.problems
    assert result.records == 10 and result.chains[CHAIN]["covered"] == 10


def test_idle_records_get_a_timed_checkpoint(tmp_path: Path, anchor: TokenAuditAnchor) -> None:
    log = AuditLog(tmp_path, anchor=anchor, node_id=NODE, checkpoint_seconds=0.3)
    for n in range(3):
        log.record({"eventName": "Encrypt", "n": n})
    history = tmp_path / f"{CHAIN}.checkpoints.jsonl"
    deadline = time.monotonic() + 10
    while len(lines_of(history)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [json.loads(line)["sequence"] for line in lines_of(history)] == [0, 3]
    log.close()  # nothing new since: no further checkpoint
    assert len(lines_of(history)) == 2


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("edit", f"{FILE} record 3: its hash does not match its content"),
        ("delete", f"{FILE} record 5: the chain is broken"),
        ("insert", f"{FILE} record 7: the chain is broken"),
        ("reorder", f"{FILE} record 6: the chain is broken"),
        ("rewrite", f"{FILE} record 4 (sequence 4) does not match signed checkpoint 2"),
        ("cut", f"the chain ends at {FILE} record 7 (sequence 7), but checkpoint 4 covers "
                "records up to 10: records 8-10 were removed"),
        ("cut-rehashed", f"the chain ends at {FILE} record 7 (sequence 7)"),
    ],
)  # fmt: skip
def test_tampering_is_found_and_located(
    tmp_path: Path, anchor: TokenAuditAnchor, damage: str, expected: str
) -> None:
    path = trail(tmp_path, anchor)
    lines = lines_of(path)
    if damage == "edit":
        lines[2] = lines[2].replace('"n":3', '"n":33')
    elif damage == "delete":
        del lines[4]
    elif damage == "insert":  # a well-formed record chained to record 5
        forged, _ = seal({"eventName": "Decrypt", "auditSequence": 6},
                         json.loads(lines[4])["hash"])  # fmt: skip
        lines.insert(5, forged.rstrip("\n"))
    elif damage == "reorder":
        lines[5], lines[6] = lines[6], lines[5]
    elif damage == "rewrite":  # record 2 changed and every hash after it recomputed
        lines[1] = lines[1].replace('"n":2', '"n":22')
        lines = rehash(lines)
    elif damage == "cut":
        lines = lines[:7]
    else:
        lines = rehash(lines[:7])
    write_lines(path, lines)
    result = verify(tmp_path, anchor)
    assert not result.ok
    assert expected in result.problem, result.problem


def test_a_deleted_checkpoints_file_is_found(tmp_path: Path, anchor: TokenAuditAnchor) -> None:
    trail(tmp_path, anchor)
    (tmp_path / f"{CHAIN}.checkpoints.jsonl").unlink()
    result = verify(tmp_path, anchor)
    assert not result.ok
    assert result.problem == (f"{CHAIN}.checkpoints.jsonl is missing or empty: the token holds "
                              "checkpoint 4 (records up to 10)")  # fmt: skip


def test_a_trimmed_trail_with_trimmed_checkpoints_is_found(
    tmp_path: Path, anchor: TokenAuditAnchor
) -> None:
    path = trail(tmp_path, anchor)
    write_lines(path, lines_of(path)[:8])  # records 9 and 10 gone ...
    history = tmp_path / f"{CHAIN}.checkpoints.jsonl"
    write_lines(history, lines_of(history)[:3])  # ... and the checkpoint covering them
    result = verify(tmp_path, anchor)
    assert not result.ok
    assert "ends at checkpoint 3, but the token holds checkpoint 4: the file was cut" in (
        result.problem
    )


@pytest.mark.parametrize("forgery", ["altered", "removed", "foreign"])
def test_a_forged_checkpoints_file_is_found(
    tmp_path: Path, hsm: Hsm, shelf: DatabaseShelf, anchor: TokenAuditAnchor, forgery: str
) -> None:
    trail(tmp_path, anchor)
    history = tmp_path / f"{CHAIN}.checkpoints.jsonl"
    lines = lines_of(history)
    if forgery == "altered":  # points checkpoint 3 at another head
        lines[2] = lines[2].replace('"sequence":8', '"sequence":7')
        expected = "line 3: checkpoint 3 is not signed by the audit key"
    elif forgery == "removed":
        del lines[1]
        expected = "line 2: checkpoint 3 where 2 was due (checkpoints 2-2 were removed)"
    else:  # a genuine checkpoint of another deployment's trail on the same token
        other = tmp_path / "other"
        trail(other, TokenAuditAnchor(hsm, shelf, scope=uuid.uuid4().hex))
        lines[0] = lines_of(other / f"{CHAIN}.checkpoints.jsonl")[0]
        expected = "line 1: checkpoint 1 is not signed by the audit key for this chain"
    write_lines(history, lines)
    result = verify(tmp_path, anchor)
    assert not result.ok
    assert f"{CHAIN}.checkpoints.jsonl {expected}" in result.problem, result.problem


def test_a_removed_trail_id_is_found(tmp_path: Path, anchor: TokenAuditAnchor) -> None:
    trail(tmp_path, anchor)
    (tmp_path / "trail.id").unlink()
    assert "trail.id is missing" in verify(tmp_path, anchor).problem


def test_rotation_keeps_one_chain_across_files(tmp_path: Path, anchor: TokenAuditAnchor) -> None:
    trail(tmp_path, anchor, count=30, rotate_bytes=600)
    files = sorted(tmp_path.glob(f"{CHAIN}.*.jsonl"))
    files = [f for f in files if not f.name.endswith("checkpoints.jsonl")]
    assert len(files) >= 3
    first, second = lines_of(files[0]), lines_of(files[1])
    assert json.loads(second[0])["previousHash"] == json.loads(first[-1])["hash"]
    result = verify(tmp_path, anchor)
    assert result.ok and result.records == 30, result.problems
    missing = len(first) + 1
    files[1].unlink()
    result = verify(tmp_path, anchor)
    assert not result.ok
    assert result.problem.startswith(f"{files[2].name} record 1: the chain is broken")
    assert f"records {missing}-" in result.problem


def test_rotation_by_age(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, node_id=NODE, rotate_seconds=0)
    for n in range(3):
        log.record({"eventName": "Encrypt", "n": n})
    log.close()
    assert len(list(tmp_path.glob(f"{CHAIN}.00000?.jsonl"))) == 3
    assert verify(tmp_path).records == 3


# -- one chain per process ---------------------------------------------------------

WRITER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from hsmkms.audit.log import AuditLog
    from hsmkms.audit.shelf import DatabaseShelf
    from hsmkms.store.sqlite import SqliteStore
    from hsmkms.token import Hsm
    from hsmkms.token.audit import TokenAuditAnchor
    hsm = Hsm(sys.argv[2], sys.argv[3], os.environ["TEST_PIN"], 2,
              init_params=os.environ.get("TEST_INIT") or None)
    shelf = DatabaseShelf(SqliteStore(Path(os.environ["TEST_SHELF"])))
    anchor = TokenAuditAnchor(hsm, shelf, scope=os.environ["TEST_SCOPE"])
    log = AuditLog(Path(sys.argv[1]), anchor=anchor, node_id="shared",
                   checkpoint_records=50)
    print(log.chain, flush=True)
    sys.stdin.readline()  # start together
    for n in range(int(sys.argv[4])):
        log.record({"eventName": "Encrypt", "writer": os.getpid(), "n": n})
    if sys.argv[5] == "crash":
        os._exit(0)  # no close: no final checkpoint
    log.close()
    hsm.close()
""")


def writer(
    directory: Path,
    env: TokenEnv,
    anchor: TokenAuditAnchor,
    shelf: Path,
    count: int,
    end: str = "close",
) -> subprocess.Popen[str]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "SOFTHSM2_CONF": env.conf,
                   "TEST_PIN": env.pin, "TEST_INIT": env.init_params or "",
                   "TEST_SHELF": str(shelf), "TEST_SCOPE": anchor.scope}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(directory), env.module, env.label, str(count), end],
        env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_two_processes_write_their_own_chains(
    tmp_path: Path, token_env: TokenEnv, shelf_path: Path, anchor: TokenAuditAnchor
) -> None:
    processes = [writer(tmp_path, token_env, anchor, shelf_path, 300) for _ in range(2)]
    chains = {process.stdout.readline().strip() for process in processes}  # type: ignore[union-attr]
    assert chains == {"shared.w0", "shared.w1"}
    for process in processes:
        process.communicate("go\n", timeout=120)
        assert process.returncode == 0
    result = verify(tmp_path, anchor)
    assert result.ok, result.problems
    assert result.records == 600
    assert {name: c["covered"] for name, c in result.chains.items()} == {
        "shared.w0": 300, "shared.w1": 300,
    }  # fmt: skip


# -- crashes ------------------------------------------------------------------------


def crash_after(
    directory: Path, env: TokenEnv, anchor: TokenAuditAnchor, shelf: Path, count: int
) -> None:
    process = writer(directory, env, anchor, shelf, count, end="crash")
    process.communicate("go\n", timeout=120)
    assert process.returncode == 0


def test_a_torn_last_record_is_moved_aside_and_recorded(
    tmp_path: Path, token_env: TokenEnv, shelf_path: Path, anchor: TokenAuditAnchor
) -> None:
    crash_after(
        tmp_path, token_env, anchor, shelf_path, 60
    )  # checkpoint at 50; 10 records uncovered
    path = tmp_path / "shared.w0.000001.jsonl"
    with path.open("ab") as out:  # the power cut: half a record
        out.write(b'{"eventName":"Encrypt","n":6')
    before = verify(tmp_path, anchor)
    assert before.ok and "torn" in " ".join(before.notes), before.problems
    log = AuditLog(tmp_path, anchor=anchor, node_id="shared")
    log.close()
    torn = tmp_path / "shared.w0.000001.jsonl.torn"
    assert torn.read_bytes() == b'{"eventName":"Encrypt","n":6'
    event = json.loads(lines_of(path)[-1])
    assert event["eventName"] == "AuditTrailRecovered" and event["auditSequence"] == 61
    assert event["additionalEventData"] == {
        "chain": "shared.w0", "lastRecord": 60, "lastCheckpoint": 50,
        "tornFile": torn.name, "tornBytes": len(torn.read_bytes()),
    }  # fmt: skip
    result = verify(tmp_path, anchor)
    assert result.ok and result.records == 61, result.problems
    assert any(note.startswith(torn.name) for note in result.notes)


def test_lost_uncovered_records_are_a_crash_lost_covered_ones_are_not(
    tmp_path: Path, token_env: TokenEnv, shelf_path: Path, anchor: TokenAuditAnchor
) -> None:
    crash_after(tmp_path, token_env, anchor, shelf_path, 60)
    path = tmp_path / "shared.w0.000001.jsonl"
    write_lines(path, lines_of(path)[:55])  # records after the checkpoint at 50: a crash
    result = verify(tmp_path, anchor)
    assert result.ok and result.records == 55
    assert "5 records after the last checkpoint are not covered yet" in " ".join(result.notes)
    write_lines(path, lines_of(path)[:45])  # records a checkpoint covers: tampering
    result = verify(tmp_path, anchor)
    assert not result.ok
    assert "records 46-50 were removed (the tail was cut)" in result.problem
    log = AuditLog(tmp_path, anchor=anchor, node_id="shared")  # the server still starts ...
    log.close()
    recovered = json.loads(lines_of(path)[-1])["additionalEventData"]
    assert recovered["missingCoveredRecords"] == "46-50"  # ... says so in the trail ...
    assert not verify(tmp_path, anchor).ok  # ... and the trail stays marked as damaged


def test_a_server_with_checkpoints_ends_with_a_covered_trail(
    tmp_path: Path, km: KeyManager, anchor: TokenAuditAnchor
) -> None:
    credentials = CredentialStore(km.store, km.hsm)
    arn = "arn:aws:iam::111122223333:user/audited"
    credential = credentials.add(arn)
    credentials.attach_policy(arn, "admin", ADMIN_POLICY)
    log = AuditLog(tmp_path / "audit", anchor=anchor, node_id="web")
    app = create_app(
        km.context, SigV4Verifier(credentials.lookup), maintenance_seconds=0, audit=log
    )
    with running(app) as url:
        kms = boto3.client("kms", endpoint_url=url, region_name="us-east-1",
                           aws_access_key_id=credential.access_key_id,
                           aws_secret_access_key=credential.secret_access_key)  # fmt: skip
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        for _ in range(5):
            kms.encrypt(KeyId=key, Plaintext=b"x")
    result = verify(tmp_path / "audit", anchor)  # shutdown closed the log: all covered
    assert result.ok, result.problems
    assert result.chains == {"web.w0": {"records": 6, "checkpoints": 2, "covered": 6}}


def test_no_response_without_its_record(tmp_path: Path, km: KeyManager) -> None:
    credentials = CredentialStore(km.store, km.hsm)
    arn = "arn:aws:iam::111122223333:user/unaudited"
    credential = credentials.add(arn)
    credentials.attach_policy(arn, "admin", ADMIN_POLICY)
    log = AuditLog(tmp_path / "audit", node_id="web")
    app = create_app(
        km.context, SigV4Verifier(credentials.lookup), maintenance_seconds=0, audit=log
    )
    with running(app) as url:
        kms = boto3.client("kms", endpoint_url=url, region_name="us-east-1",
                           aws_access_key_id=credential.access_key_id,
                           aws_secret_access_key=credential.secret_access_key,
                           config=Config(retries={"max_attempts": 1}))  # fmt: skip
        assert len(kms.generate_random(NumberOfBytes=8)["Plaintext"]) == 8
        log.close()  # the trail can no longer be written
        with pytest.raises(ClientError) as caught:
            kms.generate_random(NumberOfBytes=8)
    error = caught.value.response["Error"]
    assert error["Code"] == "KMSInternalException"
    assert error["Message"] == "The audit record could not be written."
