"""One client API: the embedded Node and the cluster's RemoteNode both implement NodeAPI in full,
share one sign-and-submit, and the CLI reads contracts through their public API only."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

from missive.cluster.remote import RemoteNode
from missive.node import BaseNode, Node, NodeAPI

REPO = Path(__file__).resolve().parents[1]


def _members(protocol: type) -> set[str]:
    return {name for name in vars(protocol) if not name.startswith("_") and name not in ("path", "scope")} | {
        "__enter__", "__exit__"}


def test_both_implement_the_whole_api_and_neither_disables_the_other() -> None:
    assert not issubclass(RemoteNode, Node) and not issubclass(Node, RemoteNode)
    for cls in (Node, RemoteNode):
        assert issubclass(cls, BaseNode) and not inspect.isabstract(cls), cls.__abstractmethods__
        missing = [name for name in _members(NodeAPI) if not hasattr(cls, name)]
        assert missing == [], (cls, missing)
    assert Node.scope == "node" and RemoteNode.scope == "cluster"


def test_signing_and_submitting_is_written_once() -> None:
    for cls in (Node, RemoteNode):
        for name in ("submit", "send_many", "send", "query", "deploy_message"):
            assert name not in vars(cls), f"{cls.__name__} defines {name} again"
    signing = [str(path.relative_to(REPO)) for path in (REPO / "missive").rglob("*.py")
               if re.search(r"\bkey\.sign\(", path.read_text())]
    assert signing == ["missive/node/signing.py"]  # (the bare ClusterClient signs through it too)


def test_the_cli_reads_contracts_through_their_public_api() -> None:
    private = re.compile(r"\._(by_signature|label|abi|address|node)\b")
    for path in (REPO / "missive" / "cli").glob("*.py"):
        assert not private.findall(path.read_text()), path


def test_the_abi_module_is_light() -> None:
    """The CLI's text parsing imports neither the store nor the runtime (the package imports lazily)."""
    probe = ("import sys, missive.node.abi, missive.node.values; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lmdb', 'trio') "
             "or m.startswith(('missive.mailbox.store', 'missive.actors', 'missive.node.embedded'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO)}).stdout.strip()
    assert out == "[]"
