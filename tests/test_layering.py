"""The layers of docs/architecture.md, checked on the code: only hsmkms/token imports
pkcs11 and the rest reach it through its face (token/__init__.py), no package imports one
above it, no import cycle between modules (imports inside functions included,
`if TYPE_CHECKING:` ones not), no module over 400 lines."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hsmkms"
MAX_LINES = 400
# Top to bottom; a name may import only names at its own rank or below (same-rank
# packages are independent of each other, checked by the cycle rule).
RANKS = {
    "cli": 9,
    "bootstrap": 8, "init": 8, "console": 8,
    "api": 7, "files": 7, "apply": 7,
    "library": 6,
    "operations": 5,
    "xks": 4, "keystores": 4, "backup": 4,
    "policy": 3, "audit": 3,
    "keys": 2, "binding": 2,
    "store": 1,
    "token": 0, "config": 0, "errors": 0, "version": 0, "xks_spec": 0, "json_input": 0,
}  # fmt: skip


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(tree: ast.AST) -> Iterator[str]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.orelse:
                yield from _imports(inner)
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from package import submodule` names the submodule, not the package's face
            for alias in node.names:
                yield f"{node.module}.{alias.name}|{node.module}"
        yield from _imports(node)


def graph() -> dict[str, set[str]]:
    found = modules()
    edges: dict[str, set[str]] = {}
    for name, path in found.items():
        targets = set()
        for imported in _imports(ast.parse(path.read_text())):
            name_in, _, module = imported.partition("|")
            targets.add(name_in if name_in in found or not module else module)
        edges[name] = {t for t in targets if t in found and t != name}
        edges[name] |= {t for t in targets if t.split(".")[0] == "pkcs11"}
    return edges


def area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_only_the_token_package_imports_pkcs11() -> None:
    offenders = sorted(
        name
        for name, targets in graph().items()
        if any(t.startswith("pkcs11") for t in targets) and area(name) != "token"
    )
    assert offenders == []


def test_the_token_package_is_reached_through_its_face() -> None:
    """Outside hsmkms/token, only the package itself (token/__init__.py: the Token
    Protocol and the names exported beside it) is imported, never a module inside."""
    inside = sorted(
        f"{name} -> {target}"
        for name, targets in graph().items()
        for target in targets
        if target.startswith("hsmkms.token.") and area(name) != "token"
    )
    assert inside == []


def test_no_package_imports_one_above_it() -> None:
    upward = sorted(
        f"{name} -> {target}"
        for name, targets in graph().items()
        for target in targets
        if target.startswith("hsmkms.")
        and area(name) in RANKS
        and RANKS[area(target)] > RANKS[area(name)]
    )
    assert upward == []
    assert sorted(a for a in {area(m) for m in modules()} if a not in RANKS) == ["hsmkms"]


def test_no_import_cycles() -> None:
    edges = {k: {t for t in v if t.startswith("hsmkms")} for k, v in graph().items()}
    edges = {k: {t for t in v if t != "hsmkms"} for k, v in edges.items()}
    cycles = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def strongly_connected(node: str) -> None:  # Tarjan
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                strongly_connected(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            strongly_connected(node)
    packages = {(area(a), area(b)) for a, targets in edges.items() for b in targets}
    package_cycles = sorted(f"{a} <-> {b}" for a, b in packages if a < b and (b, a) in packages)
    assert cycles == []
    assert package_cycles == []


def test_no_module_over_400_lines() -> None:
    long = sorted(
        f"{name}: {n}"
        for name, path in modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    )
    assert long == []
