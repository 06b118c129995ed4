"""JSON from outside (request bodies, policy documents): one parser for it, whose
every failure is a ValueError. The standard parser raises RecursionError, no
ValueError, for arrays or objects nested deeper than the interpreter's recursion
limit: a few kilobytes of `[` were answered as an internal error (500) with a
logged traceback instead of the client's own error."""

from __future__ import annotations

import json
from typing import Any


def parse_json(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
