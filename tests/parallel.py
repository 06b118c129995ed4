"""Parallel runs (pytest-xdist, `make test` uses `--dist loadgroup`).

Each xdist worker is its own pytest session: its own SoftHSM2 token (or NSS database),
peer tokens, data dirs under its own tmp_path_factory and PostgreSQL server, and
SOFTHSM2_CONF set in its own process. What workers must not share is arranged here.
Loaded by tests/conftest.py through `pytest_plugins`.
"""

from __future__ import annotations

import pytest

WIDER_THAN_A_TEST = ("module", "class", "package")

# Tests with timing windows, or that load the machine themselves (servers under attack,
# node processes, the XKS 250 ms budget): one after another on one worker, never two at
# once. A module opts in with `pytestmark = serial`; its assertions stay as they are.
serial = pytest.mark.xdist_group("serial")


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
