#!/usr/bin/env python3
"""`make run`: make sure a development principal exists and say how to call the API.

The secret access key is printed once, when the principal's key is created; it is
stored only wrapped by a token key. Lost it? `hsmkms principal add --arn ...`.
"""

from __future__ import annotations

import os

from hsmkms.bootstrap import build_key_manager
from hsmkms.config import load_settings
from hsmkms.policy.principals import ADMIN_POLICY, CredentialStore


def main() -> None:
    settings = load_settings()
    host, port = os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8080")
    endpoint = f"http://{host}:{port}"
    arn = f"arn:aws:iam::{settings.account_id}:user/dev"
    km = build_key_manager(settings)
    try:
        existing = [k for k in km.store.list_access_keys() if k.principal_arn == arn]
        print(f"\nhsmkms KMS endpoint: {endpoint}  (region {settings.region})")
        if existing:
            print(f"principal {arn}, access key {existing[0].access_key_id}")
            print("(its secret was printed when it was created; for a new key pair run")
            print(f"  hsmkms principal add --arn {arn})")
        else:
            credentials = CredentialStore(km.store, km.hsm)
            credential = credentials.add(arn)
            credentials.attach_policy(arn, "kms-admin", ADMIN_POLICY)
            print(f"principal {arn} created; its key pair (shown only now):")
            print(f"  export AWS_ACCESS_KEY_ID={credential.access_key_id}")
            print(f"  export AWS_SECRET_ACCESS_KEY={credential.secret_access_key}")
            print(f"  export AWS_DEFAULT_REGION={settings.region}")
        # After `aws sso login` the shell has a session token, which every client sends.
        print("  unset AWS_SESSION_TOKEN AWS_SECURITY_TOKEN   # hsmkms uses no session tokens")
        if os.environ.get("AWS_SESSION_TOKEN") or os.environ.get("AWS_SECURITY_TOKEN"):
            print("warning: AWS_SESSION_TOKEN is set here: hsmkms refuses requests carrying it")
        print(f"then: aws kms create-key --endpoint-url {endpoint} --description demo\n")
    finally:
        km.close()


if __name__ == "__main__":
    main()
