"""A key whose material is not where its metadata says it is.

One rule for every place that finds out: the maintenance pass over the main token, a
restore that could not carry some material, and connecting a custom key store's token.
Versions whose object is absent are marked Missing (Active again once it is back); a
key whose current version is absent becomes Unavailable, AWS's state for a KMS key whose
material cannot be reached, remembering the state it had, which it gets back when the
material returns. An Unavailable key refuses cryptography and EnableKey with
KMSInvalidStateException, so a key without its material is never Enabled.
"""

from __future__ import annotations

import logging
from collections.abc import Container
from dataclasses import replace

from hsmkms.store.model import KeyRecord, KeyState, KeyVersion, VersionState
from hsmkms.token import Custody, MaterialKind, MaterialRef, Token, carry_refusal

log = logging.getLogger("hsmkms.keys")

# Written into KeyRecord.extra while material is missing, to restore the state later.
STATE_BEFORE_UNAVAILABLE = "state_before_unavailable"


def material_state(
    record: KeyRecord, versions: list[KeyVersion], present: Container[int]
) -> tuple[KeyRecord, list[KeyVersion]]:
    """The key and the versions whose state changes, given which version numbers have
    their object in the token (`present`). Nothing changes unless a version does."""
    changed: list[KeyVersion] = []
    for version in versions:
        here = version.version in present
        if not here and version.state is VersionState.ACTIVE:
            changed.append(replace(version, state=VersionState.MISSING))
        elif here and version.state is VersionState.MISSING:
            changed.append(replace(version, state=VersionState.ACTIVE))
    if not changed:
        return record, changed
    current_missing = record.current_version not in present
    if current_missing and record.state is not KeyState.UNAVAILABLE:
        extra = {**record.extra, STATE_BEFORE_UNAVAILABLE: record.state.value}
        return replace(record, state=KeyState.UNAVAILABLE, extra=extra), changed
    if not current_missing and STATE_BEFORE_UNAVAILABLE in record.extra:
        # Only this rule's own Unavailable: a key of a disconnected store stays so.
        extra = dict(record.extra)
        previous = KeyState(extra.pop(STATE_BEFORE_UNAVAILABLE))
        state = previous if record.state is KeyState.UNAVAILABLE else record.state
        return replace(record, state=state, extra=extra), changed
    return record, changed


def warn_if_not_carried(
    hsm: Token, record: KeyRecord, ref: MaterialRef, kind: MaterialKind
) -> None:
    """In a deployment with a security domain, say when a new key is made whose material
    backups cannot carry (the key is made all the same: it works, but a restore brings
    it back Unavailable). The server log; the CLI prints it on stderr."""
    if hsm.custody is not Custody.DOMAIN:
        return  # no domain, or new material kept never-extractable on purpose
    reason = carry_refusal(hsm, ref, kind)
    if reason is not None:
        log.warning(
            "%s: backups cannot carry this key's material (%s); after a restore the key "
            "would be Unavailable",
            record.arn, reason,
        )  # fmt: skip
