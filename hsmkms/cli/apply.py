"""`hsmkms apply FILE [--plan]`: the deployment made as a TOML or YAML file says
(see hsmkms/apply and the README's "Declarative set-up")."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hsmkms.cli.registry import Outcome, command
from hsmkms.library import KeyManager


def add_parser(commands: Any) -> None:
    apply = commands.add_parser(
        "apply", help="make principals, keys, aliases, grants and XKS key stores as a file says"
    )
    apply.add_argument("file", help="a .toml, .yaml or .yml file (see the README)")
    apply.add_argument(
        "--plan", action="store_true", help="print what would change; change nothing"
    )


@command("apply", records="ApplyConfiguration", request={"File": "file", "Plan": "plan"})
def _apply(km: KeyManager, args: argparse.Namespace) -> Any:
    from hsmkms.apply import apply_file
    from hsmkms.cli.progress import progress_bar
    from hsmkms.config import load_settings

    path = Path(args.file)
    prefix = load_settings().xks.uri_prefixes[0]
    with progress_bar("apply", unit="change") as progress:
        result = apply_file(km, path, prefix, plan_only=args.plan, progress=progress)
    changes = result.get("Plan", result.get("Applied", []))
    if not changes:
        print(f"hsmkms: {path}: no change", file=sys.stderr)
    counts: dict[str, int] = {}
    for change in changes:
        counts[change["Action"]] = counts.get(change["Action"], 0) + 1
    # The record counts the changes (each is recorded on its own); never a secret.
    return Outcome(result, response={"Changes": counts, "Plan": args.plan})
