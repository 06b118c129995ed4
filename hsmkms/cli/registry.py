"""Every CLI command, and what it leaves in the audit trail: one registry, one dispatcher.

Each leaf command of the parser is registered once, next to its handler:

    @command("principal", "add", records="AddPrincipal",
             request={"PrincipalArn": "arn", "AccessKeyId": "access_key_id"})
    def _principal_add(km: KeyManager, args: argparse.Namespace) -> Any: ...

`records` names the event of a command that changes something (None: it only reads).
The dispatcher records it with the operator's identity, whether the command succeeded or
failed: `request` maps record members to argparse destinations, the output (or an
`Outcome`'s `response`) becomes responseElements; both pass the audit allow-list, so a
secret never does. `by_operation=True`: the command calls an operation of the KeyManager,
which records it under that name itself. `key_manager=False`: the handler gets the
Settings and the token is not open while it runs (`hsmkms domain` logs in as the SO);
its record is written afterwards, and, unless `makes_trail`, the trail is checked
before it runs, so nothing changes that cannot be recorded.

`main` refuses a command nobody registered; tests/test_cli_audited.py enumerates the
parser's commands and runs every one that records, looking for its record.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from hsmkms.errors import KMSError, KMSInternalException

PATH = "command_path"  # where the parser leaves a leaf command's path in the Namespace


@dataclass(frozen=True)
class Outcome:
    """A handler's output, with what its record should say beyond the arguments: values
    it read or made (a policy file's document, a generated access key id)."""

    output: Any
    request: Mapping[str, Any] = field(default_factory=dict)
    response: Mapping[str, Any] | None = None
    exit_code: int = 0  # e.g. `audit verify`: a verdict is printed either way


@dataclass(frozen=True)
class Command:
    path: tuple[str, ...]
    handler: Callable[[Any, argparse.Namespace], Any]
    records: str | None
    request: Mapping[str, str]
    by_operation: bool
    key_manager: bool
    makes_trail: bool


COMMANDS: dict[tuple[str, ...], Command] = {}


def command(
    *path: str,
    records: str | None = None,
    request: Mapping[str, str] | None = None,
    by_operation: bool = False,
    key_manager: bool = True,
    makes_trail: bool = False,
) -> Callable[[Callable[[Any, argparse.Namespace], Any]], Callable[[Any, argparse.Namespace], Any]]:
    """Register the handler of the command `path` (see the module's documentation)."""

    def register(
        handler: Callable[[Any, argparse.Namespace], Any],
    ) -> Callable[[Any, argparse.Namespace], Any]:
        if path in COMMANDS:
            raise ValueError(f"`hsmkms {' '.join(path)}` is registered twice")
        COMMANDS[path] = Command(
            path, handler, records, dict(request or {}), by_operation, key_manager, makes_trail
        )
        return handler

    return register


def leaf_commands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, ...]]:
    """Every command the parser accepts, as its words, e.g. ("xks", "credential", "add")."""

    def walk(node: argparse.ArgumentParser, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        children = [
            action.choices
            for action in node._actions
            if isinstance(action, argparse._SubParsersAction)
        ]
        if not children:
            yield path
        for choices in children:
            for name, child in choices.items():
                yield from walk(child, (*path, name))

    yield from walk(parser, ())


def mark_leaves(parser: argparse.ArgumentParser) -> None:
    """Let each leaf command leave its path in the Namespace (`PATH`)."""
    for path in leaf_commands(parser):
        node = parser
        for word in path:
            node = next(
                action.choices[word]
                for action in node._actions
                if isinstance(action, argparse._SubParsersAction) and word in action.choices
            )
        node.set_defaults(**{PATH: path})


def registered(args: argparse.Namespace) -> Command:
    path: tuple[str, ...] = getattr(args, PATH, ())
    found = COMMANDS.get(path)
    if found is None:  # a programming error: every command says what it records
        raise KMSInternalException(f"`hsmkms {' '.join(path)}` is not registered")
    return found


def run_recorded(
    spec: Command,
    args: argparse.Namespace,
    handler: Callable[[], Any],
    record: Callable[[dict[str, Any]], None],
    region: str,
) -> Outcome:
    """Run the handler; record its success or failure when the command records."""
    from hsmkms.audit.operator import operator_event

    if spec.records is None or spec.by_operation:
        result = handler()
        return result if isinstance(result, Outcome) else Outcome(result)
    asked = {
        name: getattr(args, dest)
        for name, dest in spec.request.items()
        if getattr(args, dest, None) is not None
    }
    try:
        result = handler()
    except Exception as exc:
        code = exc.code if isinstance(exc, KMSError) else type(exc).__name__
        message = exc.message if isinstance(exc, KMSError) else str(exc)
        failed = operator_event(
            spec.records, parameters=asked, error_code=code, error_message=message, region=region
        )
        try:
            record(failed)
        except Exception as unrecorded:
            # The command failed and changed nothing; its own error is what the operator
            # must see. `init` refused has no trail to write to: nothing more to say.
            if not spec.makes_trail:
                print(
                    f"hsmkms: warning: this failure is not in the audit trail ({unrecorded})",
                    file=sys.stderr,
                )
        raise
    outcome = result if isinstance(result, Outcome) else Outcome(result)
    response = outcome.response
    if response is None and isinstance(outcome.output, Mapping):
        response = outcome.output
    record(
        operator_event(
            spec.records, parameters={**asked, **outcome.request}, response=response, region=region
        )
    )
    return outcome


# -- commands that run without the token open (key_manager=False) ----------------------


def trail_is_writable(settings: Any) -> None:
    """Open the audit trail and close it again: raises what would keep the command's
    record from being written (AuditTrailConflictException) before anything changes."""
    record_in_trail(settings, None)


def record_in_trail(settings: Any, event: dict[str, Any] | None) -> None:
    """Write one record with the configured token and database (opened for it)."""
    from hsmkms.bootstrap import open_audit, open_deployment

    hsm, store = open_deployment(settings)
    try:
        audit = open_audit(settings, hsm, store)
        try:
            if event is not None:
                audit.record(event)
        finally:
            audit.close()
    finally:
        store.close()
        hsm.close()
