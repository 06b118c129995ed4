"""What `hsmkms ... --help` shows: every command and option explained, with its default."""

from __future__ import annotations

import argparse
from collections.abc import Iterator


class DefaultsShown(argparse.HelpFormatter):
    """argparse's help with "(default: ...)" after each option that has a real default
    (options whose default is "not given" say in their help what happens then)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "%(default)" in text
            or not action.option_strings
            or action.default in (None, False, "", argparse.SUPPRESS)
        ):
            return text
        return f"{text} (default: %(default)s)"


def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parser and every subcommand's parser below it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from parsers(child)


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every (sub)command's help in the DefaultsShown form (argparse does not pass a
    formatter class on to subparsers)."""
    for each in parsers(parser):
        each.formatter_class = DefaultsShown


# What the same kind of argument means wherever it appears.
KEY = "key id, key ARN, alias name or alias ARN"
PRINCIPAL_ARN = "principal ARN, e.g. arn:aws:iam::111122223333:user/alice"
URI_PREFIX = "the key store's URI prefix (default: the first of HSMKMS_XKS_URI_PREFIX)"
