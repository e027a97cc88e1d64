"""``missive cluster up/status/down``: N node processes on 127.0.0.1, each with its own
LMDB store and Ed25519 identity, described by ``<dir>/cluster.msgpack``.

``up`` generates the identities first, so that every node's config file can
list every other node (address and id) as a seed peer, then starts the
processes, waits until each sees all the others, and creates a funded
``default`` account in the cluster's client keystore (``<dir>``).

The cluster directory also holds the operator's key (``<dir>/operator.key``,
mode 0600): every node's config names it as the only key allowed the
administrative requests, and ``up`` (funding ``default``) and ``down``
(``shutdown``) connect with it.  A node that does not answer ``shutdown`` is
signalled, but only once its recorded PID is proven to still be that node
(its command line names the node's config and its start time is the one
recorded at spawn): a PID the system has since given to another process is
left alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import trio

from missive.cluster.client import ClusterClient, ClusterError, acall, call, create_operator, load_operator
from missive.cluster.config import NodeConfig, Peer
from missive.cluster.node import IDENTITY_FILE
from missive.errors import NotFound
from missive.mailbox.store import new_chain_id
from missive.market.registry_actor import DEFAULT_UNBOND_SECONDS, REGISTRY
from missive.net import NetError, NodeIdentity

if TYPE_CHECKING:
    from missive.keys import Key, Keystore

log = logging.getLogger(__name__)

CLUSTER_FILE = "cluster.msgpack"


class NoCluster(ClusterError, NotFound):
    """No cluster file in the directory."""

FORMAT = 1
DEFAULT_BALANCE = 10**24
#: gas of a registry operation sent by the launcher (what one costs, with room)
REGISTRY_GAS = 100_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_cluster(root: Path, data: dict[str, Any]) -> None:
    """Write the cluster file whole or not at all: clients read it (to find the nodes) while a
    restart rewrites it, and a reader that met a half-written file failed to decode it."""
    path = root / CLUSTER_FILE
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(msgpack.packb(data))
    os.replace(partial, path)


def read_cluster(root: Path) -> dict[str, Any]:
    path = root / CLUSTER_FILE
    try:
        data = msgpack.unpackb(path.read_bytes())
    except FileNotFoundError:
        raise NoCluster(f"no cluster at {root} (start one with `missive cluster up --dir {root}`)") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ClusterError(f"{path} is not a cluster file this Missive reads")
    return data


def shape(root: Path) -> tuple[int, int] | None:
    """(nodes, replicas) of the cluster at ``root``, or None where there is none yet."""
    if not (root / CLUSTER_FILE).exists():
        return None
    data = read_cluster(root)
    return len(data["nodes"]), int(data.get("replicas", 1))


def check_shape(root: Path, nodes: int | None, replicas: int | None) -> tuple[int, int]:
    """The shape ``up`` starts: the cluster's own when it exists (an option that differs is
    refused, naming the shape it has), else the options' (default 4 nodes, 1 replica).

    Why refuse rather than resize: actors are placed on nodes by rendezvous hashing over
    the members and copied to ``replicas`` holders; a restart with another shape would
    give most actors holders that never had their state, and contracts would vanish
    from view ("unknown contract").  Moving every actor's state, mailbox and pending
    messages to its new holders is a resize this launcher does not do.
    """
    have = shape(root)
    if have is None:
        return (4 if nodes is None else nodes), (1 if replicas is None else replicas)
    wanted = (have[0] if nodes is None else nodes, have[1] if replicas is None else replicas)
    if wanted != have:
        raise ClusterError(
            f"the cluster at {root} has {have[0]} node(s) and {have[1]} holder(s) per actor; it cannot restart as "
            f"{wanted[0]} node(s) and {wanted[1]} (its actors' state would not move to new holders): "
            f"`missive cluster up --dir {root}` restarts it as it is, or start a new cluster in another directory")
    return have


def up(root: Path, nodes: int | None = None, *, replicas: int | None = None, failover_timeout: float = 2.0,
       timeout: float = 30.0, encrypt_keys: bool | None = None,
       unbond_seconds: int = DEFAULT_UNBOND_SECONDS) -> list[dict[str, Any]]:
    """Start the cluster at ``root`` (made if new; restarted with its own shape if not) and wait
    until every node serves and sees every other.  The client keystore's passphrase is asked
    for (or refused) before anything starts.

    Interrupted or failed half-way, it stops every process it started, and a cluster it was
    making for the first time is removed again: nothing is left running or half-made.
    """
    fresh = shape(root) is None
    nodes, replicas = check_shape(root, nodes, replicas)
    if nodes < 1:
        raise ClusterError("a cluster needs at least one node")
    if not 1 <= replicas <= nodes:
        raise ClusterError(f"--replicas must be from 1 to the number of nodes ({nodes}), not {replicas}")
    if not 0 <= unbond_seconds < 2**32:
        raise ClusterError(f"--unbond-seconds must be from 0 to 2**32 - 1, not {unbond_seconds}")
    if not fresh:
        try:
            states = status(root)
        except ClusterError:
            states = []
        if any(s.get("up") for s in states):
            raise ClusterError(f"a cluster is already running at {root}; `missive cluster down --dir {root}` first")
    made = [path for path in [root, *(root / name for name in ("operator.key", "keystore")),
                              *(root / f"n{i}" for i in range(1, nodes + 1))] if not path.exists()]
    spawned: list[int] = []
    try:
        keys = _open_keystore(root, encrypt_keys)  # its passphrase asked for (or refused) before anything starts
        try:
            return _up(root, keys, nodes, replicas, failover_timeout, timeout, spawned, unbond_seconds)
        finally:
            keys.close()
    except BaseException:
        _stop_spawned(spawned)
        if fresh:
            _remove_made(root, made)
        raise


def _open_keystore(root: Path, encrypt_keys: bool | None) -> Keystore:
    """The cluster directory's keystore, made if new (encrypted unless told otherwise) and unlocked."""
    from missive.keys import Keystore, KeystoreError, ask_passphrase, unencrypted_by_default

    try:
        Keystore.check(root)
        passphrase = None
        encrypted = not unencrypted_by_default() if encrypt_keys is None else encrypt_keys
        if not (root / "keystore" / "data.mdb").exists() and encrypted:
            passphrase = ask_passphrase(root / "keystore", new=True)
        root.mkdir(parents=True, exist_ok=True)
        keys = Keystore(root, create=True, encrypted=encrypted, passphrase=passphrase)
        try:
            if keys.encrypted:
                keys.unlock()
        except BaseException:
            keys.close()
            raise
        return keys
    except KeystoreError as exc:
        raise ClusterError(str(exc)) from None


def _up(root: Path, keys: Keystore, nodes: int, replicas: int, failover_timeout: float, timeout: float,
        spawned: list[int], unbond_seconds: int = DEFAULT_UNBOND_SECONDS) -> list[dict[str, Any]]:
    root.mkdir(parents=True, exist_ok=True)
    operator = create_operator(root)
    # the cluster's chain id: chosen when it is made, kept by every restart (each node's store has it)
    chain_id = read_cluster(root).get("chain_id") if (root / CLUSTER_FILE).exists() else None
    if not isinstance(chain_id, int):
        chain_id = new_chain_id()
    members = []
    for i in range(1, nodes + 1):
        name = f"n{i}"
        node_dir = root / name
        identity = NodeIdentity.load_or_generate(node_dir / IDENTITY_FILE)
        members.append(Peer(name, "127.0.0.1", _free_port(), identity.node_id))
    records = []
    for peer in members:
        node_dir = root / peer.name
        config = NodeConfig(peer.name, node_dir, peer.host, peer.port, tuple(members), replicas, failover_timeout,
                            operator=operator.node_id, development=True,  # a local development cluster
                            chain_id=chain_id)
        (node_dir / "node.toml").write_text(config.dump())
        pid = _spawn(node_dir)
        spawned.append(pid)
        records.append({"name": peer.name, "host": peer.host, "port": peer.port, "id": peer.node_id,
                        "pid": pid, "started": _start_time(pid), "dir": str(node_dir)})
    write_cluster(root, {"format": FORMAT, "replicas": replicas, "nodes": records, "chain_id": chain_id})
    deadline = time.monotonic() + timeout
    while True:
        states = status(root)
        if all(s.get("up") and s.get("serving") and all(s["peers"].values()) for s in states):
            break
        if time.monotonic() > deadline:
            waiting = [s["name"] for s in states if not s.get("up")]
            raise ClusterError(f"the cluster did not come up within {timeout:.0f} s (not answering: "
                               f"{', '.join(waiting) or 'none'}; see <dir>/nN/node.log)")
        time.sleep(0.1)
    _ensure_default_account(root, records[0], keys)
    _ensure_registry(root, records[0], unbond_seconds)
    return states


def _stop_spawned(pids: list[int], grace: float = 5.0) -> None:
    """Stop node processes this launcher just started (SIGTERM, then SIGKILL after ``grace``).

    Their PIDs are our own children's, fresh: no proof of identity is needed as for
    :func:`down`, and they are reaped here so that none lingers as a zombie."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for pid in pids:
        while alive(pid) and time.monotonic() < deadline:  # alive() reaps our own children
            time.sleep(0.02)
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _remove_made(root: Path, made: list[Path]) -> None:
    """Remove what an interrupted first ``up`` made (the directories it created, the operator key)."""
    for path in sorted(made, key=lambda p: len(p.parts), reverse=True):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    if root not in made:
        with contextlib.suppress(FileNotFoundError):
            (root / CLUSTER_FILE).unlink()


def _spawn(node_dir: Path) -> int:
    """Start the node process of ``node_dir`` (its config is ``node.toml``, its log ``node.log``)."""
    with open(node_dir / "node.log", "ab") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen([sys.executable, "-m", "missive.cluster.node", str(node_dir / "node.toml")],
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return process.pid


def start(root: Path, name: str, timeout: float = 30.0) -> dict[str, Any]:
    """(Re)start one node of the cluster at ``root`` that is down; wait until it serves (it catches
    up from its peers first) and return its status."""
    data = read_cluster(root)
    record = next((n for n in data["nodes"] if n["name"] == name), None)
    if record is None:
        raise ClusterError(f"no node {name!r} in the cluster at {root} "
                           f"(nodes: {', '.join(n['name'] for n in data['nodes'])})")
    if alive(record["pid"]) and any(s.get("up") for s in status(root) if s["name"] == name):
        raise ClusterError(f"node {name} is already running (pid {record['pid']})")
    record["pid"] = _spawn(Path(record["dir"]))
    record["started"] = _start_time(record["pid"])
    write_cluster(root, data)
    deadline = time.monotonic() + timeout
    while True:
        (state,) = [s for s in status(root) if s["name"] == name]
        if state.get("up") and state.get("serving"):
            return state
        if time.monotonic() > deadline:
            raise ClusterError(f"node {name} did not serve within {timeout:.0f} s (see {record['dir']}/node.log)")
        time.sleep(0.1)


def _ensure_default_account(root: Path, node: dict[str, Any], keystore: Keystore) -> None:
    key = keystore.find("default")
    if key is None:
        key = keystore.new("default")
    client = ClusterClient(node["host"], node["port"], load_operator(root))  # the faucet is the operator's
    if client.account(key.address) is None:
        client.create_account(key, DEFAULT_BALANCE)


def minted(nodes: int) -> int:
    """The coin ``missive cluster up`` mints for a cluster of ``nodes``: the ``default`` account's
    balance and each node's worker stake (which it sends to the registry)."""
    from missive.market.workers import OWN_STAKE

    return DEFAULT_BALANCE + nodes * OWN_STAKE


def worker_key(root: Path, name: str) -> Key:
    """The key of node ``name``'s worker: its node key, as an account key (slashing names an executor's
    worker by it: keccak256 of the node id)."""
    from missive.keys import Key

    node = next(n for n in read_cluster(root)["nodes"] if n["name"] == name)
    return Key(name, NodeIdentity.load(Path(node["dir"]) / IDENTITY_FILE).seed)


def _ensure_registry(root: Path, node: dict[str, Any], unbond_seconds: int) -> None:
    """The cluster's worker registry, and every node registered in it as a worker (issue 23: a node
    executes as a worker with a pledge).  Made once, with the cluster: each node's worker is the
    account of its node key (as slashing names it: keccak256 of the node id), created holding
    :data:`~missive.market.workers.OWN_STAKE` (new coin of its own, as ``missive init`` gives a node
    alone) and registered with all of it, signed by that key; a restart finds them and does nothing."""
    from missive.mailbox.envelope import Kind
    from missive.mailbox.records import Receipt
    from missive.market.registry_actor import payload
    from missive.market.workers import OWN_STAKE

    client = ClusterClient(node["host"], node["port"], load_operator(root))
    client.call("create_registry", {"unbond_seconds": unbond_seconds})
    for record in read_cluster(root)["nodes"]:
        key = worker_key(root, record["name"])
        if client.account(key.address) is not None:
            continue
        client.create_account(key, OWN_STAKE)
        _, handled = client.submit_wait(key, Kind.CALL, REGISTRY, payload("register", b"", 0), value=OWN_STAKE,
                                        gas=REGISTRY_GAS)
        receipt = Receipt.decode(handled["receipt"])
        if not receipt.success:
            raise ClusterError(f"node {record['name']}'s worker could not register: {receipt.error}")


def status(root: Path) -> list[dict[str, Any]]:
    """Every node's status; a node that does not answer is ``{"up": False, ...}``."""
    nodes = read_cluster(root)["nodes"]

    async def ask_all() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{} for _ in nodes]

        async def ask(i: int, node: dict[str, Any]) -> None:
            try:
                with trio.fail_after(3.0):
                    out[i] = {"up": True, **await acall(node["host"], node["port"], "status", timeout=3.0)}
            except (ClusterError, NetError, trio.TooSlowError) as exc:
                out[i] = {"up": False, "name": node["name"], "port": node["port"], "error": str(exc) or "timeout",
                          "peers": {}}

        async with trio.open_nursery() as nursery:
            for i, node in enumerate(nodes):
                nursery.start_soon(ask, i, node)
        return out

    return trio.run(ask_all)


def down(root: Path, timeout: float = 10.0, *, say: Callable[[str], None] | None = None) -> list[str]:
    """Stop every node (shutdown request as the operator, then SIGTERM, then SIGKILL); the names
    stopped.  A signal goes only to a PID proven to still be its node (:func:`_is_node`); one
    that is not is left alone, and ``say`` (default: a log warning) is told so."""
    tell = say or log.warning
    data = read_cluster(root)
    nodes = data["nodes"]
    operator = load_operator(root)
    for node in nodes:
        try:
            call(node["host"], node["port"], "shutdown", timeout=2.0, identity=operator)
        except (ClusterError, NetError, trio.TooSlowError):
            _signal_node(node, signal.SIGTERM, tell)
    deadline = time.monotonic() + timeout
    stopped = []
    for node in nodes:
        while _running(node) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _running(node):
            _signal_node(node, signal.SIGKILL, tell)
        stopped.append(node["name"])
    return stopped


def _running(node: dict[str, Any]) -> bool:
    """Whether the recorded process of ``node`` is alive and still that node."""
    return alive(node["pid"]) and _is_node(node["pid"], node)


def _signal_node(node: dict[str, Any], sig: int, tell: Callable[[str], None]) -> None:
    """Send ``sig`` to ``node``'s recorded PID if, and only if, that PID is still the node.

    Why: a node that died long ago left its PID in the cluster file, and the
    system may have given that number to any other process since; signalling
    it on trust could kill a stranger.
    """
    pid = node["pid"]
    if not alive(pid):
        return
    if not _is_node(pid, node):
        tell(f"left pid {pid} alone: it is not node {node['name']} any more (that node is not running)")
        return
    _signal(pid, sig)


def _is_node(pid: int, node: dict[str, Any]) -> bool:
    """Whether process ``pid`` is provably ``node``: its command line runs the node module on the
    node's config, and (when the cluster file recorded it at spawn) it started at the same
    clock tick.  Anything unknowable (no /proc, a process we may not inspect) counts as no."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    config = str(Path(node["dir"]) / "node.toml").encode()
    if b"missive.cluster.node" not in argv or config not in argv:
        return False
    started = node.get("started")
    return started is None or started == _start_time(pid)


def _start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (/proc/PID/stat's 22nd field): with
    the PID, it names one process for good, since PIDs are reused but never at the same tick."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    try:
        return int(fields[19])  # field 22 overall; fields[0] is field 3 (the state)
    except (IndexError, ValueError):
        return None


def alive(pid: int) -> bool:
    """Alive and not a zombie (reaping it if it is our own child)."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # our own child (tests, `up` in-process)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Exited but not yet reaped: the node of a `cluster up` that has itself exited waits for
    init to reap it, which can take a while; it is stopped all the same."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
