"""What one change of `hsmkms apply` is, and the small readers planning shares."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Result = dict[str, Any] | None


@dataclass
class Change:
    action: str  # the event it is recorded as
    target: str
    details: dict[str, Any]
    run: Callable[[], Result] = field(repr=False, compare=False)

    def shown(self) -> dict[str, Any]:
        return {"Action": self.action, "Target": self.target, **self.details}


@dataclass
class KeyHandle:
    """A key of the file: its id once known (a key made by the plan gets it when made)."""

    key_id: str | None

    def id(self) -> str:
        assert self.key_id is not None, "its CreateKey runs first"
        return self.key_id

    def on_key(
        self, operation: Callable[..., Any], member: str = "key_id", **arguments: Any
    ) -> Callable[[], Result]:
        """`operation` run later with this key's id as `member`, known by then."""

        def run() -> Result:
            answer: Result = operation(**{member: self.id()}, **arguments)
            return answer

        return run


def same_json(a: str, b: str) -> bool:
    return bool(json.loads(a) == json.loads(b))


def paged(page: Callable[[str | None], dict[str, Any]], member: str) -> Iterator[Any]:
    marker = None
    while True:
        answer = page(marker)
        yield from answer[member]
        if not answer.get("Truncated"):
            return
        marker = answer["NextMarker"]
