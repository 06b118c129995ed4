"""Backup and restore of a data dir: metadata snapshot + material wrapped under the
security domain key, sealed by the token (see archive.py)."""
