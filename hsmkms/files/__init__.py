"""Envelope encryption of files with a KMS key (the CLI's encrypt and decrypt)."""
