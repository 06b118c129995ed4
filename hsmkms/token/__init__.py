"""The only package that imports pkcs11, and its one face: everything above token/
imports from here, never from the modules inside (tests/test_layering.py checks it).

`Token` (token/interface.py) is the Protocol of what the packages above call on a
token; `Hsm` is its implementation, opened by the entry points. The rest are the
token-side functions and names they use: material references and kinds, security
domain, backup wrapping and seals, imports, the audit key, the deployment marker.
"""

from hsmkms.token.audit import KEY_LABEL as AUDIT_KEY_LABEL
from hsmkms.token.audit import TokenAuditAnchor
from hsmkms.token.audit import key_ref as audit_key_ref
from hsmkms.token.backup import (
    WrappedMaterial,
    carry_refusal,
    discard,
    holds,
    unwrap_material,
    wrap_material,
)
from hsmkms.token.capacity import token_capacity
from hsmkms.token.domain import (
    create_domain,
    custody_for,
    domain_info,
    domain_key_modifiable,
    join_domain,
)
from hsmkms.token.faults import TokenLoginFailed, TokenNotFound
from hsmkms.token.hsm import GCM_IV_BYTES, Hsm, ObjectFacts, TokenInfo
from hsmkms.token.importing import (
    WRAPPING_ALGORITHMS,
    WRAPPING_KEY_SPECS,
    create_wrapping_key,
    destroy_wrapping_key,
    ensure_same,
    import_material,
)
from hsmkms.token.importing import require as require_wrapping
from hsmkms.token.interface import Token
from hsmkms.token.kinds import CURVES, Aes, EcPair, EdPair, HmacKey, MaterialKind, RsaPair
from hsmkms.token.library import NotAPkcs11Module, find_token, load_module, rescan_tokens
from hsmkms.token.marker import destroy_marker, holds_marker, make_marker
from hsmkms.token.seal import Seal
from hsmkms.token.seal import seal as seal_payload
from hsmkms.token.seal import verify as verify_seal
from hsmkms.token.templates import (
    CREDENTIALS_KEY,
    Custody,
    InternalRef,
    MaterialRef,
    ObjectName,
    key_uuid_bytes,
)

__all__ = [
    "AUDIT_KEY_LABEL",
    "CREDENTIALS_KEY",
    "CURVES",
    "GCM_IV_BYTES",
    "WRAPPING_ALGORITHMS",
    "WRAPPING_KEY_SPECS",
    "Aes",
    "Custody",
    "EcPair",
    "EdPair",
    "HmacKey",
    "Hsm",
    "InternalRef",
    "MaterialKind",
    "MaterialRef",
    "NotAPkcs11Module",
    "ObjectFacts",
    "ObjectName",
    "RsaPair",
    "Seal",
    "Token",
    "TokenAuditAnchor",
    "TokenInfo",
    "TokenLoginFailed",
    "TokenNotFound",
    "WrappedMaterial",
    "audit_key_ref",
    "carry_refusal",
    "create_domain",
    "create_wrapping_key",
    "custody_for",
    "destroy_marker",
    "destroy_wrapping_key",
    "discard",
    "domain_info",
    "domain_key_modifiable",
    "ensure_same",
    "find_token",
    "holds",
    "holds_marker",
    "import_material",
    "join_domain",
    "key_uuid_bytes",
    "load_module",
    "make_marker",
    "require_wrapping",
    "rescan_tokens",
    "seal_payload",
    "token_capacity",
    "unwrap_material",
    "verify_seal",
    "wrap_material",
]
