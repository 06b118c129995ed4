"""The sockets `hsmkms serve` listens on (hsmkms.api.listener), real ones on loopback:
one per worker process, over which the kernel spreads new connections."""

from __future__ import annotations

import socket

import pytest

from hsmkms.api.listener import listening_sockets
from hsmkms.config import ConfigError, ServingSettings
from tests.conftest import free_port


def accepted(sock: socket.socket) -> int:
    """How many connections wait on `sock` (accepted here and closed)."""
    sock.setblocking(False)
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def test_each_worker_gets_a_socket_and_a_share_of_new_connections() -> None:
    port = free_port()
    sockets = listening_sockets(ServingSettings(port=port, workers=3))
    try:
        assert len(sockets) == 3
        assert {sock.getsockname()[1] for sock in sockets} == {port}
        assert all(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for sock in sockets)
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(48)]
        shares = [accepted(sock) for sock in sockets]
        for client in clients:
            client.close()
        # A burst on one shared socket could all go to one worker; here each socket
        # gets some (all 48 on two of three sockets: about 1 in 400 million).
        assert sum(shares) == 48 and min(shares) > 0, shares
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.parametrize("first, second", [(1, 2), (2, 2), (2, 1)])
def test_a_second_server_on_the_port_is_refused_not_joined(first: int, second: int) -> None:
    port = free_port()
    sockets = listening_sockets(ServingSettings(port=port, workers=first))
    try:
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}: Address"):
            listening_sockets(ServingSettings(port=port, workers=second))
    finally:
        for sock in sockets:
            sock.close()
