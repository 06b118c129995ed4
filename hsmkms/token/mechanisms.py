"""Which mechanisms the token offers, and a clear refusal when it lacks one."""

from __future__ import annotations

from typing import Any

from pkcs11 import Mechanism

from hsmkms.errors import UnsupportedOperationException


class MechanismSet:
    def __init__(self, slot: Any) -> None:
        self._available: frozenset[Mechanism] = frozenset(slot.get_mechanisms())

    def __contains__(self, mechanism: object) -> bool:
        return mechanism in self._available

    def require(self, *mechanisms: Mechanism) -> None:
        missing = [m.name for m in mechanisms if m not in self._available]
        if missing:
            raise UnsupportedOperationException(
                f"The token does not support the mechanism(s) {', '.join(missing)}."
            )
