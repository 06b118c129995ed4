#!/usr/bin/env python3
"""Server CPU per request (called by scripts/bench.py cpu): every server process's CPU
time (user + system, from /proc) over a load-generator run, divided by the requests it
answered, beside req/s and latency. Default settings (durability `sync`, SigV4 verified,
authorization evaluated, access log on) except `--workers`, given explicitly so the
figures do not move with the default.

Cases, at `--concurrency` (8): KMS Encrypt / Decrypt 4 KiB, GenerateDataKey AES_256,
Sign ECDSA_SHA_256 (P-256, 4 KiB message), XKS encrypt (32 bytes + 64 bytes of AAD), and
KMS Encrypt with durability `async` (durable audit's cost). Anchors in the same run:
moto_server's Encrypt, Decrypt and GenerateDataKey, and the token's own CPU per
operation (raw python-pkcs11 in this process, after the servers stopped).

`--tree NAME=DIR` (repeatable) serves from other checkouts of hsmkms (e.g. a
`git archive` of the commit before a change); rounds alternate the trees.
`--profile DIR` instead samples each case's server with py-spy and writes the raw
stacks and a per-stage budget (HTTP parsing, SigV4, JSON/base64, validation,
authorization, token call, audit, thread hops, ...) to DIR.

    python scripts/bench.py cpu [--seconds 3] [--rounds 2] [--workers 1] [--tree ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncio

from bench import PAYLOAD, ROOT, _free_port, _wait_for, moto_client, run_cli, start_moto
from bench_xks import METADATA as XKS_METADATA
from bench_xks import _b64
from loadgen import PathSigner, Result, Signer, Target, _run

TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds of `pid` and every live descendant (uvicorn's worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
        todo.extend(children.get(current, []))
    return total


@dataclass
class Measured:
    result: Result
    cpu_us: float  # server CPU per answered request


class Server:
    """A data dir of one tree with a token, an admin principal, a symmetric key, a P-256
    signing key and an XKS credential, served at one durability."""

    def __init__(self, tree: Path, durability: str, workers: int) -> None:
        workdir = Path(tempfile.mkdtemp(prefix="hsmkms-bench-cpu-"))
        self.data = workdir / "data"
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("HSMKMS_", "SOFTHSM2_"))
        }
        self.env.update(
            HSMKMS_DATA_DIR=str(self.data),
            HSMKMS_MAINTENANCE_SECONDS="0",
            HSMKMS_AUDIT_DURABILITY=durability,
            PYTHONPATH=str(tree),
        )
        # `python -m` puts its working directory first on the path: run in the tree
        # itself, or every tree would serve the code of the directory bench ran from.
        self.tree = tree
        served = subprocess.run([sys.executable, "-c", "import hsmkms; print(hsmkms.__file__)"],
                                env=self.env, cwd=tree, check=True, capture_output=True,
                                text=True).stdout  # fmt: skip
        if not Path(served.strip()).resolve().is_relative_to(tree.resolve()):
            raise SystemExit(f"{tree} would serve {served.strip()}")
        self.cli("init")
        arn = "arn:aws:iam::111122223333:user/bench"
        principal = self.cli("principal", "add", "--arn", arn)
        from hsmkms.policy.principals import ADMIN_POLICY

        (workdir / "admin.json").write_text(ADMIN_POLICY)
        self.cli("principal", "attach-policy", arn, str(workdir / "admin.json"))
        self.key_id = str(self.cli("key", "create")["KeyMetadata"]["KeyId"])
        created = self.cli(
            "key", "create", "--key-spec", "ECC_NIST_P256", "--key-usage", "SIGN_VERIFY"
        )
        self.ecc_id = str(created["KeyMetadata"]["KeyId"])
        xks = self.cli("xks", "credential", "add")["XksProxyAuthenticationCredential"]
        port = _free_port()
        command = [sys.executable, "-m", "hsmkms.cli", "serve", "--port", str(port)]
        # The access log (on, as by default) to a file, not the terminal.
        self.log = (workdir / "serve.log").open("wb")
        self.process = subprocess.Popen(
            [*command, "--workers", str(workers)], env=self.env, stderr=self.log, cwd=tree
        )
        _wait_for(f"http://127.0.0.1:{port}/healthz", self.process)
        self.kms = Target("127.0.0.1", port, principal["AccessKeyId"], principal["SecretAccessKey"])
        self.xks = Target("127.0.0.1", port, xks["AccessKeyId"], xks["RawSecretAccessKey"])

    def cli(self, *words: str) -> Any:
        return run_cli(self.env, *words, cwd=self.tree)

    def signers(self) -> dict[str, Signer | PathSigner]:
        import httpx

        payload = _b64(PAYLOAD)
        encrypt = Signer(
            self.kms, "Encrypt", json.dumps({"KeyId": self.key_id, "Plaintext": payload}).encode()
        )
        sealed = _post(encrypt, httpx)["CiphertextBlob"]
        xks_body = {
            "requestMetadata": XKS_METADATA,
            "plaintext": _b64(os.urandom(32)),
            "additionalAuthenticatedData": _b64(os.urandom(64)),
            "encryptionAlgorithm": "AES_GCM",
        }
        path = f"/xks/kms/xks/v1/keys/{self.key_id}/encrypt"
        sign = {
            "KeyId": self.ecc_id,
            "Message": payload,
            "MessageType": "RAW",
            "SigningAlgorithm": "ECDSA_SHA_256",
        }
        return {
            "Encrypt": encrypt,
            "Decrypt": Signer(self.kms, "Decrypt", json.dumps({"CiphertextBlob": sealed}).encode()),
            "GenerateDataKey": Signer(
                self.kms,
                "GenerateDataKey",
                json.dumps({"KeyId": self.key_id, "KeySpec": "AES_256"}).encode(),
            ),
            "Sign": Signer(self.kms, "Sign", json.dumps(sign).encode()),
            "XKS encrypt": PathSigner(
                self.xks, path, "kms-xks-proxy", json.dumps(xks_body).encode()
            ),
        }

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def _post(signer: Signer, httpx: Any) -> Any:
    raw = signer.request()
    head = raw.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]
    headers = dict(line.split(": ", 1) for line in head if not line.lower().startswith("content-l"))
    answer = httpx.post(f"http://{signer.host}/", content=signer.body, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def measure(pid: int, signer: Signer | PathSigner, concurrency: int, seconds: float) -> Measured:
    asyncio.run(_run(signer, concurrency, min(0.5, seconds / 4)))  # warm-up
    before = process_cpu(pid)
    result = asyncio.run(_run(signer, concurrency, seconds))
    spent = process_cpu(pid) - before
    return Measured(result, spent / max(1, len(result.latencies)) * 1e6)


def raw_token_cpu(server: Server, seconds: float) -> dict[str, float]:
    """The token's own CPU per operation: python-pkcs11 on the server's token, one thread
    (AES-GCM 4 KiB with an IV from the token; ECDSA P-256 of a SHA-256 digest)."""
    import hashlib

    os.environ["SOFTHSM2_CONF"] = str(server.data / "softhsm2.conf")
    from pkcs11 import Attribute, Mechanism, ObjectClass
    from pkcs11.mechanisms import GCMParams

    from hsmkms.config import default_pkcs11_lib
    from hsmkms.token import load_module

    token = load_module(default_pkcs11_lib()).get_token(token_label="hsmkms")
    session = token.open(user_pin=(server.data / "user.pin").read_text().strip())
    key = next(session.get_objects({Attribute.LABEL: f"hsmkms/{server.key_id}/v1"}))
    private = next(
        session.get_objects(
            {
                Attribute.LABEL: f"hsmkms/{server.ecc_id}/v1",
                Attribute.CLASS: ObjectClass.PRIVATE_KEY,
            }
        )
    )
    iv = os.urandom(12)
    sealed = key.encrypt(PAYLOAD, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(iv))
    work: dict[str, Callable[[], object]] = {
        "Encrypt": lambda: key.encrypt(
            PAYLOAD,
            mechanism=Mechanism.AES_GCM,
            mechanism_param=GCMParams(session.generate_random(96)),
        ),
        "Decrypt": lambda: key.decrypt(
            sealed, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(iv)
        ),
        "GenerateDataKey": lambda: key.encrypt(
            session.generate_random(256),
            mechanism=Mechanism.AES_GCM,
            mechanism_param=GCMParams(session.generate_random(96)),
        ),
        "Sign": lambda: private.sign(hashlib.sha256(PAYLOAD).digest(), mechanism=Mechanism.ECDSA),
    }
    spent = {}
    for name, call in work.items():
        calls, started = 0, time.process_time()
        deadline = time.perf_counter() + seconds / 2
        while time.perf_counter() < deadline:
            for _ in range(20):
                call()
            calls += 20
        spent[name] = (time.process_time() - started) / calls * 1e6
    session.close()
    return spent


def moto_cpu(concurrency: int, seconds: float) -> dict[str, Measured]:
    port = _free_port()
    moto = start_moto(port)
    try:
        _wait_for(f"http://127.0.0.1:{port}/", moto)
        client = moto_client(port)
        key = client.create_key()["KeyMetadata"]["KeyId"]
        sealed = _b64(client.encrypt(KeyId=key, Plaintext=PAYLOAD)["CiphertextBlob"])
        target = Target("127.0.0.1", port, "testing", "testing" * 6)
        bodies = {
            "Encrypt": {"KeyId": key, "Plaintext": _b64(PAYLOAD)},
            "Decrypt": {"CiphertextBlob": sealed},
            "GenerateDataKey": {"KeyId": key, "KeySpec": "AES_256"},
        }
        return {
            name: measure(
                moto.pid, Signer(target, name, json.dumps(body).encode()), concurrency, seconds
            )
            for name, body in bodies.items()
        }
    finally:
        moto.terminate()
        moto.wait(timeout=10)


def _line(name: str, measured: Measured) -> str:
    result = measured.result
    errors = f"  ({result.errors} errors)" if result.errors else ""
    return (
        f"  {name:<26}{measured.cpu_us:>9,.0f}{result.rate:>9,.0f}{result.p50_ms:>8.2f}"
        f"{result.p99_ms:>8.2f}{errors}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cases", default="Encrypt,Decrypt,GenerateDataKey,Sign,XKS encrypt")
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--no-async", action="store_true", help="skip durability async")
    parser.add_argument("--no-anchors", action="store_true", help="skip moto and raw token")
    parser.add_argument("--profile", type=Path, metavar="DIR")
    args = parser.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree) or {"this": str(ROOT)}
    cases = args.cases.split(",")
    durabilities = ["sync"] if args.no_async or args.profile else ["sync", "async"]
    servers = {
        (name, d): Server(Path(tree).resolve(), d, args.workers)
        for name, tree in trees.items()
        for d in durabilities
    }
    try:
        if args.profile:
            from bench_profile import profile

            for (name, _), server in servers.items():
                profile(server.process.pid, server.signers(), cases, args, args.profile / name)
            return
        load = os.getloadavg()[0]
        print(
            f"server CPU per request, {os.cpu_count()} cores, load average {load:.1f} at "
            f"start, concurrency {args.concurrency}, --workers {args.workers}, "
            f"{args.seconds:.1f} s per cell"
        )
        signers = {key: server.signers() for key, server in servers.items()}
        for round_number in range(1, args.rounds + 1):
            print(f"round {round_number} (load average {os.getloadavg()[0]:.1f})")
            print(f"  {'case':<26}{'CPU µs':>9}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}")
            for case in cases:
                for (name, durability), server in servers.items():
                    if durability == "async" and case != "Encrypt":
                        continue
                    label = f"{case} [{name}, {durability}]"
                    pid = server.process.pid
                    print(
                        _line(
                            label,
                            measure(
                                pid,
                                signers[(name, durability)][case],
                                args.concurrency,
                                args.seconds,
                            ),
                        ),
                        flush=True,
                    )
        if not args.no_anchors:
            print("moto_server (one process), same concurrency:")
            for case, measured in moto_cpu(args.concurrency, args.seconds).items():
                print(_line(case, measured), flush=True)
    finally:
        for server in servers.values():
            server.stop()
    if not args.no_anchors and not args.profile:
        raw = raw_token_cpu(next(iter(servers.values())), args.seconds)
        print("the token's own CPU per operation (raw python-pkcs11, one thread, no HTTP):")
        for case, micros in raw.items():
            print(f"  {case:<26}{micros:>9,.1f}")


if __name__ == "__main__":
    main()
