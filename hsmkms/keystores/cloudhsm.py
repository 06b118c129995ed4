"""AWS_CLOUDHSM custom key stores: other PKCS#11 tokens ("clusters") holding some keys'
material.

The operator registers clusters (module path + token label) with the CLI; an API
caller names a cluster only by its id, never a module path. Each process opens its own
sessions to a connected store's token when it first needs them (TokenRegistry).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hsmkms.errors import (
    CustomKeyStoreInvalidStateException,
    KMSError,
    KMSInternalException,
    KMSInvalidStateException,
    ValidationException,
)
from hsmkms.keys.placement import in_main_token
from hsmkms.keystores.records import CustomKeyStore, get_store
from hsmkms.store.base import MetadataStore
from hsmkms.store.model import KeyRecord
from hsmkms.token import CREDENTIALS_KEY, Hsm, Token, TokenLoginFailed, TokenNotFound, rescan_tokens

CLUSTERS = "cluster"  # documents kind: registered PKCS#11 tokens
CUSTOM_POOL_SIZE = 2


@dataclass(frozen=True)
class Cluster:
    cluster_id: str
    module: str
    token_label: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> Cluster:
        return Cluster(**json.loads(text))


def _password_aad(store_id: str) -> bytes:
    return f"hsmkms-keystore-password\0{store_id}".encode()


def wrap_password(hsm: Token, store_id: str, password: str) -> bytes:
    """The store's PIN encrypted inside the main token, for the database."""
    hsm.ensure_aes_key(CREDENTIALS_KEY)
    iv, body = hsm.gcm_encrypt(CREDENTIALS_KEY, _password_aad(store_id), password.encode())
    return iv + body


def unwrap_password(hsm: Token, store: CustomKeyStore) -> str:
    wrapped = store.wrapped_password
    return hsm.gcm_decrypt(
        CREDENTIALS_KEY, wrapped[:12], _password_aad(store.store_id), wrapped[12:]
    ).decode()


CLUSTER_ID_SHAPE = re.compile(r"^cluster-[2-7a-zA-Z]{11,16}\Z")  # AWS's CloudHsmClusterId


def register_cluster(store: MetadataStore, cluster: Cluster) -> None:
    """The operator's registration of a token as a cluster (never an API call)."""
    if not CLUSTER_ID_SHAPE.match(cluster.cluster_id):
        raise ValidationException(
            "A cluster id is cluster- followed by 11 to 16 letters or digits 2-7 "
            f"(as AWS's CloudHsmClusterId), not {cluster.cluster_id!r}."
        )
    if not Path(cluster.module).is_file():
        raise ValidationException(f"No PKCS#11 module at {cluster.module!r}.")
    with store.transaction() as tx:
        tx.put_document(CLUSTERS, cluster.cluster_id, cluster.to_json())


def list_clusters(store: MetadataStore) -> list[Cluster]:
    return [Cluster.from_json(t) for t in store.list_documents(CLUSTERS).values()]


def get_cluster(reader: Any, cluster_id: str) -> Cluster | None:
    text = reader.get_document(CLUSTERS, cluster_id)
    return None if text is None else Cluster.from_json(text)


class ConnectFailed(Exception):
    """Opening a cluster's token failed; `code` is KMS's ConnectionErrorCode."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class TokenRegistry:
    """The main token, and this process's sessions to connected custom key stores."""

    def __init__(self, main: Token, store: MetadataStore) -> None:
        self.main = main
        self._store = store
        self._open: dict[str, Token] = {}
        self._lock = threading.Lock()

    def open(self, store: CustomKeyStore, cluster: Cluster) -> Token:
        """Log in to a store's token (this process), or raise ConnectFailed."""
        with self._lock:
            hsm = self._open.get(store.store_id)
            if hsm is not None:
                return hsm
            pin = unwrap_password(self.main, store)
            try:
                hsm = self._login(cluster, pin)
            except TokenNotFound:
                raise ConnectFailed("CLUSTER_NOT_FOUND") from None
            except TokenLoginFailed as exc:
                code = "USER_LOCKED_OUT" if exc.locked else "INVALID_CREDENTIALS"
                raise ConnectFailed(code) from None
            except KMSInternalException:
                raise ConnectFailed("INTERNAL_ERROR") from None
            self._open[store.store_id] = hsm
            return hsm

    def _login(self, cluster: Cluster, pin: str) -> Token:
        try:
            return Hsm(cluster.module, cluster.token_label, pin, CUSTOM_POOL_SIZE)
        except (TokenNotFound, TokenLoginFailed):
            raise
        except KMSInternalException:
            # A module that lost a token may fail to list its tokens until it is
            # initialised again: do that once when nothing else here uses the module.
            in_use = {h.module_path for h in self._open.values()} | {self.main.module_path}
            if cluster.module in in_use:
                raise ConnectFailed("INTERNAL_ERROR") from None
            rescan_tokens(cluster.module)
            return Hsm(cluster.module, cluster.token_label, pin, CUSTOM_POOL_SIZE)

    def close(self, store_id: str) -> None:
        with self._lock:
            hsm = self._open.pop(store_id, None)
        if hsm is not None:
            with contextlib.suppress(KMSError):  # its token may already be gone
                hsm.close()

    def for_store(self, store_id: str) -> Token:
        """The token of a connected store; CustomKeyStoreInvalidState when it is not."""
        hsm = self._open.get(store_id)
        store = get_store(self._store, store_id)
        if store is None or store.connection_state != "CONNECTED":
            if hsm is not None:  # disconnected by another process
                self.close(store_id)
            raise CustomKeyStoreInvalidStateException(
                f"Custom key store {store_id} is not connected."
            )
        if hsm is not None:
            return hsm
        cluster = get_cluster(self._store, store.cluster_id or "")
        if cluster is None:
            raise CustomKeyStoreInvalidStateException(
                f"Custom key store {store_id}: its cluster is not registered."
            )
        try:
            return self.open(store, cluster)
        except ConnectFailed as exc:
            raise CustomKeyStoreInvalidStateException(
                f"Custom key store {store_id} cannot reach its token ({exc.code})."
            ) from None

    def for_record(self, record: KeyRecord) -> Token:
        """The token holding a key's material (an external key store's keys keep
        their own layer in the main token)."""
        if in_main_token(record) or record.custom_key_store_id is None:
            return self.main
        try:
            return self.for_store(record.custom_key_store_id)
        except CustomKeyStoreInvalidStateException as exc:
            raise KMSInvalidStateException(f"{record.arn} is unavailable: {exc.message}") from None

    def close_all(self) -> None:
        for store_id in list(self._open):
            self.close(store_id)
