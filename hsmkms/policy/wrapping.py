"""Secrets hsmkms must keep but cannot hash (SigV4 needs the secret itself to check a
signature): AES-GCM encrypted inside the token by an internal key, bound to what
they belong to through the additional data. Shared by the KMS principals' access
keys and the XKS proxy credentials.
"""

from __future__ import annotations

from hsmkms.token import CREDENTIALS_KEY, GCM_IV_BYTES, Token


def wrap_secret(hsm: Token, aad: bytes, secret: str) -> bytes:
    """IV || ciphertext || tag of the secret under the token's credentials key."""
    hsm.ensure_aes_key(CREDENTIALS_KEY)
    iv, body = hsm.gcm_encrypt(CREDENTIALS_KEY, aad, secret.encode())
    return iv + body


def unwrap_secret(hsm: Token, aad: bytes, wrapped: bytes) -> str:
    """The secret back; InvalidCiphertextException when wrapped or aad were altered."""
    return hsm.gcm_decrypt(
        CREDENTIALS_KEY, wrapped[:GCM_IV_BYTES], aad, wrapped[GCM_IV_BYTES:]
    ).decode()
