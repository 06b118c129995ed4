#!/usr/bin/env python3
"""The Python CPU of one request, stage by stage, on one thread (called by
`scripts/bench.py stages`): the edge's and the faces' own functions called in a loop in
one process, with the server's token, database and settings but no sockets, no worker
threads and no event loop. With `--tree`, the trees run at once, one per core.

What it leaves out is what the server adds to it: HTTP parsing and the ASGI cycle
(uvicorn), the thread hops and GIL hand-offs, the audit writer's file write and fsync,
the kernel's socket and scheduling work. `bench cpu` minus the total here is that share.
On a shared machine a stage's figure moves by up to a third from run to run (the
machine's speed changes under the process): read proportions, not small differences;
whether a change saves CPU is for `bench_paired.py` to say.

    python scripts/bench.py stages [--rounds 5] [--calls 2000] [--tree NAME=DIR ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

STAGES = ("headers", "SigV4", "operation", "audit record", "response", "metrics + log")


def _measure(calls: int, rounds: int, works: dict[str, Callable[[], object]]) -> dict[str, float]:
    """µs of process CPU per call of each work, the median of `rounds`; the works take
    turns within each round, so a slower spell of the machine falls on all of them."""
    spent: dict[str, list[float]] = {name: [] for name in works}
    for work in works.values():
        work()
    for _ in range(rounds):
        for name, work in works.items():
            started = time.process_time()
            for _ in range(calls):
                work()
            spent[name].append((time.process_time() - started) / calls * 1e6)
    return {name: statistics.median(figures) for name, figures in spent.items()}


def _case(face: Any, verifier: Any, observer: Any, raw: bytes) -> dict[str, Callable[[], object]]:
    """One signed request's stages, as the edge and the face run them."""
    from hsmkms.api.edge import Seen, _handled, decode_headers
    from hsmkms.audit.files import seal
    from hsmkms.audit.outcome import call_record
    from hsmkms.store.base import one_generation

    head, body = raw.split(b"\r\n\r\n", 1)
    request_line, *lines = head.split(b"\r\n")
    path = request_line.split(b" ")[1].decode()
    raw_headers = [
        (name.lower(), value) for name, _, value in (line.partition(b": ") for line in lines)
    ]

    def seen() -> Seen:
        return Seen("r-1", "POST", path, "", decode_headers(raw_headers), body,
                    "127.0.0.1", False, len(body))  # fmt: skip

    request = seen()
    outcome = _handled(face, request)
    assert outcome.error is None, repr(outcome.error)

    def signature() -> object:
        with one_generation():
            return verifier.verify("POST", path, "", request.headers, body)

    def record() -> object:
        event = call_record(outcome, request_id="r-1", source_ip="127.0.0.1",
                            processing_seconds=0.001, names=face.names)  # fmt: skip
        return seal({**event, "auditSequence": 1}, "0" * 64)

    def answered() -> None:
        observer.answered(face.protocol, outcome, request_id="r-1", client="127.0.0.1",
                          status=200, error="", seconds=0.001)  # fmt: skip

    return {
        "headers": seen,
        "SigV4": signature,
        "handled": lambda: _handled(face, request),
        "audit record": record,
        "response": lambda: face.respond(request, outcome),
        "metrics + log": answered,
    }


def inner(requests: dict[str, str], calls: int, rounds: int) -> dict[str, dict[str, float]]:
    """In the tree's own process (its env: data dir, token): each case's stages."""
    import logging

    from hsmkms import bootstrap
    from hsmkms.api.kms import KmsFace
    from hsmkms.api.observe import Metrics, Observer
    from hsmkms.api.sigv4 import SigV4Verifier
    from hsmkms.api.workers import WorkerPool
    from hsmkms.api.xks_proxy import XksProxyFace
    from hsmkms.config import load_settings
    from hsmkms.policy.principals import CredentialStore

    settings = load_settings()
    bootstrap.prepare_environment(settings)
    km = bootstrap.build_key_manager(settings, audited=False)
    credentials = CredentialStore(km.store, km.hsm, km.clock)
    verifier = SigV4Verifier(credentials.lookup, on_verified=credentials.record_use)
    kms, xks = KmsFace(km.context, verifier), XksProxyFace(km.context, settings.xks)
    xks_verifier = next(iter(xks._verifiers.values()))  # the one URI prefix's
    access = logging.getLogger("hsmkms.access")  # the access log's lines, not on the terminal
    access.handlers[:], access.propagate = [logging.NullHandler()], False
    observer = Observer(Metrics(km.context, WorkerPool(2)), settings.serving.access_log)
    figures: dict[str, dict[str, float]] = {}
    for case, raw in requests.items():
        face, verify = (kms, verifier) if case != "XKS encrypt" else (xks, xks_verifier)
        measured = _measure(calls, rounds, _case(face, verify, observer, raw.encode("latin-1")))
        measured["operation"] = measured.pop("handled") - measured["SigV4"]
        figures[case] = measured
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        requests = json.loads(Path(args.inner).read_text())
        print(json.dumps(inner(requests, args.calls, args.rounds)))
        return
    from bench import ROOT
    from bench_cpu import Server

    trees = [tuple(t.split("=", 1)) for t in args.tree] or [("this", str(ROOT))]
    running = []
    for name, tree in trees:
        server = Server(Path(tree), "sync", 1)
        try:
            signers = server.signers()
        finally:
            server.stop()
        requests = {case: s.request().decode("latin-1") for case, s in signers.items()}
        cases = server.data.parent / "requests.json"
        cases.write_text(json.dumps(requests))
        cases.chmod(0o600)  # signed requests: not for other users
        command = [sys.executable, __file__, "--inner", str(cases),
                   "--calls", str(args.calls), "--rounds", str(args.rounds)]  # fmt: skip
        running.append((name, command, server.env, tree))
    # The trees at once, one per core: what the machine does to one it does to the other.
    processes = [
        (name, subprocess.Popen(command, env=env, cwd=tree, stdout=subprocess.PIPE, text=True))
        for name, command, env, tree in running
    ]
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, process in processes:
        out, _ = process.communicate()
        if process.returncode:
            raise SystemExit(f"{name}: the stage run failed")
        results[name] = json.loads(out.strip().splitlines()[-1])
    load = os.getloadavg()[0]
    print(f"Python CPU of one request per stage, one thread, µs (median of {args.rounds} "
          f"rounds of {args.calls} calls; load average {load:.1f})")  # fmt: skip
    cases = list(next(iter(results.values())))
    print("| stage | " + " | ".join(f"{c} {n}" for c in cases for n, _ in trees) + " |")
    print("|---" * (1 + len(cases) * len(trees)) + "|")
    for stage in (*STAGES, "total"):
        cells = []
        for case in cases:
            for name, _ in trees:
                row = results[name][case]
                cells.append(f"{sum(row.values()) if stage == 'total' else row[stage]:.1f}")
        print(f"| {stage} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
