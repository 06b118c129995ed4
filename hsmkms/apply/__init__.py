"""`hsmkms apply FILE [--plan]`: principals, keys and the XKS proxy's key stores made as
a TOML or YAML file describes them, idempotently (a second run changes nothing), each
change recorded in the audit trail (hsmkms/apply/plan.py says how things are matched)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hsmkms.apply.document import load
from hsmkms.apply.plan import Planner
from hsmkms.errors import KMSError
from hsmkms.library import KeyManager

__all__ = ["ApplyFailed", "apply_file"]
SHOWN_RESULTS = frozenset({"KeyId", "AccessKeyId"})  # what a change's answer adds to its line


class ApplyFailed(ValueError):
    """A change was refused: the ones before it stay made (applying again goes on)."""


def apply_file(
    km: KeyManager,
    path: Path,
    default_prefix: str,
    *,
    plan_only: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """{"Plan": [...]} with `plan_only`, else {"Applied": [...]} (and "AccessKeys" made
    now, each secret shown this once). `progress(done, total)` after each change."""
    planner = Planner(km, path, default_prefix)
    changes = planner.plan(load(path))
    if plan_only:
        return {"Plan": [change.shown() for change in changes]}
    applied = []
    for number, change in enumerate(changes, start=1):
        try:
            result = change.run()
        except (KMSError, ValueError, OSError) as exc:
            reason = f"{exc.code}: {exc.message}" if isinstance(exc, KMSError) else str(exc)
            raise ApplyFailed(
                f"{path}: {change.action} {change.target} (change {number} of {len(changes)}) "
                f"failed: {reason}; the {number - 1} changes before it were made, apply again "
                "once this is fixed"
            ) from None
        shown = change.shown()
        if isinstance(result, dict):
            shown.update({k: v for k, v in result.items() if k in SHOWN_RESULTS})
        applied.append(shown)
        if progress is not None:
            progress(number, len(changes))
    answer: dict[str, Any] = {"Applied": applied}
    if planner.generated:
        answer["AccessKeys"] = planner.generated
    return answer
