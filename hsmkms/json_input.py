"""JSON from outside (request bodies, policy documents, an external key store proxy's
answers): one parser for it, whose every failure is a ValueError, and whose text can
always be written out again.

The standard parser lets through what no client's UTF-8 can carry and what nothing
after it expects: a `\\ud800` escape (a lone surrogate) parses into a string that
cannot be encoded, which failed the audit record of the request and with it every
record of its group commit; bytes in UTF-16 or UTF-32 are guessed and decoded; and
arrays or objects nested past the recursion limit raise RecursionError (a 500 with a
logged traceback) instead of ValueError.
"""

from __future__ import annotations

import json
import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # how one gets into the text


def parse_json(text: str | bytes) -> Any:
    decoded = isinstance(text, bytes)
    if isinstance(text, bytes):
        text = text.decode("utf-8")  # strict: no surrogates; UnicodeDecodeError is a ValueError
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    escaped = "\\u" in text and _SURROGATE_ESCAPE.search(text) is not None
    if (escaped and _lone_surrogate(value)) or (not decoded and _SURROGATE.search(text)):
        raise ValueError("the JSON holds a lone surrogate, which UTF-8 cannot carry")
    return value


def _lone_surrogate(value: Any) -> bool:
    """Whether a string anywhere in `value` (keys included) holds a surrogate that an
    escaped pair did not join into one character. Iterative: as deep as json went."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False
