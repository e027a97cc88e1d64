"""A store is opened only if it is whole; a ledger that was there and is gone is an error; backups.

Damaged stores are made the way they happen (a file cut short, a flipped byte, another program's
file, a deleted ledger) on real LMDB files, and every command refuses them with one line naming the
file and what is wrong, exit status 4, and the node directory byte-for-byte as it was.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from missive.mailbox.disk import NoStore, StoreDamaged
from missive.mailbox.integrity import lmdb_problem
from missive.mailbox.store import MARKER, Store
from missive.node import Node

REPO = Path(__file__).resolve().parents[1]
TOKEN = REPO / "examples" / "Token.vy"
EXIT_NOT_FOUND = 3
EXIT_DAMAGED = 4


def missive(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("MISSIVE_DIR", None)
    return subprocess.run([sys.executable, "-m", "missive", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def refused(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("missive: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file and directory under ``root``: mode and bytes."""
    out = {}
    for path in sorted(root.rglob("*")):
        out[str(path.relative_to(root))] = (path.stat().st_mode, b"" if path.is_dir() else path.read_bytes())
    return out


@pytest.fixture(scope="module")
def node_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A node with a contract and some traffic (a ledger of a few dozen pages)."""
    path = tmp_path_factory.mktemp("whole") / "node"
    with Node.init(path, default_balance=10**24) as node:
        token = node.deploy(TOKEN, "Tok", "TOK", 10**6)
        bob = node.new_account("bob")
        for i in range(20):
            token.transfer(bob.address, i + 1).receipt()
    return path


def truncate(size: Callable[[int], int]) -> Callable[[Path], None]:
    def damage(data: Path) -> None:
        os.truncate(data, size(data.stat().st_size))
    return damage


def flip(offset: int) -> Callable[[Path], None]:
    def damage(data: Path) -> None:
        raw = bytearray(data.read_bytes())
        raw[offset] ^= 0x40
        data.write_bytes(bytes(raw))
    return damage


def foreign(data: Path) -> None:
    data.write_bytes(b"SQLite format 3\x00" + bytes(8192))


DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "empty": (truncate(lambda _: 0), "is empty (0 bytes)"),
    "one page": (truncate(lambda _: 4096), "truncated"),
    "two pages": (truncate(lambda _: 8192), "truncated"),
    "half": (truncate(lambda size: size // 2), "truncated"),
    "last page short": (truncate(lambda size: size - 100), "truncated"),
    "magic flipped": (flip(16), "not an LMDB file"),
    "page size flipped": (flip(41), "page size"),
    "second header page flipped": (flip(4096 + 17), "header page 1"),
    "another program's file": (foreign, "not an LMDB file"),
}


def test_the_whole_store_passes(node_dir: Path) -> None:
    assert lmdb_problem(node_dir / "data.mdb") is None
    assert lmdb_problem(node_dir / "keystore" / "data.mdb") is None
    assert (node_dir / MARKER).is_file()
    assert (node_dir / "data.mdb").stat().st_size >= 8 * 4096  # big enough for "half" to cut pages off


@pytest.mark.parametrize("kind", list(DAMAGES))
def test_a_damaged_store_is_refused_before_it_is_opened(node_dir: Path, tmp_path: Path, kind: str) -> None:
    damage, reason = DAMAGES[kind]
    copy = tmp_path / "node"
    shutil.copytree(node_dir, copy)
    damage(copy / "data.mdb")
    before = snapshot(copy)
    for readonly in (False, True):
        with pytest.raises(StoreDamaged, match=re.escape(reason)) as caught:
            Store(copy, readonly=readonly)
        assert str(copy / "data.mdb") in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(StoreDamaged):
        Node.open(copy)
    with pytest.raises(StoreDamaged):
        Node.init(copy)
    assert snapshot(copy) == before


@pytest.mark.parametrize("kind", ["empty", "half", "magic flipped", "another program's file"])
def test_every_command_refuses_a_damaged_store_with_one_line(node_dir: Path, tmp_path: Path, kind: str) -> None:
    damage, reason = DAMAGES[kind]
    copy = tmp_path / "node"
    shutil.copytree(node_dir, copy)
    damage(copy / "data.mdb")
    before = snapshot(copy)
    d = str(copy)
    commands = [("account", "list", "--dir", d), ("account", "new", "eve", "--dir", d), ("ledger", "--dir", d),
                ("replay", "--dir", d), ("inbox", "bob", "--dir", d),
                ("send", "bob", "transfer(address,uint256)", "bob", "1", "--dir", d), ("init", "--dir", d),
                ("backup", d, str(tmp_path / "bk"))]
    if kind == "empty":
        commands.append(("deploy", str(TOKEN), "T", "T", "1", "--dir", d))
    for command in commands:
        refused(missive(*command, cwd=tmp_path), EXIT_DAMAGED, str(copy / "data.mdb"), reason)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    serve = subprocess.run([sys.executable, "-m", "missive.actors.serve", d], capture_output=True, text=True,
                           env=env, timeout=60)
    assert serve.returncode == EXIT_DAMAGED and "Traceback" not in serve.stderr and reason in serve.stderr
    assert snapshot(copy) == before
    assert not (tmp_path / "bk").exists()


def test_a_damaged_keystore_is_refused(node_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "node"
    shutil.copytree(node_dir, copy)
    os.truncate(copy / "keystore" / "data.mdb", 4096)
    before = snapshot(copy)
    refused(missive("account", "list", "--dir", str(copy), cwd=tmp_path), EXIT_DAMAGED,
            str(copy / "keystore" / "data.mdb"), "truncated")
    assert snapshot(copy) == before


def test_a_ledger_that_is_gone_is_an_error_never_an_empty_ledger(node_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "node"
    shutil.copytree(node_dir, copy)
    (copy / "data.mdb").unlink()
    (copy / "lock.mdb").unlink(missing_ok=True)
    before = snapshot(copy)
    for command in [("account", "list"), ("account", "new", "eve", "--fund", "5"), ("ledger",), ("replay",), ("init",)]:
        refused(missive(*command, "--dir", str(copy), cwd=tmp_path), EXIT_DAMAGED, "is missing", "restore")
    assert snapshot(copy) == before
    # a node from before the marker: its ledger.key says a ledger was there
    (copy / MARKER).unlink()
    with pytest.raises(StoreDamaged, match="ledger.key is there"):
        Store(copy, create=True)


def test_only_init_makes_a_store(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for command in [("account", "list"), ("account", "new", "eve"), ("ledger",), ("replay",), ("inbox", "0x" + "00" * 20)]:
        refused(missive(*command, "--dir", str(empty), cwd=tmp_path), EXIT_NOT_FOUND, "no Missive node")
    assert list(empty.iterdir()) == []
    refused(missive("account", "list", "--dir", str(tmp_path / "absent"), cwd=tmp_path), EXIT_NOT_FOUND)
    assert not (tmp_path / "absent").exists()
    with pytest.raises(NoStore):
        Store(empty)


def test_a_store_from_before_the_marker_is_adopted(node_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "node"
    shutil.copytree(node_dir, copy)
    (copy / MARKER).unlink()
    Store(copy, readonly=True).close()
    assert not (copy / MARKER).exists()  # a read-only open writes nothing
    Store(copy).close()
    assert (copy / MARKER).is_file()


def test_the_header_check_agrees_with_lmdb_on_the_header_layout(tmp_path: Path) -> None:
    import lmdb

    env = lmdb.open(str(tmp_path), map_size=1 << 30)
    with env.begin(write=True) as txn:
        for i in range(500):
            txn.put(i.to_bytes(4, "big"), bytes(500))
    info, page_size = env.info(), env.stat()["psize"]
    env.close()
    raw = (tmp_path / "data.mdb").read_bytes()
    metas = [struct.unpack_from("<IIQQ", raw, base + 16) for base in (0, page_size)]
    tails = [struct.unpack_from("<QQ", raw, base + 136) for base in (0, page_size)]
    newest = max(range(2), key=lambda i: tails[i][1])
    assert metas[newest][0] == 0xBEEFC0DE and metas[newest][3] == info["map_size"]
    assert tails[newest] == (info["last_pgno"], info["last_txnid"])
    assert lmdb_problem(tmp_path / "data.mdb") is None


def test_backup_and_restore(node_dir: Path, tmp_path: Path) -> None:
    backup, restored = tmp_path / "backup", tmp_path / "restored"
    out = missive("backup", str(node_dir), str(backup), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert backup.stat().st_mode & 0o077 == 0
    assert (backup / "ledger.key").stat().st_mode & 0o777 == 0o600
    assert not (backup / "lock.mdb").exists()
    refused(missive("backup", str(node_dir), str(backup), cwd=tmp_path), 1, "already exists")
    out = missive("restore", str(backup), str(restored), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert not (backup / "lock.mdb").exists()  # restoring reads the backup only
    replayed = missive("replay", "--dir", str(restored), cwd=tmp_path)
    assert replayed.returncode == 0 and "replay ok: 21 receipts" in replayed.stdout, replayed.stdout + replayed.stderr
    with Node.open(node_dir) as original, Node.open(restored) as copy:
        assert copy.accounts() == original.accounts()
        assert [k.address for k in copy.keystore.all()] == [k.address for k in original.keystore.all()]
        assert copy.ledger_length() == original.ledger_length()
        bob = copy.wallet("bob")
        assert copy.balance(bob.address) == original.balance(bob.address)
    # the restored node works on its own: it appends under the same seal key
    with Node.open(restored) as copy:
        copy.new_account("carol", balance=1)
    assert missive("replay", "--dir", str(restored), cwd=tmp_path).returncode == 0
    refused(missive("restore", str(backup), str(restored), cwd=tmp_path), 1, "already exists")
    refused(missive("restore", str(tmp_path / "nothing"), str(tmp_path / "r2"), cwd=tmp_path), EXIT_NOT_FOUND)
    os.truncate(backup / "data.mdb", 4096)
    refused(missive("restore", str(backup), str(tmp_path / "r3"), cwd=tmp_path), EXIT_DAMAGED, "truncated")
    assert not (tmp_path / "r3").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_backup_of_a_running_node_is_consistent(node_dir: Path, tmp_path: Path) -> None:
    """LMDB's copy is one read transaction: a backup taken while the node is open and writing replays."""
    copy = tmp_path / "node"
    shutil.copytree(node_dir, copy)
    with Node.open(copy) as node:
        address, (name, abi) = next(iter(node.abis().items()))
        token = node.at(address, abi, name)
        bob = node.wallet("bob")
        token.transfer(bob.address, 1).receipt()
        backing_up = subprocess.Popen([sys.executable, "-m", "missive", "backup", str(copy), str(tmp_path / "b1")],
                                      cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
        for _ in range(10):
            token.transfer(bob.address, 1).receipt()
        assert backing_up.wait(timeout=120) == 0
    replayed = missive("replay", "--dir", str(tmp_path / "b1"), cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
