"""`scripts/bench.py cpu --profile DIR`: where a server's CPU goes, per case.

py-spy samples the server (non-blocking, `--gil`: the thread holding the GIL, i.e. the
Python work, at RATE per second) while the load generator runs one case; DIR/<case>.txt
holds the raw collapsed stacks (for a flame graph: `flamegraph.pl`, speedscope) and
DIR/budget.md the per-stage budget: each sample goes to the stage of its frames (see
STAGES), as µs per request; the rest of the measured CPU per request ran outside the
GIL (system calls, the token's and hashing's native code, GIL hand-offs between threads).
Sampling without `--gil` counts waiting threads too, which misleads more.

Where `perf` is installed, a second run of each case samples the server's CPU by
shared object (`perf record` at PERF_RATE per second, every thread, kernel included):
the interpreter, the kernel (system calls, context switches, the audit's fsync), libc
(malloc, memcpy), the token's and the hashes' native code. It says what the "outside
the GIL" line is made of: on this project's machine mostly the interpreter's own
GIL hand-offs and the kernel's context switches, not the token.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

from bench_cpu import process_cpu
from loadgen import PathSigner, Result, Signer, _run

RATE = 400
PERF_RATE = 997
SHOWN_OBJECTS = 8  # the largest shared objects in a case's native split
# (stage, path fragments). A sample's stage is that of its innermost frame matching
# one of these, except that "operation" never takes over from the stages before it
# (the key resolver asked by authorization is authorization's time).
STAGES = (
    ("token call", ("hsmkms/token/", "pkcs11/")),
    ("audit", ("hsmkms/audit/", "hsmkms/api/audit_step.py")),
    ("SigV4", ("hsmkms/api/sigv4.py", "hsmkms/xks/credentials.py", "hsmkms/policy/principals.py")),
    ("validation", ("hsmkms/api/shapes.py",)),
    ("authorization", ("hsmkms/policy/", "hsmkms/xks/policy.py")),
    ("metrics + access log", ("hsmkms/api/observe.py",)),
    (
        "operation (keys, store)",
        (
            "hsmkms/operations/",
            "hsmkms/keys/",
            "hsmkms/store/",
            "hsmkms/xks/operations.py",
            "hsmkms/xks/table.py",
        ),
    ),
)
STICKY = {"audit", "SigV4", "validation", "authorization", "metrics + access log"}
# Samples outside those stages, by their innermost frame.
LEAVES = (
    ("JSON/base64", ("json/", "base64", "orjson", "binascii")),
    (
        "HTTP parsing + ASGI",
        (
            "uvicorn/",
            "httptools",
            "h11/",
            "starlette/",
            "hsmkms/api/protocol.py",
            "hsmkms/api/body.py",
            "hsmkms/api/app.py",
        ),
    ),
    ("thread hops", ("hsmkms/api/workers.py", "threading.py", "queue.py", "concurrent/futures")),
    (
        "edge + faces",
        (
            "hsmkms/api/edge.py",
            "hsmkms/api/kms.py",
            "hsmkms/api/xks_proxy.py",
            "hsmkms/api/invoke.py",
            "hsmkms/api/errors.py",
            "hsmkms/api/refusals.py",
        ),
    ),
    ("event loop", ("asyncio/", "selectors.py", "uvloop")),
    ("logging", ("logging/",)),
)


def measured(
    pid: int, signer: Signer | PathSigner, args: argparse.Namespace
) -> tuple[Result, float]:
    """One load-generator run of the case: its result and the server's µs of CPU per request."""
    before = process_cpu(pid)
    result = asyncio.run(_run(signer, args.concurrency, args.seconds))
    return result, (process_cpu(pid) - before) / max(1, len(result.latencies)) * 1e6


def stage_of(frames: list[str]) -> str:
    stage = ""
    for frame in frames:  # root to leaf
        for name, fragments in STAGES:
            if any(fragment in frame for fragment in fragments):
                if not (stage in STICKY and name == "operation (keys, store)"):
                    stage = name
                break
    if stage:
        return stage
    for frame in reversed(frames):
        for name, fragments in LEAVES:
            if any(fragment in frame for fragment in fragments):
                return name
    return "other"


def budget(stacks: Path) -> Counter[str]:
    samples: Counter[str] = Counter()
    for line in stacks.read_text().splitlines():
        path, _, count = line.rpartition(" ")
        if path and count.isdigit():
            samples[stage_of(path.split(";"))] += int(count)
    return samples


def profile(
    pid: int,
    signers: dict[str, Signer | PathSigner],
    cases: list[str],
    args: argparse.Namespace,
    out: Path,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report = [
        f"# Per-stage budget, concurrency {args.concurrency}, --workers {args.workers}",
        f"load average {os.getloadavg()[0]:.1f}; µs of server CPU per request",
        "",
    ]
    for case in cases:
        signer = signers[case]
        asyncio.run(_run(signer, args.concurrency, 0.5))  # warm-up
        stacks = out / f"{case.replace(' ', '_')}.txt"
        command = [
            "py-spy",
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(RATE),
            "--gil",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(stacks),
            "--duration",
            str(int(args.seconds) + 1),
        ]
        if args.workers > 1:
            command.append("--subprocesses")
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result, per_request = measured(pid, signer, args)
        spy.wait()
        samples = budget(stacks)
        requests = max(1, len(result.latencies))
        report += [
            f"## {case}: {per_request:,.0f} µs CPU per request, {result.rate:,.0f} req/s",
            "",
            "| stage | µs per request |",
            "|---|---|",
        ]
        held = 0.0
        for stage, count in samples.most_common():
            micros = count / RATE / requests * 1e6
            held += micros
            report.append(f"| {stage} | {micros:,.0f} |")
        report += [f"| outside the GIL (kernel, native code, hand-offs) | "
                   f"{max(0.0, per_request - held):,.0f} |", ""]  # fmt: skip
        shown = len(samples) + 6
        if shutil.which("perf"):
            split = native_split(pid, signer, args, out / f"{case.replace(' ', '_')}.perf")
            report += split
            shown += len(split)
        print("\n".join(report[-shown:]), flush=True)
    (out / "budget.md").write_text("\n".join(report) + "\n")


_DSO_LINE = re.compile(r"^\s*([0-9.]+)%\s+(\S+)")


def native_split(pid: int, signer: Signer | PathSigner, args: argparse.Namespace,
                 data: Path) -> list[str]:  # fmt: skip
    """The case once more under `perf record`: µs per request by shared object."""
    command = ["perf", "record", "-q", "-F", str(PERF_RATE), "-p", str(pid), "-o", str(data)]
    perf = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, per_request = measured(pid, signer, args)
    perf.send_signal(2)  # SIGINT: perf writes its data and ends
    perf.wait()
    shares = subprocess.run(
        ["perf", "report", "-i", str(data), "--no-children", "--sort", "dso", "--stdio"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    lines = [f"By shared object (perf, all threads; this run {per_request:,.0f} µs per request):",
             "", "| shared object | µs per request |", "|---|---|"]  # fmt: skip
    found = [m for m in map(_DSO_LINE.match, shares.splitlines()) if m]
    for match in found[:SHOWN_OBJECTS]:
        lines.append(f"| {match[2]} | {float(match[1]) / 100 * per_request:,.0f} |")
    return [*lines, ""]
