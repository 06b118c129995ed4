"""Every file hsmkms makes holds metadata or secrets, so it is readable by its owner only
(0600, directories 0700), whatever the umask it was started with: the CLI as subprocesses
(init, keys, a principal, serve with its database open, encrypt/decrypt, domain shares,
backup), and the library's SQLite store."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from hsmkms.files.envelope import decrypt_file, encrypt_file
from hsmkms.library import KeyManager
from hsmkms.store.sqlite import SqliteStore
from tests.cli.test_cli import Cli, serve, stop, wait_healthy

ARN = "arn:aws:iam::111122223333:user/modes"


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The usual default umask: hsmkms must not depend on a stricter one."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def modes(paths: Iterable[Path]) -> dict[str, str]:
    """Each path's mode where it is not the owner's only."""
    wanted = {True: 0o700, False: 0o600}
    return {
        str(path): oct(stat.S_IMODE(path.lstat().st_mode))
        for path in paths
        if stat.S_IMODE(path.lstat().st_mode) != wanted[path.is_dir()]
    }


def tree(root: Path) -> list[Path]:
    return [root, *root.rglob("*")]


@pytest.mark.skipif(
    os.environ.get("HSMKMS_TEST_TOKEN", "softhsm") != "softhsm",
    reason="the CLI creates and uses its own SoftHSM2 token (hsmkms init)",
)
def test_every_file_the_cli_makes_is_the_owners_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cli = Cli(data)
    so_pin = cli.ok("init")["so_pin"]
    (tmp_path / "so-pin").write_text(so_pin + "\n")
    cli.env["HSMKMS_SO_PIN_FILE"] = str(tmp_path / "so-pin")
    shares = tmp_path / "ceremony"
    made = cli.ok("domain", "create", "--custodians", "3", "--threshold", "2", "--out-dir",
                  str(shares))  # fmt: skip
    assert "shares" not in made and len(made["share_files"]) == 3
    assert sorted(p.name for p in shares.iterdir()) == [f"share-{i}-of-3.json" for i in (1, 2, 3)]
    assert "not empty" in cli.fails(
        "domain", "create", "--custodians", "2", "--threshold", "2", "--out-dir", str(shares)
    )
    key = cli.ok("key", "create")["KeyMetadata"]["KeyId"]
    credential = cli.ok("principal", "add", "--arn", ARN)
    policy = tmp_path / "admin.json"
    policy.write_text('{"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}')
    cli.ok("principal", "attach-policy", ARN, str(policy))
    (tmp_path / "plain").write_bytes(b"file contents")
    cli.ok("encrypt", "--key", key, str(tmp_path / "plain"), str(tmp_path / "sealed"))
    cli.ok("decrypt", str(tmp_path / "sealed"), str(tmp_path / "opened"))
    cli.ok("backup", "create", str(tmp_path / "backup.json"))
    process, port = serve(cli)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process)
        client = boto3.client(
            "kms", endpoint_url=url, region_name="us-east-1",
            aws_access_key_id=credential["AccessKeyId"],
            aws_secret_access_key=credential["SecretAccessKey"],
            config=Config(retries={"max_attempts": 1}),
        )  # fmt: skip
        client.create_key(Description="while serving")
        live = tree(data)  # the database's -wal and -shm exist while it is open
        assert {p.name for p in live} >= {"hsmkms.db", "hsmkms.db-wal", "hsmkms.db-shm"}
        assert modes(live) == {}
    finally:
        stop(process)
    made_outside = [tmp_path / n for n in ("sealed", "opened", "backup.json")]
    assert modes([*tree(data), *tree(shares), *made_outside]) == {}


def test_the_library_sqlite_store_is_the_owners_only(tmp_path: Path) -> None:
    path = tmp_path / "lib" / "hsmkms.db"
    store = SqliteStore(path)
    try:
        with store.transaction() as writer:
            writer.put_document("test", "one", "{}")
        files = [path, path.with_name("hsmkms.db-wal"), path.with_name("hsmkms.db-shm")]
        assert all(f.exists() for f in files)
        assert modes(files) == {}
    finally:
        store.close()
    # An existing database made before this (0644) is made private when opened.
    os.chmod(path, 0o644)
    SqliteStore(path).close()
    assert modes([path]) == {}


def test_a_decrypted_file_is_the_owners_only(km: KeyManager, key_id: str, tmp_path: Path) -> None:
    (tmp_path / "plain").write_bytes(b"a secret")
    encrypt_file(km, key_id, {}, tmp_path / "plain", tmp_path / "sealed")
    (tmp_path / "opened").write_bytes(b"an older file, 0644, is replaced")
    decrypt_file(km, {}, tmp_path / "sealed", tmp_path / "opened")
    assert (tmp_path / "opened").read_bytes() == b"a secret"
    assert modes([tmp_path / "sealed", tmp_path / "opened"]) == {}
