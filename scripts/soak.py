#!/usr/bin/env python3
"""Soak: mixed KMS operations (keys of every family, aliases, grants, tags, policies,
rotations, data keys) at concurrency 32 against two `hsmkms serve` nodes that
share one PostgreSQL database and one SoftHSM2 token, for a bounded time. Reports
throughput, errors by code and both nodes' RSS over time. Goal: zero errors, flat memory.

    python scripts/soak.py [--seconds 120] [--concurrency 32]

Everything runs on this machine: a throwaway PostgreSQL server (Debian's package, as the
tests start it), a fresh data dir and token, loopback ports.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

from tests.support.pg import PgServer, server_bin  # noqa: E402

ARN = "arn:aws:iam::111122223333:user/soak"
ADMIN = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}'  # noqa: E501
SPECS = [("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"), ("RSA_2048", "SIGN_VERIFY"),
         ("ECC_NIST_P256", "SIGN_VERIFY"), ("HMAC_256", "GENERATE_VERIFY_MAC")]  # fmt: skip


def cli(env: dict[str, str], *args: str) -> Any:
    command = [sys.executable, "-m", "hsmkms.cli", *args]
    out = subprocess.run(
        command, env=env, check=True, capture_output=True, text=True, cwd=env["HSMKMS_DATA_DIR"]
    ).stdout
    return json.loads(out) if out.strip() else None


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Soak:
    def __init__(self, clients: list[Any]) -> None:
        self.clients = clients
        self.keys: dict[str, list[str]] = {spec: [] for spec, _ in SPECS}
        self.lock = threading.Lock()
        self.done = collections.Counter[str]()
        self.errors = collections.Counter[str]()

    def setup(self) -> None:
        for spec, usage in SPECS:
            for _ in range(3):
                meta = self.clients[0].create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]
                self.keys[spec].append(meta["KeyId"])

    def one(self, client: Any, rng: random.Random) -> str:
        roll = rng.random()
        sym = rng.choice(self.keys["SYMMETRIC_DEFAULT"])
        if roll < 0.40:
            blob = client.encrypt(KeyId=sym, Plaintext=b"soak", EncryptionContext={"k": "v"})
            client.decrypt(CiphertextBlob=blob["CiphertextBlob"], EncryptionContext={"k": "v"})
            return "Encrypt+Decrypt"
        if roll < 0.55:
            key = rng.choice(self.keys[rng.choice(["RSA_2048", "ECC_NIST_P256"])])
            algorithm = "RSASSA_PSS_SHA_256" if key in self.keys["RSA_2048"] else "ECDSA_SHA_256"
            sig = client.sign(KeyId=key, Message=b"m", SigningAlgorithm=algorithm)["Signature"]
            client.verify(KeyId=key, Message=b"m", Signature=sig, SigningAlgorithm=algorithm)
            return "Sign+Verify"
        if roll < 0.65:
            key = rng.choice(self.keys["HMAC_256"])
            mac = client.generate_mac(KeyId=key, Message=b"m", MacAlgorithm="HMAC_SHA_256")
            client.verify_mac(KeyId=key, Message=b"m", MacAlgorithm="HMAC_SHA_256", Mac=mac["Mac"])
            return "Mac"
        if roll < 0.75:
            name = f"alias/soak-{rng.randrange(8)}"
            try:
                client.update_alias(AliasName=name, TargetKeyId=sym)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "NotFoundException":
                    raise
                try:
                    client.create_alias(AliasName=name, TargetKeyId=sym)
                except ClientError as again:  # the other node created it meanwhile
                    if again.response["Error"]["Code"] != "AlreadyExistsException":
                        raise
            client.encrypt(KeyId=name, Plaintext=b"via alias")
            return "Alias"
        if roll < 0.85:
            grant = client.create_grant(KeyId=sym, GranteePrincipal=ARN, Operations=["Encrypt"])
            client.revoke_grant(KeyId=sym, GrantId=grant["GrantId"])
            return "Grant"
        if roll < 0.92:
            client.tag_resource(
                KeyId=sym, Tags=[{"TagKey": f"t{rng.randrange(20)}", "TagValue": "v"}]
            )
            client.describe_key(KeyId=sym)
            return "Tag"
        if roll < 0.95:
            client.put_key_policy(KeyId=sym, PolicyName="default", Policy=client.get_key_policy(
                KeyId=sym, PolicyName="default")["Policy"])  # fmt: skip
            return "Policy"
        if roll < 0.98:
            client.generate_data_key(KeyId=sym, KeySpec="AES_256")
            return "DataKey"
        # A fresh key rotated twice, both nodes serving it (rotations are capped per key).
        fresh = client.create_key()["KeyMetadata"]["KeyId"]
        blob = client.encrypt(KeyId=fresh, Plaintext=b"v1")["CiphertextBlob"]
        for _ in range(2):
            self.clients[rng.randrange(len(self.clients))].rotate_key_on_demand(KeyId=fresh)
        other = self.clients[rng.randrange(len(self.clients))]
        assert other.decrypt(CiphertextBlob=blob)["Plaintext"] == b"v1"
        other.encrypt(KeyId=fresh, Plaintext=b"v3")
        return "Rotate"

    def worker(self, index: int, until: float) -> None:
        rng = random.Random(index)
        client = self.clients[index % len(self.clients)]
        while time.monotonic() < until:
            try:
                name = self.one(client, rng)
                with self.lock:
                    self.done[name] += 1
            except ClientError as exc:
                error = exc.response["Error"]
                with self.lock:
                    self.errors[
                        f"{exc.operation_name}: {error['Code']}: {error['Message'][:80]}"
                    ] += 1
            except Exception as exc:  # a transport failure is an error too
                with self.lock:
                    self.errors[type(exc).__name__] += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    bindir = server_bin()
    if bindir is None:
        print("soak: PostgreSQL server binaries not found (apt-get install postgresql)")
        return 2
    pg = PgServer(bindir)
    pg.start()
    work = Path(tempfile.mkdtemp(prefix="hsmkms-soak-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        _, url = pg.create_database()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HSMKMS_", "SOFTHSM2_"))}
        env.update(HSMKMS_DATA_DIR=str(work / "data"), HSMKMS_DATABASE_URL=url,
                   HSMKMS_MAINTENANCE_SECONDS="0", PYTHONPATH=str(ROOT))  # fmt: skip
        (work / "data").mkdir()
        cli(env, "init")
        credential = cli(env, "principal", "add", "--arn", ARN)
        (work / "admin.json").write_text(ADMIN)
        cli(env, "principal", "attach-policy", ARN, str(work / "admin.json"))
        clients = []
        for n, port in enumerate((18931, 18932)):
            node_env = {**env, "HSMKMS_AUDIT_NODE_ID": f"soak-{n}"}
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "hsmkms.cli", "serve", "--port", str(port)],
                env=node_env, cwd=work))  # fmt: skip
            clients.append(boto3.client(
                "kms", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                aws_access_key_id=credential["AccessKeyId"],
                aws_secret_access_key=credential["SecretAccessKey"],
                config=Config(retries={"max_attempts": 1}, max_pool_connections=64)))  # fmt: skip
        time.sleep(3)
        soak = Soak(clients)
        soak.setup()
        until = time.monotonic() + args.seconds
        threads = [
            threading.Thread(target=soak.worker, args=(i, until)) for i in range(args.concurrency)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        print("t(s)  ops/s  errors  rss node0 MiB  rss node1 MiB")
        last = 0
        while any(t.is_alive() for t in threads):
            time.sleep(10)
            total = sum(soak.done.values())
            memory = "  ".join(f"{rss_mib(p.pid):13.1f}" for p in processes)
            rate = (total - last) / 10
            errors = sum(soak.errors.values())
            print(f"{time.monotonic() - started:5.0f} {rate:6.0f} {errors:7d} {memory}", flush=True)
            last = total
        elapsed = time.monotonic() - started
        print(json.dumps({"seconds": round(elapsed), "operations": dict(soak.done),
                          "ops_per_second": round(sum(soak.done.values()) / elapsed),
                          "errors": dict(soak.errors)}, indent=2))  # fmt: skip
        return 1 if soak.errors else 0
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=15)
        pg.stop()


if __name__ == "__main__":
    sys.exit(main())
