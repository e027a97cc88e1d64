"""``missive demo --cluster``'s slashing scene (issue 23): a node started with ``[trust] fault =
"wrong-diffs"`` is caught by the holders that re-execute its diffs, accused in the cluster's
worker registry, and loses its pledge, shown as it happens.

The scene restarts the last node with the fault (its state diffs misstate a storage write,
signed by it: :func:`missive.replicas.execution_trust.falsify`), deploys a token where that node
executes, and sends it a transfer.  A replica re-executes the diff (a new cluster trusts nobody
yet), finds the lie, signs evidence and sends it to the registry actor
(:mod:`missive.cluster.accusations`); the registry re-checks it and forfeits the liar's whole
stake: a tenth to the accuser's worker, the rest burned.  Every node distrusts the liar, so its
actors move to their next holders and the token carries on there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from missive.cli.common import CliError
from missive.cluster import launcher
from missive.cluster.client import call, load_operator
from missive.cluster.config import load
from missive.cluster.remote import RemoteNode
from missive.cluster.trust import WRONG_DIFFS
from missive.demo import TOKEN_SUPPLY, example
from missive.market.workers import ACCUSER_SHARE
from missive.vm.creation import create_address

#: how long the scene waits for each thing to happen before it says it did not
WAIT = 60.0


def restart_with_fault(root: Path, name: str) -> None:
    """Stop node ``name`` cleanly, set ``[trust] fault = "wrong-diffs"`` in its config, start it again."""
    nodes = {n["name"]: n for n in launcher.read_cluster(root)["nodes"]}
    state = next(s for s in launcher.status(root) if s["name"] == name)
    call("127.0.0.1", state["port"], "shutdown", identity=load_operator(root))
    _until(f"{name} stops", lambda: not any(s["name"] == name and s.get("up") for s in launcher.status(root)))
    config = Path(nodes[name]["dir"]) / "node.toml"
    loaded = load(config)
    config.write_text(attrs.evolve(loaded, trust=attrs.evolve(loaded.trust, fault=WRONG_DIFFS)).dump())
    launcher.start(root, name)
    _until("every node sees every other again",
           lambda: all(s.get("up") and all(s["peers"].values()) for s in launcher.status(root)))


def slashing_scene(root: Path, say: Callable[[str], None], pace: float = 0.0) -> dict[str, Any]:
    """Run the scene on the cluster at ``root``; what it showed, for the caller's checks."""
    states = launcher.status(root)
    if len(states) < 2:
        raise CliError("the slashing scene needs at least two nodes (a liar and a node holding its actors' copies)")
    liar = states[-1]["name"]
    say(f"{liar} restarts with [trust] fault = \"{WRONG_DIFFS}\": from now on the state diffs it sends its actors' "
        "other holders misstate a storage write, signed by it")
    restart_with_fault(root, liar)
    node = RemoteNode.connect(cluster=root)
    try:
        before = node.registry()
        stake = dict(before["workers"])
        dave = node.new_account("dave", balance=10**18)
        for _ in range(40):  # a token address that the liar executes: spend nonces until one is
            account = node.account(dave.address)
            address = create_address(dave.address, account.nonce if account is not None else 0)
            if node.node_of(address) == liar:
                break
            node.send(dave.address, b"", sender=dave).receipt()
        else:
            raise CliError(f"no deploy address executed by {liar} was found")
        _, token = node.deploy_message(example("Token.vy"), "Lie Token", "LIE", TOKEN_SUPPLY, sender=dave)
        say(f"dave deploys a token at 0x{token.address.hex()[:12]}.., executed by {liar}; its copies are kept by the "
            "other holders, which re-execute what it sends them (a new cluster trusts nobody yet)")
        time.sleep(pace)

        def slashed() -> dict[str, Any] | None:
            shown = node.registry()
            return shown if len(shown["slashes"]) > len(before["slashes"]) else None

        after = _until("the registry slashes the liar", slashed)
        slash = after["slashes"][-1]
        accuser = next((s["name"] for s in launcher.status(root)
                        if s["name"] != liar and launcher.worker_key(root, s["name"]).address == slash["accuser"]), "a node")
        pledge = slash["reward"] + slash["burned"]
        say(f"{accuser} re-executed {liar}'s diff, found it wrong, signed the evidence and accused {liar} in the "
            "worker registry, which re-checked the evidence itself")
        say(f"{liar}'s worker 0x{slash['executor'].hex()[:12]}.. forfeits its whole pledge of {pledge}: "
            f"{slash['reward']} ({ACCUSER_SHARE}%) to {accuser}'s worker, {slash['burned']} burned")
        time.sleep(pace)
        distrusted = _until("every node distrusts the liar, in an epoch without it",
                            lambda: all(s.get("distrusted") == [liar] and liar not in s.get("up", [liar])
                                        for s in launcher.status(root) if s["name"] != liar))
        say(f"every other node distrusts {liar} on the evidence: it serves no actor, and its actors carry on at "
            "their next holders")
        carol = node.new_account("carol-s", balance=0)
        receipt = token.transfer(carol.address, 1234, sender=dave).receipt()
        home = _executor_now(root, token.address) or "its next holder"
        say(f"dave's transfer to the token is handled by {home} now: {receipt.status}; carol-s holds "
            f"{int(token.balanceOf(carol.address, sender=dave))} LIE")
        workers = dict(after["workers"])
        return {"liar": liar, "accuser": accuser, "slash": slash, "stake_before": stake[slash["executor"]],
                "worker_after": workers[slash["executor"]], "holdings": after["holdings"],
                "registry_balance": after["balance"], "distrusted": bool(distrusted), "home": home,
                "transfer": receipt.success}
    finally:
        node.close()


def _executor_now(root: Path, address: bytes) -> str | None:
    """The node that executes ``address`` now (each node says whether it does, of its own copy)."""
    for state in launcher.status(root):
        if state.get("up"):
            copy = call("127.0.0.1", state["port"], "local_state", address)
            if copy is not None and copy["executor"]:
                return str(state["name"])
    return None


def _until(what: str, done: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + WAIT
    while True:
        found = done()
        if found:
            return found
        if time.monotonic() > deadline:
            raise CliError(f"the slashing scene waited {WAIT:.0f} s and this did not happen: {what}")
        time.sleep(0.2)


__all__ = ["restart_with_fault", "slashing_scene"]
