"""Principals' SigV4 access keys: created, stored wrapped by a token key, looked up.

The secret is AES-GCM encrypted inside the token (policy/wrapping.py) with the access
key id and principal as additional data; only the verifier holds it unwrapped, in
memory, because SigV4 needs the secret itself to compute signatures.
"""

from __future__ import annotations

import json
import re
import secrets
import string
import threading

from hsmkms.errors import AlreadyExistsException, ValidationException
from hsmkms.keys import tags as keytags
from hsmkms.keys.clock import Clock, system_clock
from hsmkms.policy.caller import Credential
from hsmkms.policy.model import parse_policy
from hsmkms.policy.wrapping import unwrap_secret, wrap_secret
from hsmkms.store.base import MetadataStore
from hsmkms.store.model import AccessKey
from hsmkms.token import Hsm

PRINCIPAL_ARN = re.compile(r"^arn:aws:iam::\d{12}:(root|(user|role)/[\w+=,.@/-]{1,512})$")
# Operator-chosen ids: what local-emulator test suites sign with (FOOBARKEY, test).
ACCESS_KEY_ID = re.compile(r"^[A-Za-z0-9_]{1,128}$")
# Generated secrets are 40 characters; a chosen one shorter than this gets a warning.
WEAK_SECRET_LENGTH = 16
POLICY_NAME = re.compile(r"^[\w+=,.@-]{1,128}$")
# What `make run` gives its development principal: every KMS action.
ADMIN_POLICY = '{"Version": "2012-10-17", "Statement": [{"Sid": "KmsAdmin", "Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}'  # noqa: E501
_ID_ALPHABET = string.ascii_uppercase + "234567"
PRINCIPAL_TAGS = "principal-tags"  # store documents: principal ARN -> {"key": "value"}


def principal_tags(store: MetadataStore, principal_arn: str) -> dict[str, str]:
    document = store.get_document(PRINCIPAL_TAGS, principal_arn)
    tags: dict[str, str] = json.loads(document) if document else {}
    return tags


def known_principal(store: MetadataStore, principal_arn: str) -> bool:
    """A principal hsmkms knows: it has an access key, an identity policy or tags."""
    return (
        any(k.principal_arn == principal_arn for k in store.list_access_keys())
        or bool(store.identity_policies(principal_arn))
        or store.get_document(PRINCIPAL_TAGS, principal_arn) is not None
    )


def _aad(access_key_id: str, principal_arn: str) -> bytes:
    return f"hsmkms-credential\0{access_key_id}\0{principal_arn}".encode()


class CredentialStore:
    def __init__(self, store: MetadataStore, hsm: Hsm, clock: Clock = system_clock) -> None:
        self._store = store
        self._hsm = hsm
        self._clock = clock
        self._cache: dict[str, Credential] = {}
        self._lock = threading.Lock()

    def add(
        self,
        principal_arn: str,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> Credential:
        """Store an access key for a principal; generated when not given."""
        if not PRINCIPAL_ARN.match(principal_arn):
            raise ValidationException(
                f"{principal_arn!r} is not an IAM user, role or account-root ARN."
            )
        if access_key_id is None:
            access_key_id = "AKIA" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))
        if not ACCESS_KEY_ID.fullmatch(access_key_id):
            raise ValidationException("An access key id is 1-128 letters, digits and underscores.")
        secret = secrets.token_urlsafe(30) if secret_access_key is None else secret_access_key
        if not secret:
            raise ValidationException("A secret access key must not be empty.")
        wrapped = wrap_secret(self._hsm, _aad(access_key_id, principal_arn), secret)
        with self._store.transaction() as tx:
            if tx.get_access_key(access_key_id) is not None:
                raise AlreadyExistsException(f"Access key {access_key_id} already exists.")
            tx.put_access_key(AccessKey(access_key_id, principal_arn, wrapped, self._clock()))
        return Credential(access_key_id, secret, principal_arn)

    def attach_policy(self, principal_arn: str, name: str, document: str) -> None:
        """Attach (or replace) a named identity policy of a principal."""
        if not PRINCIPAL_ARN.match(principal_arn):
            raise ValidationException(f"{principal_arn!r} is not an IAM principal ARN.")
        if not POLICY_NAME.match(name):
            raise ValidationException("A policy name is 1-128 letters, digits and +=,.@_-.")
        parse_policy(document, identity=True)
        with self._store.transaction() as tx:
            tx.put_identity_policy(principal_arn, name, document)

    def tag_principal(self, principal_arn: str, tags: dict[str, str]) -> None:
        """Set (replace) a principal's tags: policies read them as aws:PrincipalTag/<key>."""
        if not PRINCIPAL_ARN.match(principal_arn):
            raise ValidationException(f"{principal_arn!r} is not an IAM principal ARN.")
        keytags.parse([{"TagKey": k, "TagValue": v} for k, v in tags.items()])
        with self._store.transaction() as tx:
            tx.put_document(PRINCIPAL_TAGS, principal_arn, json.dumps(tags, sort_keys=True))

    def lookup(self, access_key_id: str) -> Credential | None:
        credential = self._cache.get(access_key_id)
        if credential is not None:
            return credential
        stored = self._store.get_access_key(access_key_id)
        if stored is None:
            return None
        secret = unwrap_secret(
            self._hsm, _aad(stored.access_key_id, stored.principal_arn), stored.wrapped_secret
        )
        credential = Credential(access_key_id, secret, stored.principal_arn)
        with self._lock:
            self._cache[access_key_id] = credential
        return credential
