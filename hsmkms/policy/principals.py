"""Principals and their SigV4 access keys: created, listed, disabled, deleted, looked up.

A principal exists while something names it: an access key, an identity policy or tags.
Access keys follow IAM: at most two per principal (inactive ones count), status Active or
Inactive, a creation date and a (coarse) last use. The secret is AES-GCM encrypted inside
the token (policy/wrapping.py) with the access key id and principal as additional data;
only the verifier holds it unwrapped, in memory, because SigV4 needs the secret itself.

The verifier's cache answers only while the store's generation (moved by every committed
write, on any node) is the one an entry was read under, and for `cache_seconds` at most:
a key disabled or deleted through hsmkms is refused by the next request on every node,
one removed behind hsmkms's back (plain SQL, a database restore) within `cache_seconds`.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import string
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from hsmkms.errors import (
    AlreadyExistsException,
    IamLimitExceededException,
    KMSError,
    NoSuchEntityException,
    ValidationException,
)
from hsmkms.keys import tags as keytags
from hsmkms.keys.clock import Clock, system_clock
from hsmkms.policy.caller import Credential
from hsmkms.policy.model import parse_policy
from hsmkms.policy.wrapping import unwrap_secret, wrap_secret
from hsmkms.store.base import MetadataStore
from hsmkms.store.cache import GenerationCache
from hsmkms.store.model import AccessKey
from hsmkms.token import Token

log = logging.getLogger("hsmkms.policy")

PRINCIPAL_ARN = re.compile(r"^arn:aws:iam::\d{12}:(root|(user|role)/[\w+=,.@/-]{1,512})\Z")
# Operator-chosen ids: what local-emulator test suites sign with (FOOBARKEY, test).
ACCESS_KEY_ID = re.compile(r"^[A-Za-z0-9_]{1,128}\Z")
# Generated secrets are 40 characters; a chosen one shorter than this gets a warning.
WEAK_SECRET_LENGTH = 16
POLICY_NAME = re.compile(r"^[\w+=,.@-]{1,128}\Z")
# What `make run` gives its development principal: every KMS action.
ADMIN_POLICY = '{"Version": "2012-10-17", "Statement": [{"Sid": "KmsAdmin", "Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}'  # noqa: E501
_ID_ALPHABET = string.ascii_uppercase + "234567"
PRINCIPAL_TAGS = "principal-tags"  # store documents: principal ARN -> {"key": "value"}
ACTIVE, INACTIVE = "Active", "Inactive"
MAX_ACCESS_KEYS = 2  # IAM's AccessKeysPerUser quota, a hard limit there too
# How long a process trusts a cached credential without reading its row again (as key
# metadata, keys/resolver.py); a generation change ends the trust at once.
CACHE_SECONDS = 1.0
# A key's last use is written at most this often per process: a stamp per request
# would make every signed request a database write.
LAST_USED_SECONDS = 60.0
_CACHE_LIMIT = 10_000  # entries exist only for stored keys; the bound is a backstop


def principal_tags(store: MetadataStore, principal_arn: str) -> dict[str, str]:
    document = store.get_document(PRINCIPAL_TAGS, principal_arn)
    tags: dict[str, str] = json.loads(document) if document else {}
    return tags


def known_principal(store: MetadataStore, principal_arn: str) -> bool:
    """A principal hsmkms knows: it has an access key, an identity policy or tags."""
    return (
        bool(store.principal_access_keys(principal_arn))
        or bool(store.identity_policies(principal_arn))
        or store.get_document(PRINCIPAL_TAGS, principal_arn) is not None
    )


def _aad(access_key_id: str, principal_arn: str) -> bytes:
    return f"hsmkms-credential\0{access_key_id}\0{principal_arn}".encode()


def _check_arn(principal_arn: str) -> None:
    if not PRINCIPAL_ARN.match(principal_arn):
        raise ValidationException(
            f"{principal_arn!r} is not an IAM user, role or account-root ARN."
        )


def _entity(principal_arn: str) -> tuple[str, str]:
    """("user" | "role" | "principal", its name), for IAM's NoSuchEntity wording."""
    resource = principal_arn.split(":", 5)[-1]
    kind, _, path = resource.partition("/")
    if kind in ("user", "role") and path:
        return kind, path.rsplit("/", 1)[-1]
    return "principal", principal_arn


def no_such_principal(principal_arn: str) -> NoSuchEntityException:
    kind, name = _entity(principal_arn)
    return NoSuchEntityException(f"The {kind} with name {name} cannot be found.")


def _no_such_key(access_key_id: str) -> NoSuchEntityException:
    return NoSuchEntityException(f"The Access Key with id {access_key_id} cannot be found.")


def _names(document: Any, principal_arn: str) -> bool:
    """Does a policy document name the principal anywhere (Principal, conditions)?"""
    if isinstance(document, str):
        return document == principal_arn
    if isinstance(document, dict):
        return any(_names(v, principal_arn) for v in document.values())
    if isinstance(document, list):
        return any(_names(v, principal_arn) for v in document)
    return False


@dataclass(frozen=True)
class PrincipalInfo:
    principal_arn: str
    access_keys: list[AccessKey]  # never a secret: AccessKey's repr leaves it out
    policies: dict[str, str]  # name -> document
    tags: dict[str, str]


@dataclass(frozen=True)
class RemovedPrincipal:
    principal_arn: str
    access_key_ids: list[str]
    policy_names: list[str]
    tags: dict[str, str]
    # Grants to it: hsmkms knows principals by ARN only, so a kept grant would come back
    # to life for a principal added later under the same ARN (AWS ties it to the
    # deleted principal's unique id, leaving it useless): they are revoked.
    revoked_grant_ids: list[str]
    # Key policies naming it are left as written (they are the key owners'); the same
    # ARN added again would match them: listed for review.
    key_policies_naming_it: list[str]


@dataclass(frozen=True)
class _Active:
    credential: Credential
    wrapped_secret: bytes


class CredentialStore:
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
        self._cache: GenerationCache[_Active | None] = GenerationCache(store, cache_seconds)
        self._next_stamp: dict[str, float] = {}  # access key id -> when to stamp its use again
        self._lock = threading.Lock()

    # -- principals ----------------------------------------------------------------------

    def principals(self) -> list[str]:
        """Every principal something names, ordered by ARN."""
        named = {k.principal_arn for k in self._store.list_access_keys()}
        named.update(self._store.policy_principals())
        named.update(self._store.list_documents(PRINCIPAL_TAGS))
        return sorted(named)

    def describe(self, principal_arn: str) -> PrincipalInfo:
        keys = self._store.principal_access_keys(principal_arn)
        policies = self._store.identity_policies(principal_arn)
        tags = self._store.get_document(PRINCIPAL_TAGS, principal_arn)
        if not keys and not policies and tags is None:
            raise no_such_principal(principal_arn)
        return PrincipalInfo(principal_arn, keys, policies, json.loads(tags) if tags else {})

    def attach_policy(self, principal_arn: str, name: str, document: str) -> None:
        """Attach (or replace) a named identity policy of a principal."""
        if not PRINCIPAL_ARN.match(principal_arn):
            raise ValidationException(f"{principal_arn!r} is not an IAM principal ARN.")
        if not POLICY_NAME.match(name):
            raise ValidationException("A policy name is 1-128 letters, digits and +=,.@_-.")
        parse_policy(document, identity=True)
        with self._store.transaction() as tx:
            tx.put_identity_policy(principal_arn, name, document)

    def detach_policy(self, principal_arn: str, name: str) -> None:
        with self._store.transaction() as tx:
            if name not in tx.identity_policies(principal_arn):
                kind = _entity(principal_arn)[0]
                raise NoSuchEntityException(
                    f"The {'' if kind == 'principal' else kind + ' '}policy with name {name} "
                    "cannot be found."
                )
            tx.delete_identity_policy(principal_arn, name)

    def tag_principal(self, principal_arn: str, tags: dict[str, str]) -> None:
        """Set (replace) a principal's tags: policies read them as aws:PrincipalTag/<key>."""
        if not PRINCIPAL_ARN.match(principal_arn):
            raise ValidationException(f"{principal_arn!r} is not an IAM principal ARN.")
        keytags.parse([{"TagKey": k, "TagValue": v} for k, v in tags.items()])
        with self._store.transaction() as tx:
            tx.put_document(PRINCIPAL_TAGS, principal_arn, json.dumps(tags, sort_keys=True))

    def remove(self, principal_arn: str) -> RemovedPrincipal:
        """The principal and everything that makes it one, in one transaction."""
        with self._store.transaction() as tx:
            keys = tx.principal_access_keys(principal_arn)
            policies = tx.identity_policies(principal_arn)
            tags = tx.get_document(PRINCIPAL_TAGS, principal_arn)
            if not keys and not policies and tags is None:
                raise no_such_principal(principal_arn)
            for key in keys:
                tx.delete_access_key(key.access_key_id)
            for name in policies:
                tx.delete_identity_policy(principal_arn, name)
            if tags is not None:
                tx.delete_document(PRINCIPAL_TAGS, principal_arn)
            revoked = [
                g.grant_id for g in tx.list_grants(None) if g.grantee_principal == principal_arn
            ]
            for grant_id in revoked:
                tx.delete_grant(grant_id)
        for key in keys:
            self._forget(key.access_key_id)
        return RemovedPrincipal(
            principal_arn,
            [k.access_key_id for k in keys],
            list(policies),
            json.loads(tags) if tags else {},
            revoked,
            self._key_policies_naming(principal_arn),
        )

    def _key_policies_naming(self, principal_arn: str) -> list[str]:
        found: list[str] = []
        after: str | None = None
        while True:
            page = self._store.list_keys(None, after, 1000)
            if not page:
                return found
            found += [
                r.arn for r in page if r.policy and _names(json.loads(r.policy), principal_arn)
            ]
            after = page[-1].key_id

    # -- access keys ---------------------------------------------------------------------

    def add(
        self,
        principal_arn: str,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> Credential:
        """Store an access key for a principal; generated when not given."""
        _check_arn(principal_arn)
        if access_key_id is None:
            access_key_id = "AKIA" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))
        if not ACCESS_KEY_ID.fullmatch(access_key_id):
            raise ValidationException("An access key id is 1-128 letters, digits and underscores.")
        secret = secrets.token_urlsafe(30) if secret_access_key is None else secret_access_key
        if not secret:
            raise ValidationException("A secret access key must not be empty.")
        wrapped = wrap_secret(self._hsm, _aad(access_key_id, principal_arn), secret)
        with self._store.transaction() as tx:
            if len(tx.principal_access_keys(principal_arn)) >= MAX_ACCESS_KEYS:
                raise IamLimitExceededException(
                    f"Cannot exceed quota for AccessKeysPerUser: {MAX_ACCESS_KEYS}"
                )
            if tx.get_access_key(access_key_id) is not None:
                raise AlreadyExistsException(f"Access key {access_key_id} already exists.")
            tx.put_access_key(AccessKey(access_key_id, principal_arn, wrapped, self._clock()))
        self._forget(access_key_id)
        return Credential(access_key_id, secret, principal_arn)

    def access_keys(self, principal_arn: str | None = None) -> list[AccessKey]:
        """A principal's access keys, oldest first; every principal's without one."""
        if principal_arn is None:
            return self._store.list_access_keys()
        if not known_principal(self._store, principal_arn):
            raise no_such_principal(principal_arn)
        return self._store.principal_access_keys(principal_arn)

    def access_key(self, access_key_id: str) -> AccessKey:
        found = self._store.get_access_key(access_key_id)
        if found is None:
            raise _no_such_key(access_key_id)
        return found

    def set_status(self, access_key_id: str, status: str) -> None:
        """Active or Inactive (IAM's UpdateAccessKey); the same status again is no change."""
        if status not in (ACTIVE, INACTIVE):
            raise ValidationException(
                f"1 validation error detected: Value '{status}' at 'status' failed to satisfy "
                "constraint: Member must satisfy enum value set: [Active, Inactive]"
            )
        with self._store.transaction() as tx:
            found = tx.get_access_key(access_key_id)
            if found is None:
                raise _no_such_key(access_key_id)
            if found.status != status:
                tx.put_access_key(replace(found, status=status))
        self._forget(access_key_id)

    def delete_access_key(self, access_key_id: str) -> None:
        """As IAM's DeleteAccessKey: an active key may be deleted without disabling it."""
        with self._store.transaction() as tx:
            if tx.get_access_key(access_key_id) is None:
                raise _no_such_key(access_key_id)
            tx.delete_access_key(access_key_id)
        self._forget(access_key_id)

    # -- the verifier's side -------------------------------------------------------------

    def lookup(self, access_key_id: str) -> Credential | None:
        """The active credential of an access key id, or None (unknown or inactive)."""
        if not ACCESS_KEY_ID.fullmatch(access_key_id):
            return None  # never stored: no database read for it
        active = self._cache.get(access_key_id, lambda before: self._load(access_key_id, before))
        return None if active is None else active.credential

    def _load(self, access_key_id: str, before: _Active | None) -> _Active | None:
        stored = self._store.get_access_key(access_key_id)
        if stored is None or stored.status != ACTIVE:
            return None
        if (
            before is not None
            and before.wrapped_secret == stored.wrapped_secret
            and before.credential.principal_arn == stored.principal_arn
        ):
            return before  # the same secret: no token call to unwrap it
        secret = unwrap_secret(
            self._hsm, _aad(stored.access_key_id, stored.principal_arn), stored.wrapped_secret
        )
        return _Active(
            Credential(access_key_id, secret, stored.principal_arn), stored.wrapped_secret
        )

    def record_use(self, access_key_id: str, region: str) -> None:
        """A request this key signed was verified: stamp its last use, at most every
        LAST_USED_SECONDS. A failed stamp is logged, never the request's failure."""
        now = time.monotonic()
        with self._lock:
            if self._next_stamp.get(access_key_id, 0.0) > now:
                return
            if len(self._next_stamp) >= _CACHE_LIMIT:
                self._next_stamp.clear()
            self._next_stamp[access_key_id] = now + LAST_USED_SECONDS
        try:
            with self._store.transaction() as tx:
                tx.record_access_key_use(access_key_id, self._clock(), region)
        except KMSError as exc:
            log.warning("last use of access key %s not recorded: %s", access_key_id, exc.code)

    def _forget(self, access_key_id: str) -> None:
        self._cache.forget(access_key_id)
