#!/usr/bin/env python3
"""Server CPU per request of two trees under the same machine noise: both served at
once, each loaded by its own load-generator process at the same moment, so whatever
else runs on the shared cores weighs on both sides alike. Prints each round's CPU per
request, the second tree's ratio to the first's, and the medians. On a shared 2-core
machine the ratio of a tree to itself (A/A) stays within ±6 % per round, where
alternating rounds (scripts/bench_cpu.py --tree) vary by ±20-30 %.

    python scripts/bench_paired.py --tree base=DIR --tree this=. [--rounds 5]
        [--seconds 3] [--concurrency 8] [--durability sync] [--cases Encrypt,...]
    python scripts/bench_paired.py --tree sync=. --tree async=. --durability sync,async
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import ROOT
from bench_cpu import Server, process_cpu
from loadgen import PathSigner, Signer, _connection

WARM_SECONDS = 0.3


async def _timed(
    signer: Signer | PathSigner, pid: int, concurrency: int, seconds: float
) -> tuple[int, float, float]:
    """(requests answered, server CPU seconds, p50 ms) of one timed run after a warm-up."""
    warm = time.perf_counter() + WARM_SECONDS
    await asyncio.gather(*(_connection(signer, warm, []) for _ in range(concurrency)))
    latencies: list[float] = []
    before, started = process_cpu(pid), time.perf_counter()
    await asyncio.gather(
        *(_connection(signer, started + seconds, latencies) for _ in range(concurrency))
    )
    spent = process_cpu(pid) - before
    return len(latencies), spent, statistics.median(latencies) * 1000 if latencies else 0.0


def _load(signer: Signer | PathSigner, pid: int, args: argparse.Namespace, start_at: float,
          results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]  # fmt: skip
    time.sleep(max(0.0, start_at - time.time()))
    results.put(asyncio.run(_timed(signer, pid, args.concurrency, args.seconds)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--durability", default="sync", help="sync, async, or one per tree (sync,async)"
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cases", default="Encrypt,XKS encrypt")
    args = parser.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree) or {"this": str(ROOT)}
    if len(trees) != 2:
        raise SystemExit("two --tree NAME=DIR, the first the reference")
    cases = args.cases.split(",")
    durabilities = args.durability.split(",") * (1 if "," in args.durability else 2)
    servers = {
        name: Server(Path(tree).resolve(), durability, args.workers)
        for (name, tree), durability in zip(trees.items(), durabilities, strict=True)
    }
    first, second = servers
    cpu: dict[tuple[str, str], list[float]] = {}
    ratios: dict[str, list[float]] = {case: [] for case in cases}
    try:
        signers = {name: server.signers() for name, server in servers.items()}
        print(
            f"paired server CPU per request, {os.cpu_count()} cores, c={args.concurrency}, "
            f"{args.durability}, --workers {args.workers}, {args.seconds:.1f} s per cell"
        )
        for number in range(1, args.rounds + 1):
            for case in cases:
                queues: dict[str, multiprocessing.Queue[tuple[int, float, float]]] = {
                    name: multiprocessing.Queue() for name in servers
                }
                start_at = time.time() + 0.5
                loads = [
                    multiprocessing.Process(target=_load, args=(signers[name][case],
                                            server.process.pid, args, start_at, queues[name]))
                    for name, server in servers.items()
                ]  # fmt: skip
                for load in loads:
                    load.start()
                line = []
                for name in servers:
                    answered, spent, p50 = queues[name].get()
                    micros = spent / max(1, answered) * 1e6
                    cpu.setdefault((case, name), []).append(micros)
                    line.append(f"{name} {micros:6,.0f} µs {answered / args.seconds:6,.0f}/s "
                                f"p50 {p50:.2f} ms")  # fmt: skip
                for load in loads:
                    load.join()
                ratios[case].append(cpu[(case, second)][-1] / cpu[(case, first)][-1])
                load_average = os.getloadavg()[0]
                print(
                    f"round {number} {case:<12} load {load_average:4.1f}  "
                    + "  |  ".join(line)
                    + f"  ratio {ratios[case][-1]:.3f}",
                    flush=True,
                )
        print("medians:")
        for case in cases:
            medians = "  ".join(
                f"{n} {statistics.median(cpu[(case, n)]):6,.0f} µs" for n in servers
            )
            print(f"  {case:<12} {medians}  {second}/{first} {statistics.median(ratios[case]):.3f}")
    finally:
        for server in servers.values():
            server.stop()


if __name__ == "__main__":
    main()
