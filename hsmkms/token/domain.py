"""The security domain: one AES key, trusted by the token (CKA_TRUSTED), shared by
every token of the domain and split into custodian shares (Shamir, M of N).

Material made with Custody.DOMAIN (CKA_WRAP_WITH_TRUSTED) can leave a token only
wrapped under this key, and so only into another token of the same domain.

Only the token's SO may set CKA_TRUSTED, and SoftHSM2 lets the SO create public
objects only (CKA_PRIVATE=true: CKR_USER_NOT_LOGGED_IN) and refuses CKA_TRUSTED on
an existing object (CKR_ATTRIBUTE_READ_ONLY). A public token object would sit
unencrypted in SoftHSM2's store, so the SO makes a *session* object, and the user
copies it into a private token object (the copy keeps CKA_TRUSTED) and destroys the
session object: the key value never reaches the disk in plaintext. The copy is made
non-modifiable (its usages are fixed: no CKA_DECRYPT), and the SO gives the key
CKA_UNWRAP_TEMPLATE and CKA_WRAP_TEMPLATE (templates.domain_key_templates), so a holder
of the user PIN can neither unwrap material under it as readable nor wrap other keys.
Before the SO logs in, the token is probed (token/enforcement.py) for whether it
enforces all that; a token that does not is refused unless the caller accepts it.

The key value passes through Python twice only: at creation (it must be split) and
at join (reassembled). It is dropped as soon as the token holds it and is never
logged. PKCS#11 login state is per process and token: these functions log in as SO,
so no user session of this process may be open on the token (run them before an
Hsm opens it, e.g. from the CLI).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from Crypto.Protocol.SecretSharing import Shamir
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.exceptions import PKCS11Error

from hsmkms.errors import (
    AccessDeniedException,
    KMSInvalidStateException,
    UnsupportedOperationException,
    ValidationException,
)
from hsmkms.token.arrays import ArrayAttributes
from hsmkms.token.enforcement import domain_key_gaps, unenforced_protections
from hsmkms.token.faults import to_kms_error
from hsmkms.token.library import find_token, load_module
from hsmkms.token.pool import PooledSession
from hsmkms.token.templates import Custody, custody_attributes, domain_key_templates

if TYPE_CHECKING:
    from hsmkms.token.interface import Token

DOMAIN_LABEL = "hsmkms-internal/domain"
_STAGING_LABEL = "hsmkms-internal/domain-staging"
KEY_BYTES = 32
BLOCK = 16  # pycryptodome's Shamir shares 16-byte secrets: the key is two blocks
MAX_CUSTODIANS = 16
SHARE_FORMAT = 1
# The check value: SHA-256 of RFC 3394 wrapping of a fixed, public 32-byte value under
# the domain key. Computed in software from shares, and inside the token (CKM_AES_KEY_WRAP
# is the same on every token, unlike the RFC 5649 mechanism numbers).
_CHECK_PLAINTEXT = hashlib.sha256(b"hsmkms security domain check value").digest()


@dataclass(frozen=True)
class DomainInfo:
    domain_id: str
    check_value: str
    # Protections the token does not enforce, accepted when the key was installed.
    unenforced: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class NewDomain:
    domain_id: str
    check_value: str
    threshold: int
    shares: list[str]  # one per custodian; shown once, never stored by hsmkms
    unenforced: tuple[str, ...] = ()  # accepted protections the token does not enforce


def check_value_of(value: bytes) -> str:
    return _check_digest(aes_key_wrap(value, _CHECK_PLAINTEXT))


def _check_digest(wrapped: bytes) -> str:
    return hashlib.sha256(b"hsmkms-domain-kcv/" + wrapped).hexdigest()[:16]


# -- shares (pure) ------------------------------------------------------------------


def _share_digest(fields: dict[str, Any]) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:8]


def check_quorum(custodians: int, threshold: int) -> None:
    if not 2 <= threshold <= custodians <= MAX_CUSTODIANS:
        raise ValidationException(
            f"A security domain needs 2 <= threshold <= custodians <= {MAX_CUSTODIANS} "
            f"(got threshold {threshold}, custodians {custodians})."
        )


def split_key(value: bytes, domain_id: str, custodians: int, threshold: int) -> list[str]:
    """The custodian shares of a domain key, as JSON strings."""
    if len(value) != KEY_BYTES:
        raise ValueError("a domain key is 32 bytes")
    check_quorum(custodians, threshold)
    blocks = [Shamir.split(threshold, custodians, value[i : i + BLOCK]) for i in (0, BLOCK)]
    check = check_value_of(value)
    shares = []
    for (index, first), (same_index, second) in zip(*blocks, strict=True):
        assert index == same_index
        fields: dict[str, Any] = {
            "hsmkms_domain_share": SHARE_FORMAT, "domain": domain_id, "index": index,
            "threshold": threshold, "custodians": custodians, "check_value": check,
            "share": (first + second).hex(),
        }  # fmt: skip
        shares.append(json.dumps({**fields, "digest": _share_digest(fields)}))
    return shares


def _parse_share(position: int, text: str) -> dict[str, Any]:
    try:
        fields = json.loads(text)
        digest = fields.pop("digest")
        ok = fields.get("hsmkms_domain_share") == SHARE_FORMAT and len(
            bytes.fromhex(fields["share"])
        ) == 2 * BLOCK  # fmt: skip
        int(fields["index"]), int(fields["threshold"]), str(fields["domain"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValidationException(f"Share {position} is not an hsmkms domain share.") from exc
    if not ok:
        raise ValidationException(f"Share {position} is not an hsmkms domain share.")
    if digest != _share_digest(fields):
        raise ValidationException(
            f"Share {position} (index {fields['index']}) is damaged: its digest does not match."
        )
    return dict(fields)


def combine_shares(shares: Sequence[str]) -> tuple[DomainInfo, bytes]:
    """Reassemble a domain key from M or more shares of one domain; checks the result
    against the domain's check value (a wrong or tampered share fails here)."""
    parsed = [_parse_share(n, text) for n, text in enumerate(shares, start=1)]
    if not parsed:
        raise ValidationException("No domain shares were given.")
    first = parsed[0]
    key = ("domain", "threshold", "custodians", "check_value")
    if any(tuple(p[k] for k in key) != tuple(first[k] for k in key) for p in parsed):
        raise ValidationException("The shares belong to different security domains.")
    indexes = [int(p["index"]) for p in parsed]
    if len(set(indexes)) != len(indexes):
        raise ValidationException("The same share was given more than once.")
    if len(parsed) < int(first["threshold"]):
        raise ValidationException(
            f"{len(parsed)} share(s) given; domain {first['domain']} needs "
            f"{first['threshold']} of its {first['custodians']}."
        )
    raw = [(int(p["index"]), bytes.fromhex(p["share"])) for p in parsed]
    value = b"".join(
        Shamir.combine([(index, data[i : i + BLOCK]) for index, data in raw]) for i in (0, BLOCK)
    )
    if check_value_of(value) != first["check_value"]:
        raise ValidationException(
            "The shares do not reassemble the domain key (check value mismatch): "
            "a share is wrong or was tampered with."
        )
    return DomainInfo(str(first["domain"]), str(first["check_value"])), value


# -- installing the key (SO + user) -------------------------------------------------------


def create_domain(
    module_path: str, token_label: str, so_pin: str, user_pin: str, custodians: int,
    threshold: int, *, accept_unenforced: bool = False, init_params: str | None = None,
) -> NewDomain:  # fmt: skip
    """Make a domain key from the token's RNG, install it in the token and split it.
    accept_unenforced: go on where the token does not enforce what protects the key
    (listed in the result); otherwise such a token is refused before anything changes."""
    check_quorum(custodians, threshold)
    with _token_sessions(module_path, token_label, init_params) as (token, holder):
        domain_id = bytes(holder.generate_random(64)).hex()
        value = bytes(holder.generate_random(KEY_BYTES * 8))
        shares = split_key(value, domain_id, custodians, threshold)
        info = DomainInfo(domain_id, check_value_of(value))
        gaps = _install(token, holder, so_pin, user_pin, value, info, accept_unenforced)
        del value
    return NewDomain(info.domain_id, info.check_value, threshold, shares, gaps)


def join_domain(
    module_path: str, token_label: str, so_pin: str, user_pin: str, shares: Sequence[str],
    *, accept_unenforced: bool = False, init_params: str | None = None,
) -> DomainInfo:  # fmt: skip
    """Install the domain key reassembled from M shares in another token."""
    info, value = combine_shares(shares)
    try:
        with _token_sessions(module_path, token_label, init_params) as (token, holder):
            gaps = _install(token, holder, so_pin, user_pin, value, info, accept_unenforced)
    finally:
        del value
    return DomainInfo(info.domain_id, info.check_value, gaps)


@contextmanager
def _token_sessions(
    module_path: str, token_label: str, init_params: str | None
) -> Iterator[tuple[Any, Any]]:
    """The token and a session without login that holds the staging object: closing it
    destroys the session object whatever happens."""
    token = find_token(load_module(module_path, init_params), token_label)
    if token is None:
        raise KMSInvalidStateException(f"No PKCS#11 token labelled {token_label!r}.")
    try:
        holder = token.open(rw=True, attribute_mapper=ArrayAttributes())
    except PKCS11Error as exc:
        raise to_kms_error(exc) from exc
    try:
        yield token, holder
    except PKCS11Error as exc:
        raise to_kms_error(exc) from exc
    finally:
        with suppress(PKCS11Error):
            holder.close()


def _login(token: Any, **pin: str) -> Any:
    """A logged-in session that packs attribute arrays (ArrayAttributes)."""
    try:
        return token.open(rw=True, attribute_mapper=ArrayAttributes(), **pin)
    except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange, p11.PinLocked) as exc:
        who = "security officer" if "so_pin" in pin else "user"
        raise AccessDeniedException(f"The token refused the {who} PIN.") from exc
    except (p11.UserAlreadyLoggedIn, p11.AnotherUserAlreadyLoggedIn) as exc:
        raise KMSInvalidStateException(
            "This process already has a session logged in to the token; security domain "
            "commands must run before hsmkms opens the token."
        ) from exc
    except PKCS11Error as exc:
        # python-pkcs11 reports CKR_USER_TYPE_INVALID as a bare PKCS11Error with this text.
        if type(exc) is PKCS11Error and str(exc).startswith("User type invalid"):
            raise UnsupportedOperationException(
                "The token has no security officer login (CKR_USER_TYPE_INVALID), so it "
                "cannot hold a trusted domain key."
            ) from exc
        raise


def _refuse_unless_accepted(gaps: Sequence[str], accepted: bool, what: str) -> None:
    if gaps and not accepted:
        raise UnsupportedOperationException(
            f"{what} does not enforce {', '.join(gaps)}: a holder of the user PIN could take "
            "domain-custody key material out of it in plaintext. Refused; "
            "--accept-unenforced-templates accepts this (recorded in the audit trail)."
        )


def _install(
    token: Any, holder: Any, so_pin: str, user_pin: str, value: bytes, info: DomainInfo,
    accept_unenforced: bool,
) -> tuple[str, ...]:  # fmt: skip
    """Install the key; returns the protections the token does not enforce (accepted)."""
    user = _login(token, user_pin=user_pin)
    try:
        existing = _find_domain_key(user)
        if existing is not None:
            current = bytes(existing[Attribute.ID]).hex()
            raise KMSInvalidStateException(
                f"The token already belongs to security domain {current}."
            )
        gaps = unenforced_protections(user)  # before the SO logs in or anything is made
    finally:
        user.close()
    _refuse_unless_accepted(gaps, accept_unenforced, "This token")
    so = _login(token, so_pin=so_pin)
    try:
        holder.create_object({
            Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
            Attribute.VALUE: value, Attribute.TOKEN: False, Attribute.PRIVATE: False,
            Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.TRUSTED: True,
            Attribute.WRAP: True, Attribute.UNWRAP: True, Attribute.ENCRYPT: False,
            Attribute.DECRYPT: False, Attribute.SIGN: False, Attribute.VERIFY: False,
            Attribute.DERIVE: False, Attribute.LABEL: _STAGING_LABEL, **domain_key_templates(),
        })  # fmt: skip
    finally:
        so.close()
    user = _login(token, user_pin=user_pin)
    try:
        (staged,) = list(user.get_objects({Attribute.LABEL: _STAGING_LABEL}))
        try:
            # MODIFIABLE last: SoftHSM2 applies the copy template in order, and refuses
            # the label and id once the copy is no longer modifiable.
            key = staged.copy({
                Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.LABEL: DOMAIN_LABEL,
                Attribute.ID: bytes.fromhex(info.domain_id), Attribute.MODIFIABLE: False,
            })  # fmt: skip
        finally:
            staged.destroy()
        if not key[Attribute.TRUSTED] or _token_check_value(user, key) != info.check_value:
            key.destroy()
            raise KMSInvalidStateException("The token did not install the domain key as given.")
        late = [gap for gap in domain_key_gaps(user, key) if gap not in gaps]
        if late and not accept_unenforced:
            key.destroy()
        _refuse_unless_accepted(late, accept_unenforced, "The installed domain key")
        return (*gaps, *late)
    finally:
        user.close()


def _find_domain_key(session: Any) -> Any | None:
    found = list(
        session.get_objects(
            {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: DOMAIN_LABEL}
        )
    )
    return found[0] if found else None


def _token_check_value(session: Any, key: Any) -> str:
    # Domain custody: the only kind of key the domain key's CKA_WRAP_TEMPLATE lets it wrap.
    probe = session.create_object({
        Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
        Attribute.VALUE: _CHECK_PLAINTEXT, Attribute.TOKEN: False,
        **custody_attributes(Custody.DOMAIN),
    })  # fmt: skip
    try:
        return _check_digest(bytes(key.wrap_key(probe, mechanism=Mechanism.AES_KEY_WRAP)))
    finally:
        probe.destroy()


# -- using the domain through an Hsm --------------------------------------------------


def domain_key(pooled: PooledSession) -> tuple[Any, str]:
    """The domain key object and domain id; KMSInvalidStateException without a domain."""
    key = _find_domain_key(pooled.session)
    if key is None or not key[Attribute.TRUSTED]:
        raise KMSInvalidStateException("The token does not belong to a security domain.")
    return key, bytes(key[Attribute.ID]).hex()


def domain_info(hsm: Token) -> DomainInfo | None:
    """The token's domain and its check value (computed inside the token), or None."""

    def read(pooled: PooledSession) -> DomainInfo | None:
        if _find_domain_key(pooled.session) is None:
            return None
        key, domain_id = domain_key(pooled)  # refuses an object that is not trusted
        return DomainInfo(domain_id, _token_check_value(pooled.session, key))

    return hsm.run(read)


def domain_key_modifiable(hsm: Token) -> bool | None:
    """Whether the token's domain key can still be changed: installed by an hsmkms from
    before keys were made non-modifiable and template-bound (None: no domain)."""

    def read(pooled: PooledSession) -> bool | None:
        key = _find_domain_key(pooled.session)
        return None if key is None else bool(key[Attribute.MODIFIABLE])

    return hsm.run(read)


def custody_for(hsm: Token) -> Custody:
    """Custody for new material: wrappable under the domain key once there is one."""
    return Custody.DOMAIN if domain_info(hsm) is not None else Custody.NEVER_EXTRACTABLE
