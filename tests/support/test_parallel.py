"""The parallel-run arrangements of tests/support/parallel.py, checked where they act."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support.parallel import SERIAL_NICE, serial

ROOT_USER = os.geteuid() == 0


def nice_of_every_thread() -> set[int]:
    """Every thread's nice, but for the servers' slow-lane threads an earlier test left
    (they lower their own priority on purpose, hsmkms/api/workers.py)."""
    slow = {t.native_id for t in threading.enumerate() if t.name.startswith("hsmkms-slow-")}
    tasks = Path(f"/proc/{os.getpid()}/task").iterdir()
    return {
        os.getpriority(os.PRIO_PROCESS, int(task.name))
        for task in tasks
        if int(task.name) not in slow
    }


@serial
@pytest.mark.skipif(not ROOT_USER, reason="only root may raise a priority (CI runs as root)")
def test_the_serial_group_runs_at_a_higher_priority_and_so_do_its_children() -> None:
    started = threading.Thread(target=threading.Event().wait, args=(0.5,))
    started.start()  # a thread started by the test inherits it too
    assert nice_of_every_thread() == {SERIAL_NICE}
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpriority(os.PRIO_PROCESS, 0))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert int(child.stdout) == SERIAL_NICE
    started.join()


def test_a_module_with_a_module_scoped_fixture_is_one_group(
    request: pytest.FixtureRequest, one_per_module: str
) -> None:
    groups = [mark.args[0] for mark in request.node.iter_markers("xdist_group")]
    assert groups == ["tests/support/test_parallel.py"], groups


@pytest.fixture(scope="module")
def one_per_module() -> str:
    return "built once per module"
