#!/usr/bin/env python3
"""Throughput of KeyManager against raw python-pkcs11 on the same token, same run.

Creates a throwaway SoftHSM2 token, then measures 4 KiB Encrypt and Decrypt:
  raw      python-pkcs11 AES-GCM, IV from C_GenerateRandom per call (the same work
           a correct token-side encrypt needs), handles looked up once
  raw-gcm  python-pkcs11 AES-GCM alone, fixed IV (the token's ceiling; not safe)
  hsmkms   KeyManager.encrypt / decrypt (resolve, state checks, blob, context AAD)
on 1, 2 and 4 threads, and prints ops/s and the ratio hsmkms / raw.

    python scripts/bench.py [--seconds 2] [--threads 1,2,4]
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", default="1,2,4")
    args = parser.parse_args()
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
    from hsmkms.service import KeyManager
    from hsmkms.store.sqlite import SqliteStore
    from hsmkms.token import Hsm, MaterialRef
    from hsmkms.token.library import load_module

    pool_size = max(thread_counts) + 1
    hsm = Hsm(default_pkcs11_lib(), label, pin, pool_size)
    km = KeyManager(
        SqliteStore(workdir / "bench.db"), hsm, account_id="111122223333", region="us-east-1"
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
    for session in raw_sessions:
        session.close()
    km.close()


if __name__ == "__main__":
    main()
