"""Who is calling, for the length of one request (set by the API layer).

KeyManager called directly (library, CLI) has no caller: the operator is trusted.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class CallerInfo:
    principal_arn: str
    source_ip: str | None = None
    secure_transport: bool = False

    @property
    def account(self) -> str:
        return self.principal_arn.split(":")[4]


current_caller: ContextVar[CallerInfo | None] = ContextVar("hsmkms_caller", default=None)


@dataclass(frozen=True)
class Credential:
    access_key_id: str
    secret_access_key: str
    principal_arn: str

    def __repr__(self) -> str:  # never show the secret
        return f"Credential({self.access_key_id!r}, principal={self.principal_arn!r})"
