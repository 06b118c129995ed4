"""Which token a database belongs to (the token binding).

The first time a database is opened with a token (by `hsmkms init`, `serve`, `maintain`,
any other command, or the library through bootstrap.open_deployment), the two are bound:
a marker key is made in the token (token/marker.py) and the token's label, serial and
the marker's CKA_ID are recorded in the database. Every later opening checks that the
configured token holds that marker and refuses otherwise, with one line naming both
tokens. So a data dir pointed at another token, or at another deployment's database,
can neither adopt that database with a new token nor mark its keys missing.

A database from before this check has no binding yet: it is bound on its first opening,
unless it names keys none of whose material the token holds (then it is someone else's).
"""

from __future__ import annotations

from datetime import UTC, datetime

from hsmkms.errors import DeploymentMismatch
from hsmkms.store.base import MetadataStore
from hsmkms.store.model import KeyState, TokenBinding
from hsmkms.token import Token, destroy_marker, holds_marker, make_marker

# Keys an unbound database is checked by: the first page is enough to tell whose it is.
_SAMPLE_KEYS = 100
_REMEDY = (
    "refusing to use them together: point HSMKMS_TOKEN_LABEL (and HSMKMS_PKCS11_LIB) at the "
    "database's token, or HSMKMS_DATABASE_URL at this token's database"
)


def configured(hsm: Token) -> str:
    return f"token {hsm.token_label!r} (serial {hsm.info.serial or '?'})"


def check_or_bind(store: MetadataStore, hsm: Token) -> TokenBinding:
    """The database's token binding, made now if it has none; DeploymentMismatch when
    the configured token is not the database's."""
    binding = store.token_binding()
    if binding is None:
        binding = _bind(store, hsm)
    if not holds_marker(hsm, binding.marker):
        raise DeploymentMismatch(
            f"The database belongs to {binding.describe()}, but the configured "
            f"{configured(hsm)} does not hold its marker: {_REMEDY}."
        )
    return binding


def refuse_if_bound(store: MetadataStore, token_label: str) -> None:
    """Before a new token is made under `token_label`: a database that belongs to a token
    already is never handed to a new one."""
    binding = store.token_binding()
    if binding is not None:
        raise DeploymentMismatch(
            f"The database belongs to {binding.describe()}, but the configured token "
            f"{token_label!r} is not present; no new token is made for it: {_REMEDY}."
        )


def _bind(store: MetadataStore, hsm: Token) -> TokenBinding:
    _refuse_foreign_keys(store, hsm)
    marker = make_marker(hsm)
    mine = TokenBinding(hsm.token_label, hsm.info.serial, marker, datetime.now(UTC))
    try:
        with store.transaction() as writer:
            first = writer.token_binding()  # another node may have bound it meanwhile
            if first is None:
                writer.bind_token(mine)
    except BaseException:
        destroy_marker(hsm, marker)
        raise
    if first is not None:
        destroy_marker(hsm, marker)
        return first
    return mine


def _refuse_foreign_keys(store: MetadataStore, hsm: Token) -> None:
    """An unbound database that names keys of this token's own kind, none of which the
    token holds, was made with another token."""
    named = {
        record.key_id
        for record in store.list_keys(None, None, _SAMPLE_KEYS)
        if record.custom_key_store_id is None and record.state is not KeyState.PENDING_IMPORT
    }
    if named and named.isdisjoint(ref.key_id for ref in hsm.material_refs()):
        raise DeploymentMismatch(
            f"The database (bound to no token yet) names {len(named)} key(s) whose material "
            f"the configured {configured(hsm)} does not hold, so it was made with another "
            f"token: {_REMEDY}."
        )
