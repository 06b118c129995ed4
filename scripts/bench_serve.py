"""Serving benchmarks (called by scripts/bench.py):

mixed:   Encrypt (4 KiB) at concurrency 8 alone, then beside a loop of RSA-4096
         CreateKey calls; p50/p99 of Encrypt and their ratio (target: p99 within 2x).
workers: Encrypt (4 KiB) throughput of `hsmkms serve --workers N` for N = 1, 2, 4.

`--server-path DIR` serves from another checkout of hsmkms (for before/after).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from bench import PAYLOAD, _free_port, _wait_for, run_cli
from botocore.config import Config
from loadgen import Result, Target, run

ROOT = Path(__file__).resolve().parent.parent


class Deployment:
    """A data dir with a token, an admin principal and one symmetric key."""

    def __init__(self, server_path: Path) -> None:
        workdir = Path(tempfile.mkdtemp(prefix="hsmkms-bench-serve-"))
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("HSMKMS_", "SOFTHSM2_"))
        }
        self.env.update(
            HSMKMS_DATA_DIR=str(workdir / "data"),
            HSMKMS_MAINTENANCE_SECONDS="0",
            PYTHONPATH=str(server_path),
        )
        self.cli("init")
        arn = "arn:aws:iam::111122223333:user/bench"
        principal = self.cli("principal", "add", "--arn", arn)
        from hsmkms.policy.principals import ADMIN_POLICY

        (workdir / "admin.json").write_text(ADMIN_POLICY)
        self.cli("principal", "attach-policy", arn, str(workdir / "admin.json"))
        self.keys = (str(principal["AccessKeyId"]), str(principal["SecretAccessKey"]))
        self.key_id = str(self.cli("key", "create")["KeyMetadata"]["KeyId"])

    def cli(self, *words: str) -> Any:
        return run_cli(self.env, *words)

    @contextmanager
    def serving(self, workers: int = 1) -> Iterator[Target]:
        port = _free_port()
        command = [sys.executable, "-m", "hsmkms.cli", "serve", "--port", str(port)]
        if workers > 1:
            command += ["--workers", str(workers)]
        process = subprocess.Popen(command, env=self.env)
        try:
            _wait_for(f"http://127.0.0.1:{port}/healthz", process)
            yield Target("127.0.0.1", port, *self.keys)
        finally:
            process.terminate()
            process.wait(timeout=30)

    def encrypt(self, target: Target, concurrency: int, seconds: float) -> Result:
        body = {"KeyId": self.key_id, "Plaintext": base64.b64encode(PAYLOAD).decode()}
        return run(target, "Encrypt", json.dumps(body).encode(), concurrency, seconds)


def _line(name: str, result: Result) -> str:
    errors = f"  ({result.errors} errors)" if result.errors else ""
    return (
        f"{name:<28}{result.rate:>10,.0f}{result.p50_ms:>9.2f}{result.p99_ms:>9.2f}"
        f"{max(result.latencies) * 1000:>9.1f}{errors}"
    )


def mixed(args: argparse.Namespace) -> None:
    deployment = Deployment(Path(args.server_path))
    with deployment.serving() as target:
        deployment.encrypt(target, 8, 1.0)  # warm
        alone = deployment.encrypt(target, 8, args.seconds)
        stop = threading.Event()
        made: list[int] = []

        def create_keys() -> None:
            kms = boto3.client(
                "kms",
                endpoint_url=f"http://{target.host}:{target.port}",
                region_name=target.region,
                aws_access_key_id=target.access_key_id,
                aws_secret_access_key=target.secret_access_key,
                config=Config(retries={"total_max_attempts": 1}, read_timeout=120),
            )
            while not stop.is_set():
                kms.create_key(KeySpec="RSA_4096", KeyUsage="SIGN_VERIFY")
                made.append(1)

        slow = threading.Thread(target=create_keys, daemon=True)
        slow.start()
        beside = deployment.encrypt(target, 8, args.seconds)
        stop.set()
        slow.join(120)
    print(f"\nEncrypt 4 KiB, concurrency 8, {args.seconds:.0f} s per row ({args.server_path})")
    print(f"{'':<28}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    print(_line("alone", alone))
    print(_line(f"beside RSA-4096 CreateKey x{len(made)}", beside))
    print(f"p99 ratio: {beside.p99_ms / alone.p99_ms:.2f} (target <= 2)")


def workers(args: argparse.Namespace) -> None:
    deployment = Deployment(Path(args.server_path))
    print(f"\nEncrypt 4 KiB, {args.seconds:.0f} s per cell ({args.server_path})")
    print(f"{'workers':<28}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for count in (int(n) for n in args.workers.split(",")):
        with deployment.serving(count) as target:
            deployment.encrypt(target, args.concurrency, 1.0)  # warm every worker
            result = deployment.encrypt(target, args.concurrency, args.seconds)
        print(_line(f"{count} (concurrency {args.concurrency})", result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=("mixed", "workers"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--server-path", default=str(ROOT))
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    (mixed if args.which == "mixed" else workers)(args)


if __name__ == "__main__":
    main()
