"""A full disk (issue 20, bug 11): one line naming the store, nothing half-written, writes resume.

Real LMDB on a small disk.  Where this process may mount one (root), the disk is a real
32 MiB tmpfs filled with a ballast file: LMDB then meets ENOSPC, or EIO for a short write.
Elsewhere each store's LMDB map is held to the size its file has (``MDB_MAP_FULL``): LMDB
behaves alike, a transaction that needs a page the file does not have fails and writes
nothing.  Either way nothing is skipped.

Before the fix the raw ``lmdb.Error`` ("mdb_txn_commit: Input/output error") or
``DiskError`` reached the API and the CLI, the runtime of a node stopped on the first
round it could not commit, and a node starting on a full disk died of SIGBUS.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from eth_abi import encode
from test_ledger_actors import TOKEN, Ledger, transfer

import missive.mailbox.disk as disk_module
import missive.mailbox.store as store_module
from missive.actors.replay import replay
from missive.actors.runtime import Runtime
from missive.cli.common import EXIT_DISK
from missive.identity import NodeIdentity
from missive.mailbox.disk import DiskFull, disk_full
from missive.mailbox.envelope import Envelope, Kind
from missive.mailbox.store import Store
from missive.mailbox.writer import GroupWriter
from missive.node import Node

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


class Disk:
    """A small disk for node directories, to fill and to free again (see the module docstring)."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, *, tmpfs: bool) -> None:
        self.root = root
        self.monkeypatch = monkeypatch
        mount = ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(root)]
        self.tmpfs = tmpfs and os.geteuid() == 0 and subprocess.run(mount, capture_output=True,
                                                                     check=False).returncode == 0
        self.full = False

    def fill(self, *stores: Store) -> None:
        """Leave no room: the ballast takes the tmpfs's last byte, or each store's map (and that of
        every store this process opens from now on) ends where its file does."""
        self.full = True
        if self.tmpfs:
            with open(self.root / "ballast", "ab", buffering=0) as ballast, suppress(OSError):
                while True:
                    ballast.write(bytes(1 << 16))
        else:
            self.monkeypatch.setattr(store_module, "MAP_SIZE", 1)  # LMDB raises it to the data's size
            for store in stores:
                store.env.set_mapsize(1)

    def free(self, *stores: Store) -> None:
        self.full = False
        if self.tmpfs:
            (self.root / "ballast").unlink()
        else:
            self.monkeypatch.undo()
            for store in stores:
                store.env.set_mapsize(store_module.MAP_SIZE)

    def python(self, code: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``code`` in a new process that sees this disk as it is now (full or not)."""
        prelude = "import missive.mailbox.store as s; s.MAP_SIZE = 1\n" if self.full and not self.tmpfs else ""
        return subprocess.run([sys.executable, "-c", prelude + code, *args], capture_output=True, text=True,
                              timeout=120, check=False)

    def missive(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """The ``missive`` command, in a new process."""
        return self.python("import sys\nfrom missive.cli.main import main\nraise SystemExit(main(sys.argv[1:]))",
                           *argv)

    def close(self) -> None:
        if self.tmpfs:
            subprocess.run(["umount", "-l", str(self.root)], capture_output=True, check=False)


@pytest.fixture(params=["tmpfs", "map"])
def disk(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Disk]:
    """Each test on a tmpfs (the map where none can be mounted) and on a held map."""
    root = tmp_path / "disk"
    root.mkdir()
    small = Disk(root, monkeypatch, tmpfs=request.param == "tmpfs")
    try:
        yield small
    finally:
        small.close()


def one_line_naming(error: BaseException | str, path: Path) -> str:
    """The error's text, checked to be one line that names ``path`` and says nothing was written."""
    text = str(error).strip()
    assert "\n" not in text, text
    assert str(path) in text and "nothing was written" in text, text
    return text


def sealed_and_replayed(store: Store) -> tuple[int, bytes] | None:
    """The ledger's newest seal, once replay has checked every record and seal."""
    report = replay(store)
    assert report.ok, report.problems
    return store.seal_head()


def test_full_disk_errors_name_the_store_in_one_line() -> None:
    """What LMDB and the OS raise on a full disk, as one line; other errors are left alone."""
    import lmdb

    where = Path("/srv/missive/n1")
    for raw in (lmdb.DiskError("mdb_txn_commit: No space left on device"),
                lmdb.Error("mdb_txn_commit: Input/output error"), OSError(28, "No space left on device"),
                OSError(122, "Disk quota exceeded"), lmdb.MapFullError("mdb_put: MDB_MAP_FULL")):
        found = disk_full(where, raw)
        assert isinstance(found, DiskFull)
        one_line_naming(found, where)
    assert disk_full(where, lmdb.Error("mdb_txn_begin: MDB_PANIC")) is None
    assert disk_full(where, OSError(13, "Permission denied")) is None
    assert disk_full(where, ValueError("no")) is None


def test_a_write_on_a_full_disk_fails_in_one_line_writes_nothing_and_works_once_there_is_space(disk: Disk) -> None:
    """The Python API of a node alone: a send on a full disk raises DiskFull (one line naming the
    store); the ledger is as it was (same seal, replays clean) and reads go on; once there is
    space the same send goes through and is handled."""
    node = Node.init(disk.root / "node")
    alice = node.new_account("alice", balance=10**18)
    bob = node.new_account("bob")
    node.send_many([(alice, bob.address, b"")] * 20, value=1)
    node.run_until_idle()
    head = sealed_and_replayed(node.store)
    disk.fill(node.store)
    with pytest.raises(DiskFull) as refused:
        node.send_many([(alice, bob.address, b"")] * 200, value=1)
    one_line_naming(refused.value, node.path)
    assert node.store.seal_head() == head and sealed_and_replayed(node.store) == head
    assert node.store.account(bob.address).balance == 20  # type: ignore[union-attr]  # reads go on
    disk.free(node.store)
    node.send_many([(alice, bob.address, b"")] * 200, value=1)
    node.run_until_idle()
    assert node.store.account(bob.address).balance == 220  # type: ignore[union-attr]
    assert sealed_and_replayed(node.store) != head
    node.close()


def test_a_round_lost_to_a_full_disk_is_handled_again_once_there_is_space(disk: Disk) -> None:
    """Messages accepted, then the disk fills before they are handled: running the node raises
    DiskFull (one line) and handles nothing durably; with space again every message is handled,
    once."""
    node = Node.init(disk.root / "node")
    alice = node.new_account("alice", balance=10**18)
    bob = node.new_account("bob")
    sent = node.send_many([(alice, bob.address, b"")] * 300, value=1)
    head = sealed_and_replayed(node.store)
    disk.fill(node.store)
    with pytest.raises(DiskFull) as refused:
        node.run_until_idle()
    one_line_naming(refused.value, node.path)
    assert len(node.store.pending()) == 300 and node.store.seal_head() == head
    disk.free(node.store)
    assert node.run_until_idle() == 300
    assert all(node.store.receipt(s.id) is not None for s in sent)
    assert node.store.account(bob.address).balance == 300  # type: ignore[union-attr]  # each once
    sealed_and_replayed(node.store)
    node.close()


def test_the_cli_says_the_disk_is_full_in_one_line_with_exit_status_74(disk: Disk) -> None:
    """``missive send`` on a full disk: one line naming the node directory, exit status 74, no
    traceback; ``missive replay`` still reads the ledger, clean; with space the send goes through."""
    node_dir = disk.root / "node"
    node = Node.init(node_dir)
    alice = node.new_account("alice", balance=10**18)
    bob = node.new_account("bob")
    token = node.deploy(EXAMPLES / "Token.vy", "Tok", "TOK", 10**6, sender=alice)
    disk.fill(node.store)
    refusals = 0
    for _ in range(400):  # what LMDB freed before can still take a small write: use it up, as a busy node does
        try:
            token.transfer(bob.address, 1, sender=alice)
        except DiskFull:
            refusals += 1
            break
    assert refusals == 1
    node.close()
    args = ["--dir", str(node_dir), "--from", "alice", "--no-wait", "0x" + token.address.hex(),
            "transfer(address,uint256)", "0x" + bob.address.hex(), "1"]
    full = disk.missive("send", *args)
    assert full.returncode == EXIT_DISK == disk_module.EXIT_DISK, full.stderr
    assert "Traceback" not in full.stderr and full.stdout == ""
    assert one_line_naming(full.stderr, node_dir).startswith("missive: error: ")
    replayed = disk.missive("replay", "--dir", str(node_dir))
    assert replayed.returncode == 0 and "replay ok" in replayed.stdout, replayed.stderr
    disk.free()
    again = disk.missive("send", *args)
    assert again.returncode == 0, again.stderr
    replayed = disk.missive("replay", "--dir", str(node_dir))
    assert replayed.returncode == 0 and "replay ok" in replayed.stdout, replayed.stderr


def _wired_node(disk: Disk) -> tuple[Ledger, Store, bytes, GroupWriter, Runtime]:
    """A node's store with a token deployed, and its writer and runtime wired as on a cluster node
    (the writer's transaction ends with a round over what it queued)."""
    ledger = Ledger(disk.root / "node")
    store = ledger.store
    token = ledger.deploy(ledger.alice, TOKEN, encode(["uint256"], [10**6]))
    writer = GroupWriter(store)
    runtime = Runtime(store, committer=lambda outcomes: writer.write(partial(store.commit, outcomes)))
    writer.last = runtime.round_in_transaction
    return ledger, store, token, writer, runtime


def test_a_node_refuses_writes_while_its_disk_is_full_keeps_running_and_resumes_by_itself(
        disk: Disk, caplog: pytest.LogCaptureFixture) -> None:
    """A cluster node's writer and runtime, wired as on a node: on a full disk every write gets
    the one line, reads go on, the round that could not be committed is dropped with the
    actors' memory and retried; once there is space the node handles everything, once, without
    a restart, and the same submit that was refused goes through."""
    ledger, store, token, writer, runtime = _wired_node(disk)
    runtime.retry_after = 0.02

    def transfers(count: int, start: int) -> list[tuple[Envelope, bytes, bytes]]:
        return [ledger.alice.sign(Envelope(Kind.CALL, ledger.alice.address, token, nonce=start + i, gas=500_000,
                                           payload=transfer(ledger.bob.address, 1), chain_id=store.chain_id)) for i in range(count)]

    def accept(batch: list[tuple[Envelope, bytes, bytes]]) -> Any:
        return lambda txn: store.accept(batch, ledger.check, txn=txn)

    waiting = transfers(300, ledger.nonce(ledger.alice))  # accepted with space, handled after it has gone
    refused = transfers(300, ledger.nonce(ledger.alice) + 300)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            nursery.start_soon(partial(runtime.run, until_idle=False, poll_interval=0.01))
            async with runtime.paused():
                await writer.write(accept(waiting))
                disk.fill(store)
            runtime.wake()
            with pytest.raises(DiskFull) as error:
                await writer.write(accept(refused))
            one_line_naming(error.value, store.path)
            await trio.sleep(0.2)  # the runtime tries its round again and again meanwhile
            assert writer.disk_full is not None and runtime.handled_total == 0
            assert all(store.receipt(e.id) is None for e, _, _ in waiting)
            assert store.account(ledger.alice.address) is not None  # reads go on
            async with runtime.paused():  # (no read transaction open in this process: the map may move)
                disk.free(store)
            await writer.write(accept(refused))  # its nonces were not used up
            with trio.fail_after(30):
                while any(store.receipt(e.id) is None for e, _, _ in waiting + refused):
                    await trio.sleep(0.01)
            assert writer.disk_full is None
            nursery.cancel_scope.cancel()

    trio.run(main)
    said = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert ("missive.mailbox.writer", "ERROR") in {(name, level) for name, level, _ in said}, said
    assert any(name == "missive.actors.runtime" and "handling stopped" in text for name, _, text in said), said
    assert any("work again" in text for _, _, text in said), said
    assert runtime.handled_total == 600
    assert ledger.balance_of(token, ledger.bob.address) == 600  # each transfer once
    sealed_and_replayed(store)
    store.close()


def test_a_round_run_in_a_transaction_the_full_disk_refused_is_forgotten(disk: Disk) -> None:
    """On a node whose runtime is idle, a transaction handles what it stores (the round is its last
    write).  Refused by a full disk, that round never happened, but the actors' memory holds it:
    the runtime must drop that memory, or the same transfers, written again once there is space,
    would be applied on top of it (each twice)."""
    ledger, store, token, writer, runtime = _wired_node(disk)
    runtime.retry_after = 0.01
    nonce = ledger.nonce(ledger.alice)
    batch = [ledger.alice.sign(Envelope(Kind.CALL, ledger.alice.address, token, nonce=nonce + i, gas=500_000,
                                        payload=transfer(ledger.bob.address, 1), chain_id=store.chain_id)) for i in range(50)]

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            nursery.start_soon(partial(runtime.run, until_idle=False, poll_interval=3600))  # woken, never polls
            await trio.testing.wait_all_tasks_blocked()  # idle: the next transaction runs a round as its last write
            disk.fill(store)
            with pytest.raises(DiskFull):
                await writer.write(lambda txn: store.accept(batch, ledger.check, txn=txn))
            assert runtime.handled_total == 0 and all(store.receipt(e.id) is None for e, _, _ in batch)
            await trio.testing.wait_all_tasks_blocked()  # (no read transaction open: the map may move)
            disk.free(store)
            await writer.write(lambda txn: store.accept(batch, ledger.check, txn=txn))
            with trio.fail_after(30):
                while any(store.receipt(e.id) is None for e, _, _ in batch):
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert ledger.balance_of(token, ledger.bob.address) == 50  # not 100
    sealed_and_replayed(store)
    store.close()


def test_a_node_that_starts_on_a_full_disk_stops_with_one_line_and_exit_status_74(disk: Disk) -> None:
    """``python -m missive.cluster.node CONFIG`` with its directory on a full disk: one line naming
    the directory, exit status 74, no traceback (it died of SIGBUS before); it starts once there
    is space."""
    node_dir = disk.root / "n1"
    node_dir.mkdir()
    NodeIdentity.load_or_generate(node_dir / "node.key")
    config = disk.root / "n1.toml"
    config.write_text(f'name = "n1"\ndir = "{node_dir}"\nhost = "127.0.0.1"\nport = 0\n')
    disk.fill()
    stopped = disk.python("import sys\nfrom missive.cluster.node import main\nraise SystemExit(main(sys.argv[1:]))",
                          str(config))
    assert stopped.returncode == EXIT_DISK, stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert one_line_naming(stopped.stderr, node_dir).startswith("missive node n1: ")
    disk.free()
    store = Store(node_dir, create=True)  # the store it would open now opens, and is empty
    assert store.seal_head() is None
    store.close()


def test_a_full_disk_under_the_trust_store_is_one_line_not_a_traceback_each_step(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Before: the trust layer's loops logged a full traceback every step while the disk was full."""
    import types

    import lmdb

    from missive.cluster.trust import TrustService

    steps = 0

    async def failing_step() -> None:
        nonlocal steps
        steps += 1
        raise lmdb.MapFullError("mdb_put: MDB_MAP_FULL: Environment mapsize limit reached")

    service = types.SimpleNamespace(state_path=tmp_path / "trust", interval=0.001)

    async def main() -> None:
        with trio.move_on_after(0.3):
            await TrustService._keep_running(service, "attestation", failing_step)  # type: ignore[arg-type]

    trio.run(main)
    said = [r for r in caplog.records if r.name == "missive.cluster.trust"]
    assert steps > 10
    assert len(said) == 1 and said[0].exc_info is None, [r.getMessage() for r in said]
    assert "trust attestation: the store at" in said[0].getMessage() and "MDB_MAP_FULL" in said[0].getMessage()


def test_a_cluster_node_on_a_full_disk_answers_one_refusal_and_the_cli_exits_74(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: a node's handler meeting a full disk was logged as a bug with a traceback on every
    request, and a remote client saw a generic failure (exit 2, not 74)."""
    import missive.cluster.remote as remote
    from missive.cli.main import main
    from missive.cluster import door
    from missive.net import RemoteError

    async def handler(peer: bytes, params: Any) -> Any:
        raise DiskFull(f"the disk holding {tmp_path} is full (No space left on device, 0 bytes free): nothing "
                       "was written; free space and retry")

    async def refused() -> None:
        await door.refusing_on_full_disk(handler)(b"peer", {})

    with pytest.raises(door.DiskRefused) as error:
        trio.run(refused)
    text = str(error.value)
    assert text.startswith(door.DISK_FULL) and "\n" not in text

    async def answering(host: str, port: int, method: str, params: Any = None, **_: Any) -> Any:
        if method == "members":
            return [{"name": "n1", "host": host, "port": port, "id": b"\x01" * 32}]
        raise RemoteError(method, text)  # what the node's RPC sends back

    monkeypatch.setattr(remote, "acall", answering)
    monkeypatch.setattr(remote.RemoteNode, "connect", classmethod(
        lambda cls, node=None, cluster=None, keys_dir=None, **kw: cls("127.0.0.1", 1, keys_dir)))
    node_dir = tmp_path / "keys"
    assert main(["init", "--dir", str(node_dir)]) == 0
    capsys.readouterr()
    status = main(["send", "0x" + "11" * 20, "f()", "--node", "127.0.0.1:1", "--dir", str(node_dir)])
    err = capsys.readouterr().err
    assert status == EXIT_DISK, err
    assert err.count("\n") == 1 and f"the disk holding {tmp_path} is full" in err and "node 127.0.0.1:1" in err
