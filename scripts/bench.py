#!/usr/bin/env python3
"""Benchmarks, each against raw python-pkcs11 on the same token in the same run.

token: 4 KiB Encrypt and Decrypt through KeyManager, on 1, 2 and 4 threads:
  raw      python-pkcs11 AES-GCM, IV from C_GenerateRandom per call (the same work
           a correct token-side encrypt needs), handles looked up once
  raw-gcm  python-pkcs11 AES-GCM alone, fixed IV (the token's ceiling; not safe)
  hsmkms   KeyManager.encrypt / decrypt (resolve, state checks, blob, context AAD)
xks: the XKS proxy API (scripts/bench_xks.py): 32-byte Encrypt with AAD at concurrency 16.
cpu: server CPU per request beside req/s and latency, moto_server and the raw token in
  the same run, `--profile DIR` for a sampling profile (scripts/bench_cpu.py).
stages: the Python CPU of one request per stage on one thread, without sockets or
  threads (scripts/bench_stages.py): what the server adds is `cpu` minus its total.
http: 4 KiB Encrypt and Decrypt over HTTP at concurrency 1, 8 and 32 from a signing
  load generator (scripts/loadgen.py) against `hsmkms serve`, a moto server and a
  canned-response server (the load generator's own ceiling); req/s, p50, p99.

    python scripts/bench.py [token|http|xks|all] [--seconds 2] [--threads 1,2,4]
    python scripts/bench.py cpu [--seconds 3] [--workers 1] [--profile DIR] [--tree N=DIR]
    python scripts/bench.py stages [--rounds 5] [--calls 2000] [--tree N=DIR]
    python scripts/bench.py mixed|workers [--seconds 10] (see scripts/bench_serve.py)
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

PAYLOAD = os.urandom(4096)
CONTEXT = {"purpose": "bench"}


def measure(make_worker: Callable[[], Callable[[], None]], threads: int, seconds: float) -> float:
    """ops/s of `threads` threads each calling its own worker until time is up."""
    counts = [0] * threads
    stop = threading.Event()
    ready = threading.Barrier(threads + 1)

    def run(index: int) -> None:
        work = make_worker()
        work()  # warm the session and handle caches
        ready.wait()
        done = 0
        while not stop.is_set():
            for _ in range(50):
                work()
            done += 50
        counts[index] = done

    pool = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    ready.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in pool:
        thread.join()
    return sum(counts) / (time.perf_counter() - start)


def token_bench(args: argparse.Namespace) -> None:
    thread_counts = [int(t) for t in args.threads.split(",")]

    workdir = Path(tempfile.mkdtemp(prefix="hsmkms-bench-"))
    label, pin = "bench", secrets.token_hex(8)
    conf = subprocess.run(
        [str(ROOT / "softhsm" / "make-token.sh"), str(workdir), label, secrets.token_hex(8), pin],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    os.environ["SOFTHSM2_CONF"] = conf

    from pkcs11 import Mechanism
    from pkcs11.mechanisms import GCMParams

    from hsmkms.config import default_pkcs11_lib
    from hsmkms.library import KeyManager
    from hsmkms.operations.context import Deployment
    from hsmkms.store.sqlite import SqliteStore
    from hsmkms.token import Hsm, MaterialRef, load_module

    pool_size = max(thread_counts) + 1
    hsm = Hsm(default_pkcs11_lib(), label, pin, pool_size)
    km = KeyManager(
        Deployment(SqliteStore(workdir / "bench.db"), hsm, account_id="111122223333"), "us-east-1"
    )
    key_id = km.create_key(description="bench")["KeyMetadata"]["KeyId"]
    blob = km.encrypt(key_id=key_id, plaintext=PAYLOAD, encryption_context=CONTEXT)[
        "CiphertextBlob"
    ]
    ref = MaterialRef(key_id, 1)
    fixed_iv = os.urandom(12)
    token = load_module(default_pkcs11_lib()).get_token(token_label=label)
    raw_sessions = []

    def raw_worker(with_token_iv: bool, decrypt: bool) -> Callable[[], None]:
        # Raw python-pkcs11 on a session of its own (the login is the process's), the
        # key handle looked up once.
        session = token.open()
        raw_sessions.append(session)
        key = session.get_key(label=ref.label)
        sealed = key.encrypt(
            PAYLOAD, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(fixed_iv, b"", 128)
        )

        def encrypt() -> None:
            iv = session.generate_random(96) if with_token_iv else fixed_iv
            key.encrypt(
                PAYLOAD, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(iv, b"", 128)
            )

        def decrypt_once() -> None:
            key.decrypt(
                sealed, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(fixed_iv, b"", 128)
            )

        return decrypt_once if decrypt else encrypt

    def km_encrypt() -> Callable[[], None]:
        return lambda: km.encrypt(key_id=key_id, plaintext=PAYLOAD, encryption_context=CONTEXT)

    def km_decrypt() -> Callable[[], None]:
        return lambda: km.decrypt(ciphertext_blob=blob, encryption_context=CONTEXT)

    print(f"4 KiB AES-256-GCM on SoftHSM2, {args.seconds:.1f} s per cell, {os.cpu_count()} cores")
    print(f"{'operation':<10}{'threads':>8}{'raw-gcm':>12}{'raw':>12}{'hsmkms':>12}{'ratio':>8}")
    for name, decrypt in (("Encrypt", False), ("Decrypt", True)):
        for threads in thread_counts:
            ceiling = measure(lambda d=decrypt: raw_worker(False, d), threads, args.seconds)
            raw = (
                ceiling
                if decrypt  # decrypt needs no new IV: raw and raw-gcm are the same work
                else measure(lambda: raw_worker(True, False), threads, args.seconds)
            )
            ours = measure(km_decrypt if decrypt else km_encrypt, threads, args.seconds)
            print(
                f"{name:<10}{threads:>8}{ceiling:>12,.0f}{raw:>12,.0f}{ours:>12,.0f}"
                f"{ours / raw:>8.2f}"
            )
    print("ratio = hsmkms / raw; target >= 0.80 on one thread")
    sign_bench(km, token, args.seconds)
    for session in raw_sessions:
        session.close()
    km.close()


def sign_bench(km: Any, token: Any, seconds: float) -> None:
    """RSA-2048 PSS and P-256 ECDSA signing of 4 KiB: KeyManager vs raw python-pkcs11
    (the token's own SHA256_RSA_PKCS_PSS; for ECDSA, hashlib + CKM_ECDSA, as SoftHSM2
    has no hash-and-sign ECDSA), one thread."""
    import hashlib

    from pkcs11 import MGF, Attribute, Mechanism, ObjectClass

    print(f"\n4 KiB Sign on SoftHSM2, one thread, {seconds:.1f} s per cell")
    print(f"{'algorithm':<22}{'raw':>10}{'hsmkms':>10}{'ratio':>8}")
    cases = (
        ("RSA_2048", "RSASSA_PSS_SHA_256", Mechanism.SHA256_RSA_PKCS_PSS),
        ("ECC_NIST_P256", "ECDSA_SHA_256", Mechanism.ECDSA),
    )
    session = token.open()
    try:
        for spec, algorithm, mechanism in cases:
            key_id = km.create_key(key_spec=spec, key_usage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
            private = session.get_key(
                object_class=ObjectClass.PRIVATE_KEY, label=f"hsmkms/{key_id}/v1"
            )
            param = (Mechanism.SHA256, MGF.SHA256, 32) if spec.startswith("RSA") else None

            def raw_sign(key: Any = private, mech: Any = mechanism, extra: Any = param) -> None:
                data = PAYLOAD if mech is not Mechanism.ECDSA else hashlib.sha256(PAYLOAD).digest()
                key.sign(data, mechanism=mech, mechanism_param=extra)

            def ours(k: str = key_id, a: str = algorithm) -> None:
                km.sign(key_id=k, message=PAYLOAD, signing_algorithm=a)

            raw = measure(lambda w=raw_sign: w, 1, seconds)
            mine = measure(lambda w=ours: w, 1, seconds)
            print(f"{algorithm:<22}{raw:>10,.0f}{mine:>10,.0f}{mine / raw:>8.2f}")
            assert private[Attribute.SENSITIVE]
    finally:
        session.close()
    print("target >= 0.90: the token is the limit")


def _wait_for(url: str, process: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the server exited")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def run_cli(env: dict[str, str], *words: str, cwd: Path | None = None) -> Any:
    """`hsmkms <words>` as an operator runs it; its JSON output (None when it prints none)."""
    out = subprocess.run(
        [sys.executable, "-m", "hsmkms.cli", *words],
        env=env,
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out) if out.strip() else None


def start_moto(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def moto_client(port: int) -> Any:
    """A boto3 KMS client of the moto_server on `port` (moto takes any credentials)."""
    import boto3

    return boto3.client(
        "kms",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def http_bench(args: argparse.Namespace) -> None:
    import base64

    import boto3
    from loadgen import Target, run

    workdir = Path(tempfile.mkdtemp(prefix="hsmkms-bench-http-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HSMKMS_", "SOFTHSM2_"))}
    env["HSMKMS_DATA_DIR"] = str(workdir / "data")
    env["HSMKMS_MAINTENANCE_SECONDS"] = "0"

    def cli(*words: str) -> Any:
        return run_cli(env, *words)

    cli("init")
    principal = cli("principal", "add", "--arn", "arn:aws:iam::111122223333:user/bench")
    from hsmkms.policy.principals import ADMIN_POLICY

    (workdir / "admin.json").write_text(ADMIN_POLICY)
    cli(
        "principal",
        "attach-policy",
        "arn:aws:iam::111122223333:user/bench",
        str(workdir / "admin.json"),
    )
    key_id = str(cli("key", "create", "--description", "bench")["KeyMetadata"]["KeyId"])
    ports = {name: _free_port() for name in ("hsmkms", "moto", "canned")}
    processes = {
        "hsmkms": subprocess.Popen(
            [sys.executable, "-m", "hsmkms.cli", "serve", "--port", str(ports["hsmkms"])],
            env=env,
        ),
        "moto": start_moto(ports["moto"]),
        "canned": subprocess.Popen(
            [sys.executable, "-c", f"import loadgen; loadgen.serve_canned({ports['canned']})"],
            cwd=Path(__file__).parent,
        ),
    }
    try:
        _wait_for(f"http://127.0.0.1:{ports['hsmkms']}/healthz", processes["hsmkms"])
        _wait_for(f"http://127.0.0.1:{ports['moto']}/", processes["moto"])
        _wait_for(f"http://127.0.0.1:{ports['canned']}/", processes["canned"])
        targets = {
            "hsmkms": Target(
                "127.0.0.1",
                ports["hsmkms"],
                str(principal["AccessKeyId"]),
                str(principal["SecretAccessKey"]),
            ),
            "moto": Target("127.0.0.1", ports["moto"], "testing", "testing" * 6),
            "canned": Target("127.0.0.1", ports["canned"], "x", "x" * 40),
        }
        moto = moto_client(ports["moto"])
        moto_key = moto.create_key()["KeyMetadata"]["KeyId"]
        ours = boto3.client(
            "kms",
            endpoint_url=f"http://127.0.0.1:{ports['hsmkms']}",
            region_name="us-east-1",
            aws_access_key_id=str(principal["AccessKeyId"]),
            aws_secret_access_key=str(principal["SecretAccessKey"]),
        )
        payload = base64.b64encode(PAYLOAD).decode()
        blobs = {
            "hsmkms": ours.encrypt(KeyId=key_id, Plaintext=PAYLOAD)["CiphertextBlob"],
            "moto": moto.encrypt(KeyId=moto_key, Plaintext=PAYLOAD)["CiphertextBlob"],
        }
        bodies = {
            ("Encrypt", "hsmkms"): {"KeyId": key_id, "Plaintext": payload},
            ("Encrypt", "moto"): {"KeyId": moto_key, "Plaintext": payload},
            ("Decrypt", "hsmkms"): {"CiphertextBlob": base64.b64encode(blobs["hsmkms"]).decode()},
            ("Decrypt", "moto"): {"CiphertextBlob": base64.b64encode(blobs["moto"]).decode()},
        }
        print(f"\n4 KiB over HTTP, {args.seconds:.1f} s per cell")
        header = f"{'operation':<9}{'conc':>5}{'client-max':>12}"
        header += "".join(
            f"{name + ' req/s':>14}{'p50 ms':>8}{'p99 ms':>8}" for name in ("hsmkms", "moto")
        )
        print(header + f"{'vs moto':>9}")
        for operation in ("Encrypt", "Decrypt"):
            for concurrency in (1, 8, 32):
                ceiling = run(targets["canned"], operation, b"{}", concurrency, args.seconds)
                line = f"{operation:<9}{concurrency:>5}{ceiling.rate:>12,.0f}"
                rates = {}
                for name in ("hsmkms", "moto"):
                    body = json.dumps(bodies[(operation, name)]).encode()
                    result = run(targets[name], operation, body, concurrency, args.seconds)
                    rates[name] = result.rate
                    errors = f" ({result.errors} errors)" if result.errors else ""
                    line += f"{result.rate:>14,.0f}{result.p50_ms:>8.2f}{result.p99_ms:>8.2f}"
                    line += errors
                print(line + f"{rates['hsmkms'] / rates['moto']:>8.1f}x")
        print("targets: >= 5x moto at concurrency 8, p50 < 1 ms at 1, p99 < 10 ms at 8")
    finally:
        for process in processes.values():
            process.terminate()
            process.wait(timeout=10)
    # Only once the server is gone: SoftHSM2 in this process would hold the token's
    # file locks and stall the server's calls.
    raw = _raw_token_rates(workdir / "data", key_id, args.seconds)
    print(
        f"raw python-pkcs11 on the same token, one thread, no HTTP: Encrypt "
        f"{raw['Encrypt']:,.0f}/s, Decrypt {raw['Decrypt']:,.0f}/s"
    )


def _raw_token_rates(data_dir: Path, key_id: str, seconds: float) -> dict[str, float]:
    """Raw python-pkcs11 on the server's own token, one thread."""
    os.environ["SOFTHSM2_CONF"] = str(data_dir / "softhsm2.conf")
    from pkcs11 import Attribute, Mechanism
    from pkcs11.mechanisms import GCMParams

    from hsmkms.config import default_pkcs11_lib
    from hsmkms.token import load_module

    token = load_module(default_pkcs11_lib()).get_token(token_label="hsmkms")
    session = token.open(user_pin=(data_dir / "user.pin").read_text().strip())
    key = next(session.get_objects({Attribute.LABEL: f"hsmkms/{key_id}/v1"}))
    iv = os.urandom(12)
    sealed = key.encrypt(PAYLOAD, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(iv))
    rates = {}
    for name, work in (
        ("Encrypt", lambda: key.encrypt(
            PAYLOAD, mechanism=Mechanism.AES_GCM,
            mechanism_param=GCMParams(session.generate_random(96)),
        )),
        ("Decrypt", lambda: key.decrypt(
            sealed, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(iv)
        )),
    ):  # fmt: skip
        rates[name] = measure(lambda w=work: w, 1, seconds)
    session.close()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "which",
        nargs="?",
        default="all",
        choices=("token", "http", "xks", "cpu", "stages", "all", "mixed", "workers"),
    )
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", default="1,2,4")
    args, rest = parser.parse_known_args()
    if args.which in ("mixed", "workers"):  # serving benchmarks: scripts/bench_serve.py
        serve = [sys.executable, str(Path(__file__).with_name("bench_serve.py")), args.which]
        subprocess.run([*serve, "--seconds", str(args.seconds), *rest], check=True)
    elif args.which == "cpu":  # server CPU per request: scripts/bench_cpu.py
        cpu = [sys.executable, str(Path(__file__).with_name("bench_cpu.py"))]
        subprocess.run([*cpu, "--seconds", str(args.seconds), *rest], check=True)
    elif args.which == "stages":  # one request's Python per stage: scripts/bench_stages.py
        stages = [sys.executable, str(Path(__file__).with_name("bench_stages.py"))]
        subprocess.run([*stages, *rest], check=True)
    elif args.which == "all":
        # SoftHSM2 reads its configuration once per process: one process per part.
        for part in ("token", "http", "xks"):
            extra = ["--seconds", str(args.seconds), "--threads", args.threads]
            subprocess.run([sys.executable, __file__, part, *extra], check=True)
    elif args.which == "xks":
        script = str(Path(__file__).resolve().parent / "bench_xks.py")
        subprocess.run(
            [sys.executable, script, "--seconds", str(max(args.seconds, 5.0))], check=True
        )
    elif args.which == "token":
        token_bench(args)
    else:
        http_bench(args)


if __name__ == "__main__":
    main()
