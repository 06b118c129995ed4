"""hsmkms: an AWS-KMS-compatible key manager whose keys live in a PKCS#11 token."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hsmkms.errors import KMSError
    from hsmkms.library import KeyManager

__all__ = ["KMSError", "KeyManager"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Imported when first asked for: `import hsmkms.config` (or the CLI's `--version`)
    # then costs what it uses, not the whole key manager.
    if name == "KeyManager":
        from hsmkms.library import KeyManager

        return KeyManager
    if name == "KMSError":
        from hsmkms.errors import KMSError

        return KMSError
    raise AttributeError(f"module 'hsmkms' has no attribute {name!r}")
