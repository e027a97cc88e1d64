"""The path of a message, checked on the imports (issue 22): a lower room never imports a higher one.

client or peer -> net -> the node's door -> mailbox -> actors -> vm; replicas beside the cluster
node; consensus (trust and gossip) network-free.  Imports under ``if TYPE_CHECKING:`` are for type
annotations only and are not counted.  Each rule names the rooms a package may not import; a
failure names the module, the line and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import missive

PACKAGE = Path(missive.__file__).parent

#: package -> modules it must not import (prefixes of dotted names)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # the VM is pure: it imports nothing of Missive outside itself
    "vm": ("missive",),
    # the ledger and mailboxes: below the actors, the network, the cluster and replication
    "mailbox": ("missive.actors", "missive.cluster", "missive.net", "missive.replicas", "missive.node",
                "missive.cli", "missive.consensus"),
    # the market's fee rules sit beside the ledger (the store settles them): they know only envelopes and records
    "market": ("missive.mailbox.store", "missive.mailbox.admission", "missive.actors", "missive.cluster",
               "missive.net", "missive.replicas", "missive.node", "missive.cli", "missive.consensus"),
    # the actors run handlers over the mailbox: they know nothing of nodes, networks or clusters
    "actors": ("missive.cluster", "missive.net", "missive.replicas", "missive.node", "missive.cli"),
    # the trust and gossip core is network-free: no I/O, no store, no cluster
    "consensus": ("missive.net", "missive.cluster", "missive.replicas", "missive.mailbox.store",
                  "missive.mailbox.writer", "missive.node", "missive.cli", "lmdb", "socket", "trio.socket"),
    # replication is wired by the cluster node, never the other way round
    "replicas": ("missive.cluster", "missive.node", "missive.cli"),
    # the network layer carries frames: it knows no ledger, actor or cluster
    "net": ("missive.mailbox", "missive.actors", "missive.cluster", "missive.replicas", "missive.node",
            "missive.cli", "missive.vm"),
}


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")[: -node.level]
    return ".".join(parts + ([node.module] if node.module else []))


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every run-time import in ``path`` (names imported from a module too)."""
    module = "missive." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    tree = ast.parse(path.read_text())
    hidden = _type_checking_lines(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", 0) in hidden:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node)
            found += [(node.lineno, f"{base}.{alias.name}" if base else alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_a_room_imports_no_room_above_it(room: str) -> None:
    wrong = []
    for path in sorted((PACKAGE / room).rglob("*.py")):
        for line, name in imports_of(path):
            own = name == f"missive.{room}" or name.startswith(f"missive.{room}.")
            if not own and any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[room]):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The rule above can fail: an upward import in a module is found, one under TYPE_CHECKING is not."""
    sample = PACKAGE / "mailbox" / "store.py"
    names = [name for _, name in imports_of(sample)]
    assert "missive.mailbox.diffs.StateDiff" in names  # a real import is seen, by its full name
    probe = tmp_path / "probe.py"
    probe.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import lmdb\nimport socket\n")
    tree = ast.parse(probe.read_text())
    assert _type_checking_lines(tree) == {3}


#: leaf modules every room may import: they import only these parts of Missive (so using one pulls
#: in nothing else, and the VM can hold them without importing anything outside ``vm/``)
LEAVES: dict[str, tuple[str, ...]] = {
    "vm/creation.py": ("missive.vm.keccak",),
}


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_a_leaf_imports_only_what_it_names(leaf: str) -> None:
    path = PACKAGE / leaf
    wrong = [f"{leaf}:{line} imports {name}" for line, name in imports_of(path)
             if name.startswith("missive") and not any(name == ok or name.startswith(ok + ".") for ok in LEAVES[leaf])]
    assert not wrong, "\n".join(wrong)


def test_create_address_and_the_code_limit_come_from_the_leaf() -> None:
    """Rooms above the VM take the CREATE address and EIP-170's limit from vm/creation.py, not from the
    VM's instruction code or the handler (issue 22: one place for each primitive)."""
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "vm":
            continue
        for line, name in imports_of(path):
            if name in ("missive.vm.messages.create_address", "missive.vm.messages.create2_address",
                        "missive.actors.handler.MAX_CODE_SIZE"):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    assert not wrong, "\n".join(wrong)
