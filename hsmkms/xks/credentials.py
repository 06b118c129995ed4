"""XKS proxy credentials: the SigV4 access keys AWS KMS signs XKS requests with.

They are not KMS principals: each belongs to one logical key store (a URI prefix).
Stored as documents of kind "xks-credential" (id: the access key id), the secret
wrapped by a token key as principals' secrets are (policy/wrapping.py). A key
store may have several at once, so credentials rotate without downtime: add the
new one, switch AWS KMS over (UpdateCustomKeyStore), remove the old one. A running
server sees additions and removals at once, on every node (store/cache.py).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hsmkms.config import uri_prefix
from hsmkms.errors import AlreadyExistsException, NotFoundException, ValidationException
from hsmkms.keys.clock import Clock, system_clock
from hsmkms.policy.caller import Credential
from hsmkms.policy.wrapping import unwrap_secret, wrap_secret
from hsmkms.store.base import MetadataStore
from hsmkms.store.cache import GenerationCache
from hsmkms.token import Token

KIND = "xks-credential"
CACHE_SECONDS = 1.0
# AWS KMS's rules for XksProxyAuthenticationCredential.
ACCESS_KEY_ID = re.compile(r"^[A-Z2-7]{20,30}\Z")
SECRET_ACCESS_KEY = re.compile(r"^[A-Za-z0-9+/=]{43,64}\Z")
_ID_ALPHABET = string.ascii_uppercase + "234567"


def normalize_prefix(prefix: str) -> str:
    """A URI prefix without surrounding slashes ("" for none), checked (the one rule,
    hsmkms.config's, as a KMS error)."""
    try:
        return uri_prefix(prefix)
    except ValueError as exc:
        raise ValidationException(str(exc)) from None


def principal_of(prefix: str) -> str:
    """What a verified XKS caller is, in audit records: the key store it signs for."""
    return f"xks-key-store:/{prefix}"


def _aad(access_key_id: str, prefix: str) -> bytes:
    return f"hsmkms-xks-credential\0{access_key_id}\0{prefix}".encode()


@dataclass(frozen=True)
class _Stored:
    credential: Credential
    uri_prefix: str
    wrapped_secret: bytes


@dataclass(frozen=True)
class XksCredentialInfo:
    access_key_id: str
    uri_prefix: str
    created_at: str

    def as_dict(self) -> dict[str, str]:
        return {
            "AccessKeyId": self.access_key_id,
            "XksProxyUriPath": f"/{self.uri_prefix}/kms/xks/v1".replace("//", "/"),
            "CreationDate": self.created_at,
        }


class XksCredentialStore:
    def __init__(
        self,
        store: MetadataStore,
        hsm: Token,
        clock: Clock = system_clock,
        cache_seconds: float = CACHE_SECONDS,
    ) -> None:
        self._store = store
        self._hsm = hsm
        self._clock = clock
        self._cache: GenerationCache[_Stored | None] = GenerationCache(store, cache_seconds)

    def add(
        self,
        uri_prefix: str,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> Credential:
        """Store a credential for a key store; generated when not given (AWS's format)."""
        prefix = normalize_prefix(uri_prefix)
        access_key_id = access_key_id or "".join(secrets.choice(_ID_ALPHABET) for _ in range(26))
        if not ACCESS_KEY_ID.match(access_key_id):
            raise ValidationException("An XKS access key id is 20-30 characters of A-Z and 2-7.")
        secret = secret_access_key or base64.b64encode(secrets.token_bytes(32)).decode()
        if not SECRET_ACCESS_KEY.match(secret):
            raise ValidationException(
                "An XKS secret access key is 43-64 characters of A-Z, a-z, 0-9, '+', '/', '='."
            )
        wrapped = wrap_secret(self._hsm, _aad(access_key_id, prefix), secret)
        body = {
            "uriPrefix": prefix,
            "wrappedSecret": base64.b64encode(wrapped).decode(),
            "createdAt": self._clock().isoformat(),
        }
        with self._store.transaction() as tx:
            if tx.get_document(KIND, access_key_id) is not None:
                raise AlreadyExistsException(f"XKS access key {access_key_id} already exists.")
            tx.put_document(KIND, access_key_id, json.dumps(body))
        self._forget(access_key_id)
        return Credential(access_key_id, secret, principal_of(prefix))

    def remove(self, access_key_id: str) -> None:
        with self._store.transaction() as tx:
            if tx.get_document(KIND, access_key_id) is None:
                raise NotFoundException(f"XKS access key {access_key_id} does not exist.")
            tx.delete_document(KIND, access_key_id)
        self._forget(access_key_id)

    def list(self, uri_prefix: str | None = None) -> list[XksCredentialInfo]:
        """The credentials (never their secrets), of one key store or all."""
        wanted = None if uri_prefix is None else normalize_prefix(uri_prefix)
        found = []
        for access_key_id, text in self._store.list_documents(KIND).items():
            body: dict[str, Any] = json.loads(text)
            if wanted is None or body["uriPrefix"] == wanted:
                found.append(XksCredentialInfo(access_key_id, body["uriPrefix"], body["createdAt"]))
        return found

    def lookup_for(self, uri_prefix: str) -> Callable[[str], Credential | None]:
        """The SigV4 verifier's lookup for one key store: credentials of others are unknown."""
        prefix = normalize_prefix(uri_prefix)

        def lookup(access_key_id: str) -> Credential | None:
            credential, owner = self._lookup(access_key_id)
            return credential if owner == prefix else None

        return lookup

    def _forget(self, access_key_id: str) -> None:
        self._cache.forget(access_key_id)

    def _lookup(self, access_key_id: str) -> tuple[Credential | None, str]:
        if not ACCESS_KEY_ID.match(access_key_id):
            return None, ""  # never stored: no database read for it
        found = self._cache.get(access_key_id, lambda before: self._load(access_key_id, before))
        return (None, "") if found is None else (found.credential, found.uri_prefix)

    def _load(self, access_key_id: str, before: _Stored | None) -> _Stored | None:
        text = self._store.get_document(KIND, access_key_id)
        if text is None:
            return None
        body = json.loads(text)
        prefix, wrapped = body["uriPrefix"], base64.b64decode(body["wrappedSecret"])
        if before is not None and (before.uri_prefix, before.wrapped_secret) == (prefix, wrapped):
            return before  # the same secret: no token call to unwrap it
        secret = unwrap_secret(self._hsm, _aad(access_key_id, prefix), wrapped)
        return _Stored(Credential(access_key_id, secret, principal_of(prefix)), prefix, wrapped)
