"""Parallel runs (pytest-xdist, `make test` uses `--dist loadgroup`).

Each xdist worker is its own pytest session: its own SoftHSM2 token (or NSS database),
peer tokens, data dirs under its own tmp_path_factory and PostgreSQL server, and
SOFTHSM2_CONF set in its own process. What workers must not share is arranged here.
Loaded by tests/conftest.py through `pytest_plugins`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

WIDER_THAN_A_TEST = ("module", "class", "package")

# Tests with timing windows, or that load the machine themselves (servers under attack,
# node processes, the XKS 250 ms budget): one after another on one worker, never two at
# once. A module opts in with `pytestmark = serial`; its assertions stay as they are.
serial = pytest.mark.xdist_group("serial")
# The worker that runs them does so at a higher CPU priority, so that on a busy machine
# (the other workers, anything else) their windows time hsmkms, not the neighbours.
SERIAL_NICE = -5
_PRIORITY_ASKED = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    # xdist registers it too; this keeps `-p no:xdist` runs free of unknown-mark warnings.
    config.addinivalue_line("markers", "xdist_group(name): run on one worker (--dist loadgroup)")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A module whose tests share a module-scoped fixture (an `hsmkms init` data dir, a
    running server) runs on one worker, so that fixture is built once, not per worker.
    An explicit `xdist_group` mark wins."""
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        fixtures = getattr(item, "_fixtureinfo", None)
        if fixtures is None:
            continue
        if any(
            definitions[-1].scope in WIDER_THAN_A_TEST
            for definitions in fixtures.name2fixturedefs.values()
        ):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


def _in_serial_group(item: pytest.Item) -> bool:
    return any(mark.args[:1] == ("serial",) for mark in item.iter_markers("xdist_group"))


def raise_priority(nice: int = SERIAL_NICE) -> bool:
    """Every thread of this process (Linux nice values are per thread) and the processes
    it starts from now on run at `nice`. False where that is not allowed (not root)."""
    try:
        for task in Path(f"/proc/{os.getpid()}/task").iterdir():
            os.setpriority(os.PRIO_PROCESS, int(task.name), nice)
    except (PermissionError, FileNotFoundError):
        return False
    return True


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures start servers
def pytest_runtest_setup(item: pytest.Item) -> None:
    if _in_serial_group(item) and not item.config.stash.get(_PRIORITY_ASKED, False):
        item.config.stash[_PRIORITY_ASKED] = True
        raise_priority()
