"""The XKS Proxy API specification's wire constants, shared by hsmkms's two XKS roles:
the proxy AWS KMS calls (hsmkms/xks/, hsmkms/api/xks_proxy.py) and the external key
store client that calls a proxy (hsmkms/keystores/external_*.py). One module, so the
two sides cannot drift apart on a name, a size or the integrity value.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

SERVICE = "kms-xks-proxy"  # the SigV4 service name of every XKS request
API_PATH = "kms/xks/v1"  # after the URI prefix: /<prefix>/kms/xks/v1/...
ALGORITHM = "AES_GCM"  # the one encryptionAlgorithm
CDIV_ALGORITHM = "SHA_256"  # the one ciphertextDataIntegrityValueAlgorithm
IV_BYTES, TAG_BYTES = 12, 16
MAX_METADATA_BYTES = 20  # ciphertextMetadata
HEALTH_STATUSES = frozenset({"ACTIVE", "DEGRADED", "UNAVAILABLE"})
# The specification's errorName values (its "Error codes" table).
ERROR_NAMES = frozenset(
    {
        "ValidationException",
        "InvalidStateException",
        "InvalidCiphertextException",
        "InvalidKeyUsageException",
        "AuthenticationFailedException",
        "AccessDeniedException",
        "KeyNotFoundException",
        "InvalidUriPathException",
        "ThrottlingException",
        "UnsupportedOperationException",
        "DependencyTimeoutException",
        "InternalException",
    }
)


class XksCiphertext(NamedTuple):
    """What an XKS Encrypt returns and Decrypt takes back."""

    ciphertext: bytes
    iv: bytes
    tag: bytes
    metadata: bytes  # ciphertextMetadata, b"" when the proxy sent none


def cdiv(aad: bytes, metadata: bytes, iv: bytes, ciphertext: bytes, tag: bytes) -> bytes:
    """The Ciphertext Data Integrity Value (Appendix C): SHA-256 over the fields, without
    lengths."""
    return hashlib.sha256(aad + metadata + iv + ciphertext + tag).digest()
