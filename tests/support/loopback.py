"""httpx's one-call functions (get, post, request) and clients for the tests' loopback
servers, with one TLS context per test process: httpx builds a new one for every call or
client otherwise, loading the CA bundle each time (~20-30 ms of CPU), which was a fifth of
the suite's in-process CPU. A `verify=` given by the caller (a test CA) still wins; the
one-call functions keep nothing alive between calls (a kept-alive connection would hold a
stopping server open)."""

from __future__ import annotations

import functools
import ssl
from typing import Any

import httpx


@functools.cache
def _context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("verify", _context())
    return httpx.request(method, url, **kwargs)


def get(url: str, **kwargs: Any) -> httpx.Response:
    return request("GET", url, **kwargs)


def post(url: str, **kwargs: Any) -> httpx.Response:
    return request("POST", url, **kwargs)


def client(**kwargs: Any) -> httpx.Client:
    kwargs.setdefault("verify", _context())
    return httpx.Client(**kwargs)
