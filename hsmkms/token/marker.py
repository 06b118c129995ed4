"""The marker that proves which token a database belongs to (hsmkms/binding.py).

An AES key with a random CKA_ID, labelled `hsmkms-internal/deployment/<id hex>`: a key
rather than a data object because NSS softokn keeps no data objects. It can do nothing
(every usage false), is sensitive and never extractable, and is never used: only its
presence on a token means something. Outside the `hsmkms/` label space, so reconcile
and backups leave it alone; several deployments sharing one token each have their own.
"""

from __future__ import annotations

import os

from pkcs11 import KeyType, Mechanism

from hsmkms.token.interface import Token
from hsmkms.token.pool import PooledSession
from hsmkms.token.templates import Custody, InternalRef, secret_key_template

MARKER_PREFIX = "hsmkms-internal/deployment/"
MARKER_ID_BYTES = 16


def marker_ref(marker: str) -> InternalRef:
    """The token object of a marker named by its CKA_ID in hex."""
    return InternalRef(MARKER_PREFIX + marker, bytes.fromhex(marker))


def make_marker(hsm: Token) -> str:
    """A new marker in the token; returns its CKA_ID in hex."""
    hsm.mechanisms.require(Mechanism.AES_KEY_GEN)
    marker = os.urandom(MARKER_ID_BYTES).hex()
    ref = marker_ref(marker)
    template = secret_key_template(
        ref, encrypt=False, sign=False, custody=Custody.NEVER_EXTRACTABLE
    )

    def generate(pooled: PooledSession) -> None:
        pooled.session.generate_key(
            KeyType.AES, 256, store=True, label=ref.label, id=ref.cka_id, template=template
        )

    hsm.run(generate)
    return marker


def holds_marker(hsm: Token, marker: str) -> bool:
    return any(fact.object_class == "SECRET_KEY" for fact in hsm.facts(marker_ref(marker)))


def destroy_marker(hsm: Token, marker: str) -> None:
    hsm.destroy(marker_ref(marker))
