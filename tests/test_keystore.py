"""Keys at rest: file modes, seeds encrypted under a passphrase (Argon2id + SecretBox), the unencrypted mode."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import lmdb
import msgpack
import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from missive.keys import PASSPHRASE_ENV, UNENCRYPTED_ENV, Key, Keystore, KeystoreError, WrongPassphrase
from missive.node import Node

REPO = Path(__file__).resolve().parents[1]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def passphrase(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.delenv(UNENCRYPTED_ENV, raising=False)
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse battery staple")
    yield "correct horse battery staple"


def missive(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in (UNENCRYPTED_ENV, PASSPHRASE_ENV, "MISSIVE_DIR")}
    full.update(env, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "missive", *args], capture_output=True, text=True, cwd=cwd, env=full,
                          stdin=subprocess.DEVNULL, timeout=300)


@pytest.mark.parametrize("encrypted", [True, False])
def test_private_key_files_are_0600_in_0700_directories(tmp_path: Path, passphrase: str, encrypted: bool) -> None:
    with Node.init(tmp_path / "node", default_balance=1, encrypt_keys=encrypted) as node:
        assert node.keystore.encrypted is encrypted
    root = tmp_path / "node"
    assert mode(root) == 0o700 and mode(root / "keystore") == 0o700
    assert mode(root / "ledger.key") == 0o600
    for name in ("data.mdb", "lock.mdb"):
        assert mode(root / "keystore" / name) == 0o600


def test_a_loosened_keystore_is_tightened_when_opened(tmp_path: Path) -> None:
    Node.init(tmp_path / "node", encrypt_keys=False).close()
    keystore = tmp_path / "node" / "keystore"
    os.chmod(keystore, 0o755)
    os.chmod(keystore / "data.mdb", 0o644)
    Node.open(tmp_path / "node").close()
    assert mode(keystore) == 0o700 and mode(keystore / "data.mdb") == 0o600


def test_encryption_round_trip(tmp_path: Path, passphrase: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Keystore(tmp_path, create=True)
    assert store.encrypted
    alice = store.new("alice")
    seed, address = alice.seed, alice.address
    store.close()
    reopened = Keystore(tmp_path)
    listed = reopened.get("alice")
    assert listed.address == address  # names and addresses need no passphrase
    assert listed.seed == seed
    assert listed.signing_key.sign(b"x").signature == nacl.signing.SigningKey(seed).sign(b"x").signature
    reopened.close()
    monkeypatch.setenv(PASSPHRASE_ENV, "not it")
    wrong = Keystore(tmp_path)
    assert wrong.get("alice").address == address
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        _ = wrong.get("alice").seed
    before = (tmp_path / "keystore" / "data.mdb").read_bytes()
    with pytest.raises(WrongPassphrase):
        wrong.new("bob")
    assert (tmp_path / "keystore" / "data.mdb").read_bytes() == before
    wrong.close()
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(KeystoreError, match=PASSPHRASE_ENV):  # no terminal here: told how to give it
        _ = Keystore(tmp_path).get("alice").seed


def test_cli_with_an_encrypted_keystore(tmp_path: Path) -> None:
    right = {PASSPHRASE_ENV: "s3cret"}
    made = missive("init", "--dir", "n", cwd=tmp_path, env=right)
    assert made.returncode == 0 and "encrypted" in made.stdout, made.stderr
    before = {p: p.read_bytes() for p in sorted((tmp_path / "n").rglob("*.mdb"))}
    for env, code, needle in [({PASSPHRASE_ENV: "nope"}, 1, "wrong passphrase"), ({}, 2, PASSPHRASE_ENV)]:
        proc = missive("account", "new", "bob", "--fund", "5", "--dir", "n", cwd=tmp_path, env=env)
        assert proc.returncode == code, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr
    after = {p: p.read_bytes() for p in sorted((tmp_path / "n").rglob("*.mdb")) if p.name != "lock.mdb"}
    assert after == {p: b for p, b in before.items() if p.name != "lock.mdb"}
    listed = missive("account", "list", "--dir", "n", cwd=tmp_path, env={})  # no passphrase needed to list
    assert listed.returncode == 0 and "default" in listed.stdout
    proc = missive("account", "new", "bob", "--fund", "5", "--dir", "n", cwd=tmp_path, env=right)
    assert proc.returncode == 0, proc.stderr


def test_init_without_a_passphrase_makes_nothing(tmp_path: Path) -> None:
    proc = missive("init", "--dir", "n", cwd=tmp_path, env={})
    assert proc.returncode == 2 and PASSPHRASE_ENV in proc.stderr and UNENCRYPTED_ENV in proc.stderr
    assert not (tmp_path / "n").exists()
    plain = missive("init", "--dir", "n", "--unencrypted-keys", cwd=tmp_path, env={})
    assert plain.returncode == 0 and "unencrypted" in plain.stdout


def test_a_keystore_from_before_encryption_still_reads(tmp_path: Path) -> None:
    (tmp_path / "keystore").mkdir()
    env = lmdb.open(str(tmp_path / "keystore"), max_dbs=2)
    seed = os.urandom(32)
    key = Key("old", seed)
    keys = env.open_db(b"keys")
    with env.begin(write=True) as txn:
        txn.put(key.address, msgpack.packb([1, "old", seed]), db=keys)
    env.close()
    store = Keystore(tmp_path)
    assert not store.encrypted and store.get("old").seed == seed
    store.close()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# seeds as keys are made: random bytes (hashed from what hypothesis draws; a run of zeros is in every file)
@given(seeds=st.lists(st.integers(0, 2**64).map(lambda i: hashlib.blake2b(i.to_bytes(9, "big"), digest_size=32).digest()),
                      min_size=1, max_size=4, unique=True),
       names=st.lists(st.text(min_size=0, max_size=12), min_size=4, max_size=4))
def test_an_encrypted_keystores_bytes_never_contain_a_seed(tmp_path_factory: pytest.TempPathFactory,
                                                          passphrase: str, seeds: list[bytes], names: list[str]) -> None:
    root = tmp_path_factory.mktemp("ks")
    store = Keystore(root, create=True)
    made = [store.new(names[0])]
    for seed, name in zip(seeds, names, strict=False):
        store.add(Key(name, seed))
    secrets = [*seeds, *(key.seed for key in made)]
    store.close()
    reopened = Keystore(root)
    assert {k.seed for k in reopened.all()} == set(secrets)
    reopened.close()
    for path in (root / "keystore").rglob("*"):
        raw = path.read_bytes()
        for secret in secrets:
            assert secret not in raw, path
            assert secret.hex().encode() not in raw, path
