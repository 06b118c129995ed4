"""hsmkms: an AWS-KMS-compatible key manager whose keys live in a PKCS#11 token."""

from hsmkms.errors import KMSError
from hsmkms.library import KeyManager

__all__ = ["KMSError", "KeyManager"]
__version__ = "0.1.0"
