"""``missive rpc``: serve Ethereum JSON-RPC for a node directory (see :mod:`missive.rpc.server`)."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from missive.cli.common import EXIT_INTERRUPTED, EXIT_OK, CliError, make_console


def _number(kind: Callable[[str], Any], what: str, ok: Callable[[Any], bool]) -> Callable[[str], Any]:
    """An argparse type: ``text`` as ``kind``, refused in one line (``what`` it must be) unless ``ok``."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}, not {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{what}, not {text!r}")
        return value

    return parse


_port = _number(int, "a port is a number from 0 to 65535", lambda n: 0 <= n <= 65535)
_rate = _number(float, "a rate is requests per second (a positive number)", lambda r: r > 0)
_seconds = _number(float, "a time is seconds from 0 to 60", lambda t: 0 <= t <= 60)
_nonces = _number(int, "a nonce queue is a number of nonces from 0 to 1024", lambda n: 0 <= n <= 1024)


def register(subparsers: Any) -> None:
    from missive.cli.node_cmds import guarded

    p = subparsers.add_parser(
        "rpc", help="serve Ethereum JSON-RPC (web3.py, ethers, wallets) for a node",
        description="Serve Ethereum JSON-RPC 2.0 over HTTP for the node directory: eth_* methods for "
        "web3.py, ethers and wallets, and missive_* for message trees. Runs the node's actors while it "
        "serves (as `missive serve`). Listens on loopback unless --host says otherwise.")
    p.add_argument("--dir", type=Path, default=None, metavar="D",
                   help="node directory (default: $MISSIVE_DIR or ./.missive)")
    p.add_argument("--cluster", type=Path, default=None, metavar="DIR",
                   help="serve the local cluster in DIR (made by `missive cluster up`) instead of one node")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=8545, help="TCP port (default 8545; 0: any free port)")
    p.add_argument("--rate", type=_rate, default=500.0, metavar="N",
                   help="requests a second allowed per client address (bursts of twice that; default 500)")
    p.add_argument("--max-body", type=_port, default=1 << 20, metavar="BYTES",
                   help="largest request body taken (default 1 MiB)")
    p.add_argument("--handled-wait", type=_seconds, default=5.0, metavar="S",
                   help="eth_sendRawTransaction answers once its message is handled, waiting at most S seconds "
                   "(default 5, as anvil's automine; 0: as soon as it is admitted, for clients that poll receipts)")
    p.add_argument("--nonce-queue", type=_nonces, default=0, metavar="N",
                   help="let a transaction up to N nonces ahead of its sender's next one wait until the gap is "
                   "filled, as geth's pool does (64 there); default 0: a future nonce is refused (nonce too high)")
    p.add_argument("--unlock", action="append", default=[], metavar="NAME",
                   help="sign eth_sendTransaction for this Ethereum key of the keystore (repeatable; eth_accounts "
                   "lists them); the keys stay in the endpoint's memory and no method reveals them")
    p.add_argument("--allow-insecure-unlock", action="store_true",
                   help="allow --unlock while listening beyond loopback (anyone reaching the endpoint can spend)")
    p.set_defaults(handler=guarded(run_rpc))


def run_rpc(args: argparse.Namespace) -> int:
    from missive.cli.node_cmds import node_dir
    from missive.node import Node

    if args.cluster is not None:
        if args.dir is not None:
            raise CliError("give --dir D (one node) or --cluster D (a cluster), not both")
        return run_cluster_rpc(args)
    node = Node.open(node_dir(args))
    try:
        node.ensure_writable("serve JSON-RPC")
        signers = _signers(args, node)
        return _serve(args, node, None, f"{node_dir(args)} (chain id {node.chain_id})", signers)
    finally:
        node.close()


def run_cluster_rpc(args: argparse.Namespace) -> int:
    """``missive rpc --cluster D``: the endpoint reaches the cluster through its nodes' client doors; its
    block and log index, and the Ethereum transactions it admitted, are kept in ``D/rpc-index``."""
    from missive.cluster.remote import RemoteNode
    from missive.rpc.backend import ClusterBackend

    remote = RemoteNode.connect(cluster=args.cluster)
    signers = _signers(args, remote)
    backend = ClusterBackend(remote, args.cluster)
    return _serve(args, None, backend, f"the cluster at {args.cluster} (chain id {backend.chain_id}, "
                                       f"{len(backend.members)} nodes)", signers)


def _signers(args: argparse.Namespace, holder: Any) -> list[Any]:
    """The keys ``--unlock`` names, from ``holder``'s keystore (opened only then: it may ask a passphrase)."""
    from missive.rpc.signer import UnlockRefused, unlocked

    if not args.unlock:
        return []
    try:
        return unlocked(holder.keystore, args.unlock, args.host, args.allow_insecure_unlock)
    except UnlockRefused as exc:
        raise CliError(str(exc)) from None


def _serve(args: argparse.Namespace, node: Any, cluster: Any, what: str, signers: list[Any]) -> int:
    """Serve until Ctrl-C, saying where once listening (the first line on stderr, which tests read)."""
    import trio

    from missive.actors.serve import interrupted
    from missive.cli.version import missive_version
    from missive.rpc.server import serve

    console = make_console(stderr=True)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(functools.partial(
                serve, node, host=args.host, port=args.port, rate=args.rate, max_body=args.max_body,
                version=missive_version(), cluster=cluster, signers=signers, handled_wait=args.handled_wait,
                nonce_queue=args.nonce_queue))
            console.print(f"serving Ethereum JSON-RPC for {what} on {', '.join(binds)} (Ctrl-C stops)", markup=False)

    try:
        trio.run(main)
    except BaseException as exc:
        if not interrupted(exc):
            raise
        console.print("missive: interrupted; the endpoint stopped (every admitted message is kept)", markup=False)
        return EXIT_INTERRUPTED
    return EXIT_OK
