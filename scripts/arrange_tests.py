"""Move flat tests/test_*.py into folders that mirror hsmkms/, and shared helpers into
tests/support/, fixing the imports and paths that name them. Idempotent: files already in
place stay; a test file no rule places is listed and left where it is.

    python scripts/arrange_tests.py [--dry-run]

The rule (docs/testing.md, "Layout"): a test goes to the folder of the hsmkms package it
tests, named by its prefix or listed by name below; tests of top-level modules (config,
the library smoke test) stay in tests/; helpers that are not tests go to tests/support/.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
SUPPORT = ("pg", "parallel", "token_needs", "resilience_helpers", "xks_support", "xks_fake_proxy")
PREFIXES = {  # the first matching prefix wins
    "test_api_": "api", "test_edge_": "api", "test_aws_parity": "api",
    "test_audit": "audit", "test_backup": "backup", "test_cli": "cli",
    "test_policy": "policy", "test_authorizer": "policy", "test_aws_authorization": "policy",
    "test_grants": "policy", "test_store": "store", "test_token": "token",
    "test_xks_": "xks", "test_imports": "operations", "test_multi_region": "operations",
}  # fmt: skip
NAMES = {
    "test_workers": "api", "test_serve_processes": "api", "test_envelope": "files",
    "test_crash": "keys", "test_lifecycle": "keys", "test_races": "keys",
    "test_rotation": "keys", "test_keystores": "keys", "test_quirks": "token",
    "test_nodes": "store", "test_two_nodes": "store", "test_aliases": "operations",
    "test_asymmetric": "operations", "test_crypto": "operations", "test_der": "operations",
    "test_tags": "operations",
    "test_parallel": "support", "test_token_needs": "support",  # tests of the helpers
    "test_config": "", "test_smoke": "",  # top-level modules: stay in tests/
}  # fmt: skip
# Files outside tests/ whose text names test modules or paths.
TEXT_FILES = ("pyproject.toml", "Makefile", "README.md", "docs", "scripts")


def folder_for(stem: str) -> str | None:
    if stem in SUPPORT:
        return "support"
    if stem in NAMES:
        return NAMES[stem]
    return next((f for prefix, f in PREFIXES.items() if stem.startswith(prefix)), None)


def plan() -> tuple[dict[str, str], list[str]]:
    """{old dotted module: new dotted module}, and the test files no rule places."""
    moves, unplaced = {}, []
    for path in sorted(TESTS.glob("*.py")):
        if path.stem in ("__init__", "conftest"):
            continue
        folder = folder_for(path.stem)
        if folder is None:
            unplaced.append(path.name)
        elif folder:
            moves[f"tests.{path.stem}"] = f"tests.{folder}.{path.stem}"
    return moves, unplaced


def rewrite(text: str, moves: dict[str, str]) -> str:
    # A relative import from a flat test file (`from .conftest import`) names tests/.
    text = re.sub(r"^(\s*)from \.(\w)", r"\1from tests.\2", text, flags=re.M)
    for old, new in moves.items():
        text = re.sub(rf"\b{re.escape(old)}\b", new, text)
        text = re.sub(
            rf"\b{re.escape(old.replace('.', '/'))}\.py\b", new.replace(".", "/") + ".py", text
        )
        package, name = old.rsplit(".", 1)  # `from tests import xks_support`
        new_package = new.rsplit(".", 1)[0]
        bare = re.compile(rf"^(\s*)from {package} import {name}$", re.M)
        text = bare.sub(rf"\1from {new_package} import {name}", text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    moves, unplaced = plan()
    for old, new in moves.items():
        print(f"{old.replace('.', '/')}.py -> {new.replace('.', '/')}.py")
    for name in unplaced:
        print(f"no rule places tests/{name}: add it to scripts/arrange_tests.py")
    if args.dry_run or not moves:
        return
    for folder in {new.split(".")[1] for new in moves.values()}:
        (TESTS / folder).mkdir(exist_ok=True)
        (TESTS / folder / "__init__.py").touch()
        subprocess.run(["git", "add", f"tests/{folder}/__init__.py"], cwd=ROOT, check=True)
    for old, new in moves.items():
        source, target = (ROOT / (m.replace(".", "/") + ".py") for m in (old, new))
        subprocess.run(["git", "mv", str(source), str(target)], cwd=ROOT, check=True)
    texts = [p for p in TESTS.rglob("*.py")]
    for name in TEXT_FILES:
        path = ROOT / name
        texts += [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    for path in texts:
        if path.resolve() == Path(__file__).resolve():
            continue
        text = path.read_text()
        changed = rewrite(text, moves)
        if changed != text:
            path.write_text(changed)


if __name__ == "__main__":
    main()
