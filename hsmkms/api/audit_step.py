"""THE audit step of every answered call, whichever face or console made it: the
call's one record (hsmkms/audit/outcome.py's `call_record`, from the Outcome alone),
submitted to the trail and, with durability `sync`, on disk before `record` returns —
awaited, so the event loop serves other requests while the disk works. The caller
answers only after it: no answer without its record, even across a crash.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from hsmkms.audit.log import AuditLog
from hsmkms.audit.outcome import Outcome, call_record, kms_names
from hsmkms.errors import KMSError, KMSInternalException

log = logging.getLogger("hsmkms.api")
NOT_RECORDED = "The audit record could not be written."


async def record(
    audit: AuditLog | None,
    outcome: Outcome,
    *,
    request_id: str,
    source_ip: str | None,
    user_agent: str | None = None,
    processing_seconds: float | None = None,
    names: Callable[[KMSError], tuple[str, str]] = kms_names,
) -> None:
    """Record one call; returns once its record is durable (durability `async`: once
    queued). KMSInternalException when the trail cannot take it: answer that instead.
    `names`: how the caller's protocol names errors (the record says what they were told)."""
    if audit is None:
        return
    event = call_record(
        outcome,
        request_id=request_id,
        source_ip=source_ip,
        user_agent=user_agent,
        processing_seconds=processing_seconds,
        names=names,
    )
    await record_event(audit, event, f"{request_id} of {outcome.operation}")


async def record_event(audit: AuditLog | None, event: dict[str, Any], what: str) -> None:
    """The durability part of the step, for a record made elsewhere (an operator-shaped
    one, e.g. development mode's reset): on disk before it returns, or
    KMSInternalException."""
    if audit is None:
        return
    durable = audit.submit_awaitable(event, asyncio.get_running_loop())
    if durable is None:
        return
    try:
        await durable
    except Exception as exc:  # no answer the trail does not hold
        log.exception("audit record %s not written", what)
        raise KMSInternalException(NOT_RECORDED) from exc


def record_event_blocking(audit: AuditLog | None, event: dict[str, Any], what: str) -> None:
    """The same, for a caller on a worker thread (the console's pages)."""
    if audit is None:
        return
    durable = audit.submit(event)
    if durable is None:
        return
    try:
        durable.result()
    except Exception as exc:
        log.exception("audit record %s not written", what)
        raise KMSInternalException(NOT_RECORDED) from exc
