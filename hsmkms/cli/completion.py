"""`hsmkms completion bash|zsh`: a shell completion script made from the CLI's own parser
(shtab), so it always knows every command and option.

    source <(hsmkms completion bash)                       # this shell
    hsmkms completion bash > /etc/bash_completion.d/hsmkms   # every bash
    hsmkms completion zsh > "${fpath[1]}/_hsmkms"           # zsh
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hsmkms.cli.help import parsers
from hsmkms.cli.registry import Outcome, command
from hsmkms.config import Settings

SHELLS = ("bash", "zsh")
# Arguments that name a file or a directory, wherever they appear: the shell completes paths.
FILE_ARGUMENTS = frozenset({"file", "input", "output", "tls_cert", "tls_key", "tls_client_ca",
                            "module"})  # fmt: skip
DIRECTORY_ARGUMENTS = frozenset({"out_dir", "archive"})


def add_parser(commands: Any, root: argparse.ArgumentParser) -> None:
    """`root`: the whole CLI's parser, complete by the time the command runs."""
    completion = commands.add_parser(
        "completion", help="print a shell completion script (bash or zsh)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    completion.add_argument("shell", choices=SHELLS, help="the shell it is for")
    completion.set_defaults(root_parser=root)


def _complete_paths(parser: argparse.ArgumentParser) -> None:
    import shtab

    for each in parsers(parser):
        for action in each._actions:
            if action.dest in FILE_ARGUMENTS:
                action.complete = shtab.FILE  # type: ignore[attr-defined]
            elif action.dest in DIRECTORY_ARGUMENTS:
                action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]


@command("completion", key_manager=False)
def _completion(_: Settings, args: argparse.Namespace) -> Outcome:
    import shtab

    parser: argparse.ArgumentParser = args.root_parser
    _complete_paths(parser)
    sys.stdout.write(shtab.complete(parser, shell=args.shell))
    return Outcome(None)
