"""What the worker processes of one `hsmkms serve` share (hsmkms.api.shared), the
quota table they share it through, and how many of them there are by default."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from hsmkms.api.ratelimit import BucketTable
from hsmkms.api.shared import METRICS_DIR_ENV, PREFIX, SHARED_DIR_ENV, shared_directory
from hsmkms.config import Quota, load_settings
from hsmkms.config import defaults as config_defaults
from hsmkms.config.defaults import MAX_WORKERS, available_cores


def test_the_shared_directory_is_private_named_to_the_workers_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(METRICS_DIR_ENV, "/the/operator's/own")
    monkeypatch.delenv(SHARED_DIR_ENV, raising=False)
    with shared_directory(tmp_path) as directory:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert stat.S_IMODE((directory / "metrics").stat().st_mode) == 0o700
        assert os.environ[SHARED_DIR_ENV] == str(directory)
        assert os.environ[METRICS_DIR_ENV] == str(directory / "metrics")
        (directory / "metrics" / "counter_1.db").write_bytes(b"x")
    assert not directory.exists()
    assert os.environ[METRICS_DIR_ENV] == "/the/operator's/own"
    assert SHARED_DIR_ENV not in os.environ


def test_directories_of_a_killed_server_are_removed_at_the_next_start(tmp_path: Path) -> None:
    child = multiprocessing.get_context("spawn").Process(target=os.getpid)
    child.start()
    child.join()
    abandoned = tmp_path / f"{PREFIX}{child.pid}-abcd"
    abandoned.mkdir()
    alive = tmp_path / f"{PREFIX}{os.getpid()}-efgh"  # a server still running
    alive.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    linked = tmp_path / f"{PREFIX}{child.pid}-link"
    linked.symlink_to(elsewhere)  # not a directory of ours: left alone
    with shared_directory(tmp_path):
        assert not abandoned.exists()
        assert alive.exists() and linked.is_symlink() and elsewhere.exists()


def _take_all(path: str, count: int, allowed: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    table = BucketTable(Path(path))
    quota = Quota(rate=0.001, burst=30)
    allowed.put(sum(table.take("arn:aws:iam::1:user/one\0", quota, _clock) for _ in range(count)))


def _clock() -> float:
    return 0.0  # no refill: the burst alone


def test_processes_sharing_a_bucket_table_share_the_quota(tmp_path: Path) -> None:
    spawn = multiprocessing.get_context("spawn")
    allowed: multiprocessing.Queue = spawn.Queue()  # type: ignore[type-arg]
    path = str(tmp_path / "rate-buckets")
    processes = [spawn.Process(target=_take_all, args=(path, 40, allowed)) for _ in range(3)]
    for process in processes:
        process.start()
    counts = [allowed.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(60)
    assert sum(counts) == 30  # not 30 each
    assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600


def test_serve_runs_one_process_per_core_unless_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"HSMKMS_DATA_DIR": str(tmp_path)}
    assert load_settings(env).serving.workers is None
    assert load_settings(env).serving.processes == available_cores()
    assert load_settings({**env, "HSMKMS_WORKERS": "1"}).serving.processes == 1
    assert 1 <= available_cores() <= min(MAX_WORKERS, len(os.sched_getaffinity(0)))
    quota = tmp_path / "cpu.max"
    monkeypatch.setattr(config_defaults, "CGROUP_CPU_MAX", quota)
    quota.write_text("150000 100000\n")  # a container given 1.5 CPUs
    assert available_cores() == min(2, len(os.sched_getaffinity(0)))
    quota.write_text("max 100000\n")
    assert available_cores() == min(MAX_WORKERS, len(os.sched_getaffinity(0)))
