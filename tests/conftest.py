"""Test fixtures: one real SoftHSM2 token per test session, a fresh database per test."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hsmkms.config import default_pkcs11_lib
from hsmkms.service import KeyManager
from hsmkms.store.sqlite import SqliteStore
from hsmkms.token import Hsm

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "111122223333"
REGION = "us-east-1"


@dataclass(frozen=True)
class TokenEnv:
    module: str
    label: str
    pin: str
    conf: str


class ManualClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture(scope="session")
def token_env(tmp_path_factory: pytest.TempPathFactory) -> TokenEnv:
    directory = tmp_path_factory.mktemp("softhsm")
    label, pin = "hsmkms-test", secrets.token_hex(8)
    conf = subprocess.run(
        [str(ROOT / "softhsm" / "make-token.sh"), str(directory), label, secrets.token_hex(8), pin],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Must be set before the module is first loaded in this process.
    os.environ["SOFTHSM2_CONF"] = conf
    return TokenEnv(default_pkcs11_lib(), label, pin, conf)


@pytest.fixture(scope="session")
def hsm(token_env: TokenEnv) -> Iterator[Hsm]:
    token = Hsm(token_env.module, token_env.label, token_env.pin, pool_size=4)
    yield token
    token.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    db = SqliteStore(tmp_path / "hsmkms.db")
    yield db
    db.close()


@pytest.fixture
def km(hsm: Hsm, store: SqliteStore, clock: ManualClock) -> KeyManager:
    return KeyManager(store, hsm, account_id=ACCOUNT, region=REGION, clock=clock)


@pytest.fixture
def key_id(km: KeyManager) -> str:
    key: str = km.create_key(description="test key")["KeyMetadata"]["KeyId"]
    return key
