"""The process supervising `hsmkms serve --workers N`: uvicorn's, with one listening
socket per worker (hsmkms.api.listener.listening_sockets).

Worker `slot` always serves socket `slot`: a replacement (after a crash, a hang,
or SIGHUP) takes over the socket of the worker it replaces, whose waiting
connections it then accepts. The supervisor holds every socket open, so none is
closed while its worker is replaced. The number of workers is fixed at start
(`--workers`): SIGTTIN and SIGTTOU, uvicorn's signals to add or remove one,
are refused in the log.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import uvicorn
from prometheus_client.multiprocess import mark_process_dead
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess
from uvicorn.supervisors.multiprocess import Process

log = logging.getLogger("hsmkms.api")


class Supervisor(Multiprocess):
    """Also drops the live gauges of a worker that is gone, so that `/metrics` sums
    the processes serving, not those that were."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket], metrics: Path):
        super().__init__(config, sockets)
        self.processes_num = len(sockets)
        self._metrics = metrics

    def _start(self, slot: int) -> Process:
        process = Process(self.config, [self.sockets[slot]])
        process.start()
        return process

    def init_processes(self) -> None:
        self.processes = [self._start(slot) for slot in range(self.processes_num)]

    def restart_all(self) -> None:
        """SIGHUP: each worker in turn, its replacement ready before it stops."""
        for slot, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self._start(slot)
            ready_in = self.config.timeout_worker_healthcheck
            if not new.wait_until_ready(ready_in, self.should_exit):
                new.kill()
                new.join()
                if not self.should_exit.is_set():
                    log.error(
                        "SIGHUP: a new worker was not ready within %s s; worker %s keeps "
                        "serving and the restart stops here",
                        ready_in, old.pid,
                    )  # fmt: skip
                return
            old.terminate()
            old.join()
            self.processes[slot] = new
            self._forget(old)

    def keep_subprocess_alive(self) -> None:
        """A worker that died or stopped answering is replaced on its socket."""
        for slot, process in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            self._forget(process)
            if process.exitcode == STARTUP_FAILURE:
                # It failed before serving: the next one would fail the same way.
                log.error("worker %s failed to start: the server stops", process.pid)
                self.should_exit.set()
                return
            log.warning("worker %s ended (exit code %s): replaced", process.pid, process.exitcode)
            self.processes[slot] = self._start(slot)

    def handle_ttin(self) -> None:
        self._fixed("SIGTTIN")

    def handle_ttou(self) -> None:
        self._fixed("SIGTTOU")

    def _fixed(self, signal_name: str) -> None:
        log.warning(
            "%s ignored: the number of worker processes is set at start (--workers)",
            signal_name,
        )

    def _forget(self, process: Process) -> None:
        if process.pid is not None:
            mark_process_dead(process.pid, str(self._metrics))  # type: ignore[no-untyped-call]
