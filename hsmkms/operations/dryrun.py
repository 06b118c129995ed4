"""DryRun: the request is checked as the real call would check it (validation, the
caller's permissions, the key's state and usage, the ciphertext) and answered with
DryRunOperationException instead of being carried out.
https://docs.aws.amazon.com/kms/latest/developerguide/testing-permissions.html
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from hsmkms.errors import (
    DryRunOperationAt400,
    DryRunOperationException,
    UnsupportedOperationException,
    ValidationException,
)
from hsmkms.keys import blobs
from hsmkms.operations.context import OperationContext
from hsmkms.policy.needs import NO_KEY_NAMED

if TYPE_CHECKING:
    from hsmkms.operations.table import Operation

MESSAGE = "The request would have succeeded, but the DryRun option is set."
KEY_MEMBERS = ("key_id", "source_key_id", "destination_key_id")
# Operations whose DryRun AWS answers with HTTP 400 (recorded), not the documented 412.
ANSWERED_WITH_400 = frozenset({"GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext"})


def dry_run(
    op: Operation, ctx: OperationContext, arguments: Mapping[str, Any], *, ignore_ciphertext: bool
) -> NoReturn:
    """Authorization has passed: run what the real call would check, then refuse.
    With the IGNORE_CIPHERTEXT modifier (Decrypt, ReEncrypt) only the keys are checked."""
    if not callable(op.dry_run):
        raise UnsupportedOperationException(f"{op.name} takes no DryRun.")
    if ignore_ciphertext:
        named = [arguments[m] for m in KEY_MEMBERS if arguments.get(m) is not None]
        for key_id in named:
            ctx.cached(key_id)
        if len(named) < (2 if op.name == "ReEncrypt" else 1):
            ciphertext = arguments.get("ciphertext_blob")
            if ciphertext is None:
                raise ValidationException(NO_KEY_NAMED)
            ctx.keys.by_uuid(blobs.decode(ciphertext).key_uuid)
    else:
        op.dry_run(ctx, **arguments)  # the result (plaintext, signature ...) is dropped
    if op.name in ANSWERED_WITH_400:
        raise DryRunOperationAt400(MESSAGE)
    raise DryRunOperationException(MESSAGE)
