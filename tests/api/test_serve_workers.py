"""`hsmkms serve` on every core: with no flags one worker process per core, and what a
client or an operator sees is the server's, whichever worker answers — `/metrics`
counts every worker's requests, a principal's quota and the console's sign-in throttle
hold for all of them together, a worker that dies is replaced and its counts stay."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families

from hsmkms.api.handoff import HANDED_AHEAD
from hsmkms.config.defaults import available_cores
from tests.cli.test_cli import Cli, admin, serve, stop, wait_healthy
from tests.conftest import ROOT
from tests.console.console_support import Browserless
from tests.support import loopback
from tests.support.parallel import serial
from tests.support.processes import workers_of
from tests.support.resilience_helpers import client

pytestmark = [
    serial,
    pytest.mark.needs_token("softhsm", reason="`hsmkms init` makes its own SoftHSM2 token"),
]
ARN = "arn:aws:iam::111122223333:user/workers"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Cli, tuple[str, str]]:
    directory = tmp_path_factory.mktemp("workers")
    cli = Cli(directory / "data")
    cli.env["PYTHONPATH"] = str(ROOT)
    cli.ok("init")
    credential = cli.ok("principal", "add", "--arn", ARN)
    admin(cli, directory, ARN)
    return cli, (credential["AccessKeyId"], credential["SecretAccessKey"])


@contextmanager
def server(cli: Cli, *flags: str, **env: str) -> Iterator[tuple[str, int]]:
    saved = dict(cli.env)
    cli.env.update(env)
    try:
        process, port = serve(cli, *flags, one_process=False)
    finally:
        cli.env = saved
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process)
        yield url, process.pid
    finally:
        stop(process)


def wait_for_workers(pid: int, count: int, excluded: set[int] = frozenset()) -> set[int]:  # type: ignore[assignment]
    deadline = time.monotonic() + 60
    while True:
        workers = workers_of(pid)
        if len(workers) == count and not workers & excluded:
            return workers
        assert time.monotonic() < deadline, f"workers {workers}, wanted {count}"
        time.sleep(0.2)


def burst(url: str, keys: tuple[str, str], connections: int) -> Counter[str]:
    """One GenerateRandom on each of `connections` new connections, all at once, so
    that the supervisor hands them to every worker; the answers by error code."""
    clients = [client(url, *keys) for _ in range(connections)]
    answers: Counter[str] = Counter()
    start = threading.Barrier(connections)

    def call(kms: Any) -> None:
        start.wait()
        try:
            kms.generate_random(NumberOfBytes=8)
            answers["ok"] += 1
        except ClientError as exc:
            answers[exc.response["Error"]["Code"]] += 1

    threads = [threading.Thread(target=call, args=(kms,)) for kms in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers


def answered_by_chain(cli: Cli, operation: str) -> Counter[str]:
    """Audit records of `operation` by chain: each worker process writes its own."""
    chains: Counter[str] = Counter()
    for path in (Path(cli.env["HSMKMS_DATA_DIR"]) / "audit").glob("*.jsonl"):
        if ".checkpoints." in path.name:
            continue
        chain = path.name.rsplit(".", 2)[0]
        chains[chain] += path.read_text().count(f'"eventName":"{operation}"')
    return +chains


def scrape(url: str) -> dict[str, float]:
    """One /metrics scrape on a new connection: samples by name and labels."""
    text = loopback.get(url + "/metrics", headers={"connection": "close"}).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


GENERATE_RANDOM = "hsmkms_requests_total{error=,operation=GenerateRandom}"


SESSIONS_PER_WORKER = 2  # a SoftHSM2 token's default session pool


def wait_serving(url: str, pid: int, count: int) -> None:
    """Until `count` workers serve: each has opened its token (its sessions are in the
    gauge), and tells the supervisor it takes connections right after."""
    wait_for_workers(pid, count)
    deadline = time.monotonic() + 60
    while scrape(url)["hsmkms_token_sessions_max{}"] != count * SESSIONS_PER_WORKER:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def across_workers(cli: Cli, operation: str, one_round: Callable[[], None]) -> Counter[str]:
    """`one_round` (a new server and its assertions); the round's `operation` records
    must come from two worker processes or more, as the supervisor hands new
    connections to the workers in turn (a round served by one worker would prove
    nothing about several). A second round only if a worker was not serving yet when
    the first began (it joins a moment after its token's sessions are counted)."""
    for _ in range(2):
        before = answered_by_chain(cli, operation)
        one_round()
        chains = answered_by_chain(cli, operation) - before
        if len(chains) >= 2:
            return chains
    raise AssertionError(f"{operation} requests reached one worker: {chains}")


def test_serve_without_flags_runs_a_worker_per_core_and_metrics_count_them_all(
    data: tuple[Cli, tuple[str, str]],
) -> None:
    cli, keys = data
    cores = available_cores()

    def one_round() -> None:
        before = sum(answered_by_chain(cli, "GenerateRandom").values())
        with server(cli) as (url, pid):
            if cores > 1:
                wait_serving(url, pid, cores)
            else:
                assert workers_of(pid) == set()  # one core: one process, no supervisor
            assert burst(url, keys, 24) == {"ok": 24}
            assert sum(answered_by_chain(cli, "GenerateRandom").values()) - before == 24
            for _ in range(10):  # whichever worker answers the scrape
                assert scrape(url)[GENERATE_RANDOM] == 24

    if cores == 1:
        one_round()
    else:  # the burst spread over the workers, none left with a small share
        assert min(across_workers(cli, "GenerateRandom", one_round).values()) >= 24 // (2 * cores)


def test_a_quota_holds_across_workers(data: tuple[Cli, tuple[str, str]]) -> None:
    cli, keys = data
    quota = {"HSMKMS_RATE_LIMIT": "0.2", "HSMKMS_RATE_BURST": "8"}

    def one_round() -> None:
        with server(cli, "--workers", "2", **quota) as (url, pid):
            wait_serving(url, pid, 2)
            started = time.monotonic()
            answers = burst(url, keys, 30)
            elapsed = time.monotonic() - started
        assert sum(answers.values()) == 30
        assert set(answers) <= {"ok", "ThrottlingException"}
        # The burst, and what the rate refilled meanwhile: not twice that.
        assert 8 <= answers["ok"] <= 8 + int(elapsed * 0.2) + 1, answers

    across_workers(cli, "GenerateRandom", one_round)


def test_failed_console_sign_ins_are_throttled_for_the_server(
    data: tuple[Cli, tuple[str, str]],
) -> None:
    """Wrong secrets for one access key id, all at once on new connections: the server
    allows its budget of failures, not one budget per worker."""
    cli, keys = data
    limits = {"HSMKMS_CONSOLE_SIGNIN_FAILURES": "3", "HSMKMS_CONSOLE_SIGNIN_WINDOW_SECONDS": "3600"}

    def one_round() -> None:
        with server(cli, "--workers", "2", **limits) as (url, pid):
            wait_serving(url, pid, 2)
            statuses = wrong_sign_ins(url, keys[0], 16)
        assert statuses == {401: 3, 429: 13}, statuses

    across_workers(cli, "ConsoleLogin", one_round)


def wrong_sign_ins(url: str, access_key_id: str, count: int) -> Counter[int]:
    """`count` sign-ins with a wrong secret, each on a new connection, made at once."""
    statuses: Counter[int] = Counter()
    start = threading.Barrier(count)

    def sign_in() -> None:
        start.wait()
        browser = Browserless(url)
        try:
            statuses[browser.sign_in(access_key_id, "not-the-secret").status_code] += 1
        finally:
            browser.close()

    threads = [threading.Thread(target=sign_in) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return statuses


def test_a_worker_that_dies_is_replaced_and_the_counts_stay(
    data: tuple[Cli, tuple[str, str]],
) -> None:
    cli, keys = data
    with server(cli, "--workers", "2") as (url, pid):
        workers = wait_for_workers(pid, 2)
        assert burst(url, keys, 16) == {"ok": 16}
        assert scrape(url)[GENERATE_RANDOM] == 16
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        wait_for_workers(pid, 2, excluded={victim})
        deadline = time.monotonic() + 60
        # The replacement is ready once its gauges are in: the pools of the two workers
        # alive (2 sessions each), never the dead one's too.
        while scrape(url)["hsmkms_token_sessions_max{}"] != 2 * SESSIONS_PER_WORKER:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        for _ in range(6):  # whichever worker answers
            samples = scrape(url)
            assert samples[GENERATE_RANDOM] == 16  # the dead worker's requests still count
            assert samples["hsmkms_token_sessions_max{}"] == 2 * SESSIONS_PER_WORKER
            assert (
                loopback.get(url + "/healthz", headers={"connection": "close"}).status_code == 200
            )
        assert burst(url, keys, 8) == {"ok": 8}


def test_workers_stop_when_their_supervisor_is_killed(data: tuple[Cli, tuple[str, str]]) -> None:
    cli, keys = data
    with server(cli, "--workers", "2", HSMKMS_SHUTDOWN_DRAIN_SECONDS="1") as (url, pid):
        workers = wait_for_workers(pid, 2)
        try:
            assert burst(url, keys, 4) == {"ok": 4}
            os.kill(pid, signal.SIGKILL)  # no one left to replace, stop or count them
            deadline = time.monotonic() + 30
            while any(Path(f"/proc/{worker}").exists() for worker in workers):
                assert time.monotonic() < deadline, "the workers serve on as orphans"
                time.sleep(0.2)
            with pytest.raises(httpx.ConnectError):
                loopback.get(url + "/healthz")
        finally:
            for worker in workers:  # any left as orphans
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker, signal.SIGKILL)


def test_a_rolling_restart_loses_no_request(data: tuple[Cli, tuple[str, str]]) -> None:
    """SIGHUP replaces the workers one by one while clients keep opening connections:
    a stopping worker gives back what it was handed but had not taken yet."""
    cli, keys = data
    with server(cli, "--workers", "2") as (url, pid):
        wait_serving(url, pid, 2)
        first = workers_of(pid)
        answers: Counter[str] = Counter()
        done = threading.Event()

        def keep_calling() -> None:
            while not done.is_set():
                try:
                    client(url, *keys).generate_random(NumberOfBytes=8)
                    answers["ok"] += 1
                except Exception as exc:  # each failure is counted by its kind
                    answers[type(exc).__name__] += 1

        callers = [threading.Thread(target=keep_calling) for _ in range(4)]
        for caller in callers:
            caller.start()
        try:
            os.kill(pid, signal.SIGHUP)
            wait_for_workers(pid, 2, excluded=first)
            time.sleep(1)  # and calls to the new workers alone
        finally:
            done.set()
            for caller in callers:
                caller.join(60)
        assert answers["ok"] > 20 and set(answers) == {"ok"}, answers


def test_a_stopped_worker_holds_few_new_connections(
    data: tuple[Cli, tuple[str, str]],
) -> None:
    """A worker that does not run (SIGSTOP here; a loop stuck in practice) is handed
    HANDED_AHEAD connections of a burst at most: the rest go to the worker that runs,
    and nothing is lost."""
    cli, keys = data
    with server(cli, "--workers", "2") as (url, pid):
        wait_serving(url, pid, 2)
        clients = [client(url, *keys) for _ in range(40)]
        stopped = min(workers_of(pid))
        os.kill(stopped, signal.SIGSTOP)
        try:
            done: list[float] = []
            started = time.monotonic()

            def call(kms: Any) -> None:
                kms.generate_random(NumberOfBytes=8)
                done.append(time.monotonic() - started)

            threads = [threading.Thread(target=call, args=(kms,)) for kms in clients]
            for thread in threads:
                thread.start()
            time.sleep(5)
            assert len(done) >= 40 - HANDED_AHEAD, done
        finally:
            os.kill(stopped, signal.SIGCONT)
        for thread in threads:
            thread.join(30)
        assert len(done) == 40


def test_a_supervisor_that_fails_takes_its_workers_with_it(
    data: tuple[Cli, tuple[str, str]],
) -> None:
    """A supervisor out of descriptors cannot start the workers SIGHUP asks for: it
    fails, and the whole server ends (for its service manager to restart) instead of
    hanging with workers that no connection reaches."""
    cli, _keys = data
    with server(cli, "--workers", "2") as (url, pid):
        wait_serving(url, pid, 2)
        workers = workers_of(pid)
        in_use = len(list(Path(f"/proc/{pid}/fd").iterdir()))
        subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={in_use + 2}:"], check=True)
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + 60
        while running(pid) or any(running(worker) for worker in workers):
            assert time.monotonic() < deadline, "the server hangs after its supervisor failed"
            time.sleep(0.2)


def running(pid: int) -> bool:
    """Not ended: a process ended but not yet reaped (the test's child) is a zombie."""
    try:
        return " Z " not in Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
