"""What the worker processes of one `hsmkms serve --workers N` share: a private
directory the parent makes before it starts them and removes when it stops.

It holds prometheus_client's multiprocess files (`metrics/`, so that a scrape answered
by any worker counts every worker's requests) and the rate limiter's bucket table
(`rate-buckets`, so that a principal's quota holds across the processes). It lives on
tmpfs where there is one (/dev/shm): nothing in it outlives the server or is worth a
disk write. The workers find it through the environment they inherit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

SHARED_DIR_ENV = "HSMKMS_SERVE_SHARED_DIR"
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client reads it at import
PREFIX = "hsmkms-serve-"
RATE_TABLE = "rate-buckets"
TMPFS = Path("/dev/shm")


def shared_dir() -> Path | None:
    """This worker's shared directory; None in a process serving alone."""
    value = os.environ.get(SHARED_DIR_ENV)
    return Path(value) if value else None


@contextlib.contextmanager
def shared_directory(parent: Path | None = None) -> Iterator[Path]:
    """A new private (0700) directory for the workers about to start, named in the
    environment they inherit; removed, and the environment restored, on leaving.
    Directories left by a server that was killed (its pid gone) are removed first."""
    base = parent or (TMPFS if TMPFS.is_dir() and os.access(TMPFS, os.W_OK) else None)
    base = base or Path(tempfile.gettempdir())
    _remove_abandoned(base)
    directory = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=base))  # 0700
    (directory / "metrics").mkdir(mode=0o700)
    saved = {name: os.environ.get(name) for name in (SHARED_DIR_ENV, METRICS_DIR_ENV)}
    os.environ[SHARED_DIR_ENV] = str(directory)
    os.environ[METRICS_DIR_ENV] = str(directory / "metrics")
    try:
        yield directory
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(directory, ignore_errors=True)


def _remove_abandoned(base: Path) -> None:
    """This user's directories whose server process no longer exists."""
    with contextlib.suppress(OSError):
        for candidate in base.glob(f"{PREFIX}*-*"):
            pid = candidate.name.removeprefix(PREFIX).split("-", 1)[0]
            try:
                status = candidate.lstat()  # a link is nobody's directory: left alone
                if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.getuid():
                    continue
                if not pid.isdigit():
                    continue
                os.kill(int(pid), 0)
            except ProcessLookupError:
                shutil.rmtree(candidate, ignore_errors=True)
            except OSError:
                continue  # alive (another user's pid: PermissionError) or gone meanwhile
