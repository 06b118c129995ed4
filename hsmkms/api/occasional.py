"""A warning logged now and then, not once per event: a cap that every connection of a
flood reaches would otherwise write a line each."""

from __future__ import annotations

import logging
import time


class OccasionalWarning:
    """Logs through `logger` at most once every `every_seconds`; the rest are dropped."""

    def __init__(self, logger: logging.Logger, every_seconds: float = 60.0) -> None:
        self._logger, self._every = logger, every_seconds
        self._last = float("-inf")

    def __call__(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            self._logger.warning(message, *args)
