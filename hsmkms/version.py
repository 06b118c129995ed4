"""The installed hsmkms version (`hsmkms --version`)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def hsmkms_version() -> str:
    """The version of the installed distribution; "unknown" when running from a source
    tree that was never installed."""
    try:
        return version("hsmkms")
    except PackageNotFoundError:
        return "unknown"
