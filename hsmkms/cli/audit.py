"""`hsmkms audit ...`: verify and query the trail, and start a new one on the record."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hsmkms.audit.checkpoint import Anchor
from hsmkms.cli.registry import Outcome, command
from hsmkms.config import Settings


def add_parsers(commands: Any) -> None:
    audit = commands.add_parser("audit", help="the audit trail").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    verify = audit.add_parser(
        "verify", help="check every chain, its checkpoints and the trails the token knows"
    )
    verify.add_argument(
        "--archive", type=Path, default=None, metavar="DIR",
        help="check only the trail in DIR (retired, or carried by a backup from another "
        "deployment) against the token's checkpoints for it",
    )  # fmt: skip
    audit_query = audit.add_parser("query", help="matching records as JSON lines, oldest first")
    audit_query.add_argument(
        "--key", default=None, help="key id, key ARN, alias name or alias ARN (default: any)"
    )
    audit_query.add_argument(
        "--since", default=None, help="ISO 8601 time, UTC unless it says (default: the start)"
    )
    audit_query.add_argument(
        "--event", default=None, help="event name in any letter case, e.g. encrypt (default: any)"
    )
    audit_query.add_argument("--principal", default=None, help="principal ARN (default: any)")
    new_trail = audit.add_parser(
        "new-trail", help="retire the trails the token knows and start a new one, on the record"
    )
    new_trail.add_argument("--reason", required=True, help="why (kept in the token and trail)")


@contextmanager
def _anchor(settings: Settings) -> Iterator[Anchor]:
    """The token's audit key and the trails and checkpoints it (or the database) keeps."""
    from hsmkms.bootstrap import audit_anchor, open_deployment

    hsm, store = open_deployment(settings)  # the token and database that belong together
    try:
        yield audit_anchor(hsm, store, settings.audit.scope)
    finally:
        store.close()
        hsm.close()


@command("audit", "verify", key_manager=False)
def _verify(settings: Settings, args: argparse.Namespace) -> Outcome:
    from hsmkms.audit import progress
    from hsmkms.audit.commands import verify_command
    from hsmkms.cli.progress import byte_bar

    directory = args.archive if args.archive is not None else settings.data_dir / "audit"
    with (
        _anchor(settings) as anchor,
        byte_bar("audit verify", directory) as bar,
        progress.reporting(bar),
    ):
        code = verify_command(directory, anchor, archive=args.archive is not None)
    return Outcome(None, exit_code=code)


@command("audit", "query", key_manager=False)
def _query(settings: Settings, args: argparse.Namespace) -> Outcome:
    from hsmkms.audit.commands import query_command

    code = query_command(
        settings.data_dir / "audit",
        args.key,
        args.since,
        args.event,
        args.principal,
        _alias_target(settings, args.key),
    )
    return Outcome(None, exit_code=code)


def _alias_target(settings: Settings, key: str | None) -> frozenset[str]:
    """The key an alias names now, so that the records naming that key by id or ARN are
    found too (the records naming the alias itself are matched by its name)."""
    from hsmkms.keys.ids import parse_key_ref
    from hsmkms.store import open_store

    if key is None or "alias/" not in key:
        return frozenset()
    ref = parse_key_ref(key)
    url = settings.store.database_url
    if ref.alias is None or (url.startswith("sqlite:") and not settings.database_path.exists()):
        return frozenset()
    store = open_store(url, pool_size=1)
    try:
        alias = store.get_alias(ref.region or settings.region, ref.alias)
    finally:
        store.close()
    return frozenset() if alias is None else frozenset({alias.key_id})


@command(
    "audit",
    "new-trail",
    records="StartAuditTrail",
    request={"Reason": "reason"},
    key_manager=False,
    makes_trail=True,
)
def _new_trail(settings: Settings, args: argparse.Namespace) -> Any:
    """Its record (the dispatcher's) is the first of the new trail."""
    from hsmkms.audit.operator import operator_name
    from hsmkms.audit.retire import start_new_trail

    with _anchor(settings) as anchor:
        directory = settings.data_dir / "audit"
        started = start_new_trail(directory, anchor, args.reason, operator_name())
    return started.as_dict()
