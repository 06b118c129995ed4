#!/usr/bin/env python3
"""`make run` until the HTTP server lands: a short tour through the library.

Uses the data dir `hsmkms init` prepared (HSMKMS_DATA_DIR, default ./.hsmkms).
"""

from __future__ import annotations

from hsmkms.bootstrap import build_key_manager
from hsmkms.config import load_settings
from hsmkms.errors import NotFoundException

ALIAS = "alias/hsmkms-demo"


def main() -> None:
    settings = load_settings()
    km = build_key_manager(settings)
    try:
        try:
            key = km.describe_key(key_id=ALIAS)["KeyMetadata"]
        except NotFoundException:
            key = km.create_key(description="hsmkms demo key")["KeyMetadata"]
            km.create_alias(alias_name=ALIAS, target_key_id=key["KeyId"])
        print(f"key      {key['Arn']} ({ALIAS}), state {key['KeyState']}")
        context = {"purpose": "demo"}
        sealed = km.encrypt(key_id=ALIAS, plaintext=b"hello, hsm", encryption_context=context)
        print(f"encrypt  {len(sealed['CiphertextBlob'])}-byte blob, made inside the token")
        opened = km.decrypt(ciphertext_blob=sealed["CiphertextBlob"], encryption_context=context)
        print(f"decrypt  {opened['Plaintext'].decode()!r}")
        print(f"random   {km.generate_random(number_of_bytes=16)['Plaintext'].hex()}")
        print(f"\nData dir {settings.data_dir}. Try: hsmkms key list | hsmkms --help")
    finally:
        km.close()


if __name__ == "__main__":
    main()
