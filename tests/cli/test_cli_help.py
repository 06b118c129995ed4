"""What a new user reads first: --version, help on every command and option (with its
default), and shell completion made from the same parser."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from hsmkms.cli import _parser
from hsmkms.cli.help import parsers


def hsmkms(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hsmkms.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_version_is_the_installed_one() -> None:
    shown = hsmkms("--version")
    assert shown.returncode == 0
    assert shown.stdout == f"hsmkms {version('hsmkms')}\n"


def test_every_command_and_option_is_explained() -> None:
    missing = []
    for parser in parsers(_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                explained = {choice.dest for choice in action._choices_actions if choice.help}
                missing += [
                    f"{parser.prog} {name}" for name in action.choices if name not in explained
                ]
            elif not action.help:
                missing.append(f"{parser.prog} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_help_shows_defaults() -> None:
    shown = hsmkms("key", "create", "--help").stdout
    assert "(default: ENCRYPT_DECRYPT)" in " ".join(shown.split())
    serve = " ".join(hsmkms("serve", "--help").stdout.split())
    assert "(default: HSMKMS_PORT, else 8080)" in serve


def complete(script: Path, line: str) -> list[str]:
    """What bash offers for `line` (the cursor at its end), using the generated script."""
    words = line.split(" ")
    driver = (
        f"source {script}; COMP_WORDS=({' '.join(repr(w) for w in words)}); "
        f"COMP_CWORD={len(words) - 1}; COMP_LINE={line!r}; COMP_POINT={len(line)}; "
        '_shtab_hsmkms; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(["bash", "-c", driver], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_completion_knows_every_command(tmp_path: Path) -> None:
    made = hsmkms("completion", "bash")
    assert made.returncode == 0, made.stderr
    script = tmp_path / "hsmkms.bash"
    script.write_text(made.stdout)
    commands = set(complete(script, "hsmkms "))
    assert {"init", "serve", "status", "key", "audit", "completion"} <= commands
    assert "list" in complete(script, "hsmkms key ")
    assert complete(script, "hsmkms serve --tls-k") == ["--tls-key"]
    assert "--long" in complete(script, "hsmkms key list --")
    zsh = hsmkms("completion", "zsh")
    assert zsh.returncode == 0 and "#compdef hsmkms" in zsh.stdout
