"""`/healthz` of one worker of `serve --workers N` reports the token they share: a token
call stuck past its deadline in another worker makes every worker's answer 503."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.multiprocess import mark_process_dead

from hsmkms.api.shared import METRICS_DIR_ENV
from hsmkms.library import KeyManager
from tests.support import loopback
from tests.support.resilience_helpers import serving

# Another worker process: what its gauges write to the shared directory every second.
OTHER_WORKER = """
from prometheus_client import Gauge
Gauge("hsmkms_token_calls_overdue", "", multiprocess_mode="livesum").set(1)
"""


def other_worker_with_a_stuck_call(directory: Path) -> int:
    env = {**os.environ, METRICS_DIR_ENV: str(directory)}
    worker = subprocess.run([sys.executable, "-c", OTHER_WORKER], env=env, check=True)
    assert worker.returncode == 0
    (written,) = directory.glob("gauge_livesum_*.db")
    return int(written.stem.rsplit("_", 1)[1])


def test_a_call_stuck_in_another_worker_makes_this_one_unhealthy(
    km: KeyManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(METRICS_DIR_ENV, str(tmp_path))  # this process: a worker of a server
    with serving(km) as (url, _):
        assert loopback.get(url + "/healthz").json()["token"] == "ok"
        pid = other_worker_with_a_stuck_call(tmp_path)
        answer = loopback.get(url + "/healthz")
        assert answer.status_code == 503
        assert answer.json()["token"] == "error: 1 token call(s) past their deadline"
        mark_process_dead(pid, str(tmp_path))  # what the supervisor does when it is gone
        answer = loopback.get(url + "/healthz")
        assert answer.status_code == 200, answer.text
