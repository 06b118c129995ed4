#!/usr/bin/env python3
"""XKS proxy benchmark: `hsmkms serve` answering XKS Encrypt (32-byte plaintext with
AAD, as AWS KMS sends for a data key) and Decrypt, from the signing load generator
(scripts/loadgen.py, SigV4 service kms-xks-proxy). AWS KMS gives a proxy 250 ms per
request and up to 1,800 requests/s by default: the targets.

    python scripts/bench_xks.py [--seconds 5] [--concurrency 1,16]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import PathSigner, Target, run_signed

PLAINTEXT = os.urandom(32)
AAD = os.urandom(64)
METADATA = {
    "awsPrincipalArn": "arn:aws:iam::123456789012:user/bench",
    "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "kmsOperation": "GenerateDataKey",
    "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae",
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,16")
    args = parser.parse_args()
    import httpx
    from bench import _free_port, _wait_for, run_cli

    workdir = Path(tempfile.mkdtemp(prefix="hsmkms-bench-xks-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HSMKMS_", "SOFTHSM2_"))}
    env.update(HSMKMS_DATA_DIR=str(workdir / "data"), HSMKMS_MAINTENANCE_SECONDS="0")

    def cli(*words: str) -> Any:
        return run_cli(env, *words)

    cli("init")
    key_id = str(cli("key", "create", "--description", "xks bench")["KeyMetadata"]["KeyId"])
    credential = cli("xks", "credential", "add")["XksProxyAuthenticationCredential"]
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "hsmkms.cli", "serve", "--port", str(port)], env=env
    )
    try:
        _wait_for(f"http://127.0.0.1:{port}/healthz", server)
        target = Target("127.0.0.1", port, credential["AccessKeyId"],
                        credential["RawSecretAccessKey"])  # fmt: skip
        encrypt = {
            "requestMetadata": METADATA,
            "plaintext": _b64(PLAINTEXT),
            "additionalAuthenticatedData": _b64(AAD),
            "encryptionAlgorithm": "AES_GCM",
        }
        path = f"/xks/kms/xks/v1/keys/{key_id}/"
        signer = PathSigner(target, path + "encrypt", "kms-xks-proxy", json.dumps(encrypt).encode())
        sealed = httpx.post(f"http://127.0.0.1:{port}{signer.path}", content=signer.body,
                            headers=_headers(signer.request()))  # fmt: skip
        assert sealed.status_code == 200, sealed.text
        decrypt = {**encrypt, **sealed.json()}
        del decrypt["plaintext"]
        cases = {
            "Encrypt": signer,
            "Encrypt+CDIV": PathSigner(target, path + "encrypt", "kms-xks-proxy", json.dumps(
                {**encrypt, "ciphertextDataIntegrityValueAlgorithm": "SHA_256"}).encode()),
            "Decrypt": PathSigner(target, path + "decrypt", "kms-xks-proxy",
                                  json.dumps(decrypt).encode()),
        }  # fmt: skip
        print(f"XKS over HTTP, 32-byte plaintext + 64-byte AAD, {args.seconds:.1f} s per cell, "
              f"{os.cpu_count()} cores")  # fmt: skip
        print(f"{'operation':<14}{'conc':>5}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
        for name, case in cases.items():
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                result = run_signed(case, concurrency, args.seconds)
                print(f"{name:<14}{concurrency:>5}{result.rate:>10,.0f}{result.p50_ms:>9.2f}"
                      f"{result.p99_ms:>9.2f}{result.errors:>8}")  # fmt: skip
        print("targets (AWS KMS's defaults): >= 1,800 req/s at 16, p99 < 250 ms, no errors")
    finally:
        server.terminate()
        server.wait(timeout=10)


def _headers(raw: bytes) -> dict[str, str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]
    return dict(line.split(": ", 1) for line in head if not line.lower().startswith("content-l"))


if __name__ == "__main__":
    main()
