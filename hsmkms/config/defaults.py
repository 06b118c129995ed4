"""What hsmkms assumes when nothing is configured, and facts it reads off the machine."""

from __future__ import annotations

import math
import os
from functools import cache
from pathlib import Path

SOFTHSM2_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
DEFAULT_ACCOUNT_ID = "111122223333"
DEFAULT_REGION = "us-east-1"
DEFAULT_TOKEN_LABEL = "hsmkms"
PIN_FILE_NAME = "user.pin"


def default_pkcs11_lib() -> str:
    for candidate in SOFTHSM2_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return SOFTHSM2_CANDIDATES[0]


def is_softhsm(module_path: str) -> bool:
    return "softhsm" in Path(module_path).name.lower()


def default_pool_size(module_path: str) -> int:
    """SoftHSM2 serialises calls internally (measured: two threads do half the work
    of one), so a few sessions serve it best; HSMs run sessions in parallel."""
    return 2 if is_softhsm(module_path) else 8


MAX_WORKERS = 64  # `serve` processes: each holds its own token sessions and connections
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count),
    fewer where a cgroup v2 CPU quota allows less (a container given 2 CPUs of 64):
    what `hsmkms serve` runs as many processes as, unless told otherwise."""
    if hasattr(os, "process_cpu_count"):  # Python 3.13
        cores: int = os.process_cpu_count() or 1
    elif hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0)) or 1
    else:
        cores = os.cpu_count() or 1
    return max(1, min(cores, _cgroup_quota(CGROUP_CPU_MAX) or cores, MAX_WORKERS))


def _cgroup_quota(path: Path) -> int | None:
    """CPUs a cgroup v2 `cpu.max` ("<quota> <period>" or "max <period>") allows, rounded up."""
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


@cache
def known_regions() -> frozenset[str]:
    """Every region botocore knows, in every partition (aws, aws-cn, aws-us-gov, ...)."""
    from botocore.loaders import create_loader

    endpoints = create_loader().load_data("endpoints")
    return frozenset(
        region for partition in endpoints["partitions"] for region in partition["regions"]
    )


@cache
def kms_operation_names() -> frozenset[str]:
    """The operations of botocore's KMS service model (what a quota may name)."""
    from botocore.loaders import create_loader

    model = create_loader().load_service_model("kms", "service-2")
    return frozenset(model["operations"])
