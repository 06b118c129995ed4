"""A data dir's database and its token stay together: the CLI (`hsmkms init`'s own
SoftHSM2 tokens) over SQLite and a real PostgreSQL. The database records the token it
belongs to; init, serve and maintain refuse another token with one line naming both,
and PIN files are never overwritten. Then the binding itself on the session's token
(SoftHSM2 or NSS softokn): a database from before it, and two nodes binding at once."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pkcs11 import Attribute, ObjectClass

from hsmkms.binding import check_or_bind
from hsmkms.errors import DeploymentMismatch
from hsmkms.library import KeyManager
from hsmkms.store import open_store
from hsmkms.store.base import MetadataStore
from hsmkms.store.model import TokenBinding
from hsmkms.token import Hsm
from hsmkms.token.marker import MARKER_PREFIX
from hsmkms.token.pool import PooledSession
from tests.cli.test_cli import Cli
from tests.conftest import PeerToken, free_port

cli_only = pytest.mark.skipif(
    os.environ.get("HSMKMS_TEST_TOKEN", "softhsm") != "softhsm",
    reason="the CLI creates and uses its own SoftHSM2 tokens (hsmkms init)",
)
PIN_FILES = ("user.pin", "so.pin")


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


def deployment(directory: Path, database_url: str) -> Cli:
    cli = Cli(directory)
    cli.env["HSMKMS_DATABASE_URL"] = database_url
    assert cli.ok("init", "--keep-so-pin")["token_created"] is True
    return cli


def pins(directory: Path) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in PIN_FILES}


def serial(cli: Cli) -> str:
    """The serial number of the data dir's token, as hsmkms reads it."""
    done = subprocess.run(
        [sys.executable, "-c", "from hsmkms.bootstrap import open_hsm; from hsmkms.config "
         "import load_settings; h = open_hsm(load_settings()); print(h.info.serial); h.close()"],
        env=cli.env, cwd=cli.cwd, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def serve_refused(cli: Cli) -> str:
    """`hsmkms serve` must stop at once, with one line, instead of serving."""
    done = subprocess.run(
        [sys.executable, "-m", "hsmkms.cli", "serve", "--port", str(free_port())],
        env=cli.env, cwd=cli.cwd, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
    return done.stderr


@cli_only
def test_init_under_another_token_label_changes_nothing(tmp_path: Path, database: str) -> None:
    a = deployment(tmp_path / "a", database)
    data = Path(a.env["HSMKMS_DATA_DIR"])
    key = a.ok("key", "create")["KeyMetadata"]["KeyId"]
    before = pins(data)
    a.env["HSMKMS_TOKEN_LABEL"] = "other"
    refused = a.fails("init")
    assert "'hsmkms'" in refused and "'other'" in refused and serial(_without_label(a)) in refused
    assert pins(data) == before
    assert len(list((data / "tokens").iterdir())) == 1  # no token was made
    del a.env["HSMKMS_TOKEN_LABEL"]
    assert a.ok("key", "describe", key)["KeyMetadata"]["KeyState"] == "Enabled"
    assert a.ok("init")["token_created"] is False


def _without_label(cli: Cli) -> Cli:
    again = Cli(Path(cli.env["HSMKMS_DATA_DIR"]))
    again.env = {k: v for k, v in cli.env.items() if k != "HSMKMS_TOKEN_LABEL"}
    return again


@cli_only
def test_a_lost_token_is_not_replaced(tmp_path: Path, database: str) -> None:
    a = deployment(tmp_path / "a", database)
    data = Path(a.env["HSMKMS_DATA_DIR"])
    key = a.ok("key", "create")["KeyMetadata"]["KeyId"]
    blob = tmp_path / "blob"
    (tmp_path / "plain").write_bytes(b"kept")
    a.ok("encrypt", "--key", key, str(tmp_path / "plain"), str(blob))
    token_serial, before = serial(a), pins(data)
    shutil.copytree(data / "tokens", tmp_path / "tokens-kept")
    shutil.rmtree(data / "tokens")
    refused = a.fails("init")
    assert token_serial in refused and "'hsmkms'" in refused
    assert pins(data) == before and not list((data / "tokens").iterdir())
    shutil.rmtree(data / "tokens")
    shutil.copytree(tmp_path / "tokens-kept", data / "tokens")  # the token comes back
    a.ok("decrypt", str(blob), str(tmp_path / "again"))
    assert (tmp_path / "again").read_bytes() == b"kept"
    assert a.ok("key", "describe", key)["KeyMetadata"]["KeyState"] == "Enabled"


@cli_only
def test_another_data_dir_cannot_take_the_database_over(tmp_path: Path, database: str) -> None:
    a = deployment(tmp_path / "a", database)
    key = a.ok("key", "create")["KeyMetadata"]["KeyId"]
    first = serial(a)
    # A second data dir pointed at the same database: refused before it makes a token.
    b = Cli(tmp_path / "b")
    b.env["HSMKMS_DATABASE_URL"] = database
    assert first in b.fails("init")
    assert not (tmp_path / "b" / "user.pin").exists()
    # One with a token and database of its own, then pointed at a's database.
    c = deployment(tmp_path / "c", f"sqlite:///{tmp_path / 'c.db'}")
    second = serial(c)
    c.env["HSMKMS_DATABASE_URL"] = database
    for refused in (c.fails("maintain"), c.fails("init"), c.fails("key", "list"), serve_refused(c)):
        assert first in refused and second in refused, refused
    # a is untouched: its key is whole and nothing was marked missing.
    assert a.ok("key", "describe", key)["KeyMetadata"]["KeyState"] == "Enabled"
    assert a.ok("maintain")["MaterialMissing"] == []


@cli_only
def test_a_new_tokens_so_pin_is_shown_once_and_kept_only_when_asked(tmp_path: Path) -> None:
    production = Cli(tmp_path / "prod")
    made = production.run("init")
    assert made.returncode == 0 and "SO PIN" in made.stderr
    so_pin = json.loads(made.stdout)["so_pin"]
    assert len(so_pin) >= 24 and "so_pin_file" not in json.loads(made.stdout)
    data = tmp_path / "prod"
    assert not (data / "so.pin").exists()
    assert not [p for p in data.rglob("*") if p.is_file() and so_pin.encode() in p.read_bytes()]
    assert "so_pin" not in production.ok("init")  # shown once: when the token is made
    # It is the token's SO PIN: the SO-only command works with it, from outside the data dir.
    (tmp_path / "so-pin").write_text(so_pin + "\n")
    production.env["HSMKMS_SO_PIN_FILE"] = str(tmp_path / "so-pin")
    assert production.ok("domain", "create", "--custodians", "2", "--threshold", "2")["domain"]

    development = Cli(tmp_path / "dev")
    kept = development.ok("init", "--keep-so-pin")
    assert "so_pin" not in kept and kept["so_pin_file"] == str(tmp_path / "dev" / "so.pin")
    assert stat.S_IMODE((tmp_path / "dev" / "so.pin").stat().st_mode) == 0o600
    assert development.ok("domain", "create", "--custodians", "2", "--threshold", "2")["domain"]


# -- the binding (hsmkms/binding.py) on the session's token -----------------------


def markers(hsm: Hsm) -> set[str]:
    def scan(pooled: PooledSession) -> set[str]:
        found = pooled.session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY})
        labels = {str(obj[Attribute.LABEL]) for obj in found}
        return {label for label in labels if label.startswith(MARKER_PREFIX)}

    return hsm.run(scan)


def test_an_unbound_database_is_adopted_only_by_a_token_holding_its_keys(
    km: KeyManager, peer_tokens: dict[str, PeerToken]
) -> None:
    km.create_key(description="made before databases recorded their token")
    peer = peer_tokens["peer-e"]
    other = Hsm(peer.module, peer.label, peer.pin, pool_size=1)
    try:
        with pytest.raises(DeploymentMismatch, match="names 1 key") as refused:
            check_or_bind(km.store, other)
        assert "hsmkms-peer-e" in str(refused.value) and km.store.token_binding() is None
        binding = check_or_bind(km.store, km.hsm)  # its own token: bound now, and after
        assert check_or_bind(km.store, km.hsm) == binding == km.store.token_binding()
        assert (binding.label, binding.serial) == (km.hsm.token_label, km.hsm.info.serial)
        with pytest.raises(DeploymentMismatch) as refused:
            check_or_bind(km.store, other)
        assert binding.describe() in str(refused.value) and other.info.serial in str(refused.value)
    finally:
        other.close()


class BoundMeanwhile:
    """A store another node binds between this node's first look and its transaction."""

    def __init__(self, store: MetadataStore) -> None:
        self._store = store

    def token_binding(self) -> TokenBinding | None:
        return None  # what this node saw before the other one committed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_two_nodes_binding_at_once_agree_and_leave_one_marker(hsm: Hsm, pg_url: str) -> None:
    first, second = open_store(pg_url), open_store(pg_url)
    try:
        before = markers(hsm)
        bound = check_or_bind(first, hsm)
        late = check_or_bind(BoundMeanwhile(second), hsm)  # type: ignore[arg-type]
        assert late == bound == second.token_binding()
        assert markers(hsm) - before == {MARKER_PREFIX + bound.marker}
    finally:
        first.close()
        second.close()
