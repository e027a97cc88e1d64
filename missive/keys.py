"""The local keystore: account keys (Ed25519, and secp256k1 for Ethereum accounts), kept in the node directory.

Keys live in their own LMDB environment (``<node>/keystore``), apart from the
ledger, so a ledger can be copied or replayed without the secrets.  Each key
has an optional human name ("alice").

**At rest.**  The keystore directory is mode 0700 and its files 0600 (set again
each time it is opened).  Each account's 32-byte seed is encrypted with
libsodium's SecretBox (XSalsa20-Poly1305, pynacl) under a key derived from a
passphrase with Argon2id (``nacl.pwhash.argon2id.kdf``, libsodium's
"interactive" limits: 64 MiB, 2 passes; salt and limits are kept in the
keystore).  Names, addresses and public keys stay readable without it, so
``missive account list`` does not ask; anything that signs does.

The passphrase comes from ``$MISSIVE_PASSPHRASE`` or, on a terminal, a prompt
(twice when a keystore is made).  A wrong one is refused with one line; nothing
is written.  ``MISSIVE_UNENCRYPTED_KEYS=1`` (or ``missive init
--unencrypted-keys``) makes a keystore that keeps seeds unencrypted, for tests
and throw-away development nodes; the demo's keystores are made that way.
Keystores written before encryption (record format 1) stay readable and
unencrypted.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb
import msgpack
import nacl.signing

from missive.errors import Failed, MissiveError, NotFound
from missive.mailbox.admission import address_of
from missive.mailbox.envelope import Envelope
from missive.mailbox.integrity import Damaged, check_lmdb

#: the passphrase of an encrypted keystore (else it is asked for on a terminal)
PASSPHRASE_ENV = "MISSIVE_PASSPHRASE"
#: "1": keystores made from now on keep seeds unencrypted (tests, the demo, throw-away nodes)
UNENCRYPTED_ENV = "MISSIVE_UNENCRYPTED_KEYS"
#: what an encrypted keystore's check value decrypts to under the right passphrase
_CHECK = b"missive keystore v2"
#: record formats: 1 [1, name, seed] (unencrypted, before encryption); 2 [2, name, public key, sealed or plain seed];
#: 3 [3, name, public key (64 bytes), sealed or plain secp256k1 private key, "secp256k1"]: an Ethereum account's key
_RECORD = 2
_ETH_RECORD = 3
#: the kinds of key ``missive account new --kind`` makes
KINDS = ("ed25519", "eth")


class KeystoreError(MissiveError):
    pass


class KeystoreDamaged(KeystoreError, Damaged):
    """The keystore's LMDB file is not whole (see :mod:`missive.mailbox.integrity`)."""


class WrongPassphrase(KeystoreError, Failed):
    pass


def unencrypted_by_default() -> bool:
    return os.environ.get(UNENCRYPTED_ENV, "").strip().lower() in ("1", "true", "yes")


class UnknownKey(KeystoreError, NotFound):
    """No key with that name or address in the keystore."""


class Key:
    """An account key: its name, public key and (possibly still locked) seed."""

    __slots__ = ("_public_key", "_seed", "_unlock", "name")

    def __init__(self, name: str, seed: bytes | None = None, *, public_key: bytes | None = None,
                 unlock: Callable[[], bytes] | None = None) -> None:
        if seed is None and (public_key is None or unlock is None):
            raise ValueError("a Key needs its seed, or its public key and a way to unlock the seed")
        self.name = name
        self._seed = seed
        self._unlock = unlock
        self._public_key = public_key

    @property
    def seed(self) -> bytes:
        if self._seed is None:
            assert self._unlock is not None
            self._seed = self._unlock()
        return self._seed

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    @property
    def public_key(self) -> bytes:
        if self._public_key is None:
            self._public_key = bytes(self.signing_key.verify_key)
        return self._public_key

    @property
    def address(self) -> bytes:
        return address_of(self.public_key)

    def sign(self, envelope: Envelope) -> tuple[Envelope, bytes, bytes]:
        """(envelope, public key, signature over its id): what the node accepts."""
        return envelope, self.public_key, self.signing_key.sign(envelope.id).signature

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Key) and (self.name, self.public_key) == (other.name, other.public_key)

    def __hash__(self) -> int:
        return hash((self.name, self.public_key))

    def __repr__(self) -> str:
        return f"Key(name={self.name!r}, address=0x{self.address.hex()})"

    @property
    def kind(self) -> str:
        return "ed25519"


class EthKey(Key):
    """An Ethereum account's key: secp256k1; its address is keccak(public key)[12:] as in Ethereum.
    It signs Ethereum transactions (:func:`missive.mailbox.ethtx.sign_transaction`, or a wallet
    through ``missive rpc``), not Missive envelopes."""

    __slots__ = ()

    @property
    def public_key(self) -> bytes:
        if self._public_key is None:
            from eth_keys import keys as eth_keys  # type: ignore[attr-defined]

            self._public_key = bytes(eth_keys.PrivateKey(self.seed).public_key.to_bytes())
        return self._public_key

    @property
    def kind(self) -> str:
        return "eth"

    def sign_transaction(self, fields: dict[str, Any]) -> bytes:
        """A raw signed Ethereum transaction (see :func:`missive.mailbox.ethtx.sign_transaction`)."""
        from missive.mailbox.ethtx import sign_transaction

        return sign_transaction(self.seed, fields)

    def sign(self, envelope: Envelope) -> tuple[Envelope, bytes, bytes]:
        raise KeystoreError(f"0x{self.address.hex()} is an Ethereum account: it signs Ethereum transactions "
                            "(send them with `missive rpc` and a wallet, web3.py or ethers), not Missive messages")


def eth_private_key(text: str) -> bytes:
    """A secp256k1 private key from 64 hex digits (0x optional); KeystoreError if it is not one."""
    body = text.strip().removeprefix("0x").removeprefix("0X")
    try:
        raw = bytes.fromhex(body)
    except ValueError:
        raise KeystoreError("an Ethereum private key is 64 hex digits") from None
    if len(raw) != 32 or not 0 < int.from_bytes(raw, "big") < _SECP256K1_N:
        raise KeystoreError("an Ethereum private key is 32 bytes, from 1 to the curve order less one")
    return raw


_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _random_eth_key() -> bytes:
    while True:
        raw = os.urandom(32)
        if 0 < int.from_bytes(raw, "big") < _SECP256K1_N:
            return raw


def _tighten(path: Path, mode: int) -> None:
    """chmod ``path`` to ``mode`` if it is looser (a keystore made before modes were kept)."""
    try:
        if stat.S_IMODE(path.stat().st_mode) != mode:
            os.chmod(path, mode)
    except OSError:
        pass  # not ours to change (read-only media): reading still works


def ask_passphrase(where: Path, *, new: bool) -> bytes:
    """The passphrase from ``$MISSIVE_PASSPHRASE``, or asked on the terminal (twice when ``new``)."""
    text = os.environ.get(PASSPHRASE_ENV)
    if text is None:
        if not sys.stdin.isatty():
            which = "a new keystore is made encrypted" if new else "the keystore is encrypted"
            raise KeystoreError(f"{where}: {which}: set {PASSPHRASE_ENV} to its passphrase (or run on a terminal "
                                f"to be asked; {UNENCRYPTED_ENV}=1 makes unencrypted ones, for development)")
        import getpass

        text = getpass.getpass(f"passphrase for the keystore at {where}: ")
        if new and getpass.getpass("the same passphrase again: ") != text:
            raise KeystoreError("the two passphrases differ; nothing was written")
    if not text:
        raise KeystoreError(f"an empty passphrase does not protect the keystore at {where} "
                            f"(for an unencrypted development keystore set {UNENCRYPTED_ENV}=1)")
    return text.encode()


class Keystore:
    """``<node_dir>/keystore``: opened if it is there and whole; made only with ``create=True``.

    ``encrypted`` (when made): None follows ``$MISSIVE_UNENCRYPTED_KEYS``; ``passphrase`` (when made
    encrypted): None asks (:func:`ask_passphrase`).
    """

    def __init__(self, node_dir: str | os.PathLike[str], *, create: bool = False, encrypted: bool | None = None,
                 passphrase: bytes | None = None) -> None:
        path = Path(node_dir) / "keystore"
        self.path = path
        if (path / "data.mdb").exists():
            self.check(node_dir)
        elif not create:
            raise KeystoreError(f"no keystore at {path} (a node directory made by `missive init` has one)")
        new = not (path / "data.mdb").exists()
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        _tighten(path, 0o700)
        self.env = lmdb.open(str(path), map_size=1 << 26, max_dbs=2, sync=True, mode=0o600)
        for name in ("data.mdb", "lock.mdb"):
            _tighten(path / name, 0o600)
        self.env.reader_check()  # slots of processes killed while reading (see Store.clear_stale_readers)
        self.db = self.env.open_db(b"keys")
        self.meta = self.env.open_db(b"meta")
        self._box: Any = None  # nacl.secret.SecretBox once unlocked
        with self.env.begin() as txn:
            protection = txn.get(b"protection", db=self.meta)
            any_key = txn.cursor(db=self.db).first()
        if protection is None:
            if new or not any_key:  # a new keystore (or an empty one made before encryption)
                plain = not encrypted if encrypted is not None else unencrypted_by_default()
                protection = self._protect(plain, passphrase)
            else:
                protection = msgpack.packb({"kind": "none"})  # made before encryption: its seeds are in the clear
        self.protection: dict[str, Any] = msgpack.unpackb(protection)

    @staticmethod
    def check(node_dir: str | os.PathLike[str]) -> None:
        """Raise :class:`KeystoreDamaged` if ``<node_dir>/keystore`` holds an LMDB file that is not whole."""
        path = Path(node_dir) / "keystore"
        if (path / "data.mdb").exists():
            try:
                check_lmdb(path, "the keystore")
            except Damaged as exc:
                raise KeystoreDamaged(str(exc)) from None

    def _protect(self, plain: bool, passphrase: bytes | None) -> bytes:
        if plain:
            record: dict[str, Any] = {"kind": "none"}
        else:
            import nacl.pwhash
            import nacl.secret
            import nacl.utils

            argon = nacl.pwhash.argon2id
            salt = nacl.utils.random(argon.SALTBYTES)
            ops, mem = argon.OPSLIMIT_INTERACTIVE, argon.MEMLIMIT_INTERACTIVE
            if passphrase is None:
                passphrase = ask_passphrase(self.path, new=True)
            key = argon.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=ops, memlimit=mem)
            self._box = nacl.secret.SecretBox(key)
            record = {"kind": "argon2id-secretbox", "salt": salt, "ops": ops, "mem": mem,
                      "check": bytes(self._box.encrypt(_CHECK))}
        packed: bytes = msgpack.packb(record)
        with self.env.begin(write=True) as txn:
            txn.put(b"protection", packed, db=self.meta)
        return packed

    @property
    def encrypted(self) -> bool:
        return bool(self.protection["kind"] != "none")

    def unlock(self) -> Any:
        """The SecretBox of an encrypted keystore (asks for the passphrase once); WrongPassphrase if it is not it."""
        if self._box is None:
            import nacl.exceptions
            import nacl.pwhash
            import nacl.secret

            p = self.protection
            passphrase = ask_passphrase(self.path, new=False)
            key = nacl.pwhash.argon2id.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase, p["salt"], opslimit=p["ops"],
                                           memlimit=p["mem"])
            box = nacl.secret.SecretBox(key)
            try:
                if box.decrypt(p["check"]) != _CHECK:
                    raise nacl.exceptions.CryptoError
            except nacl.exceptions.CryptoError:
                raise WrongPassphrase(f"wrong passphrase for the keystore at {self.path} "
                                      f"(from {'$' + PASSPHRASE_ENV if PASSPHRASE_ENV in os.environ else 'the prompt'})"
                                      ) from None
            self._box = box
        return self._box

    def close(self) -> None:
        self.env.close()

    def _record(self, key: Key) -> bytes:
        sealed = bytes(self.unlock().encrypt(key.seed)) if self.encrypted else key.seed
        if isinstance(key, EthKey):
            eth: bytes = msgpack.packb([_ETH_RECORD, key.name, key.public_key, sealed, "secp256k1"])
            return eth
        packed: bytes = msgpack.packb([_RECORD, key.name, key.public_key, sealed])
        return packed

    def _key(self, value: bytes) -> Key:
        record = msgpack.unpackb(value)
        if record[0] == 1:
            return Key(record[1], record[2])
        kind = EthKey if record[0] == _ETH_RECORD else Key
        name, public_key, sealed = record[1], record[2], record[3]
        if not self.encrypted:
            return kind(name, sealed, public_key=public_key)
        return kind(name, public_key=public_key, unlock=lambda: bytes(self.unlock().decrypt(sealed)))

    def new(self, name: str = "", *, kind: str = "ed25519", private_key: bytes | None = None) -> Key:
        """A new key (``kind`` "eth": secp256k1, ``private_key`` imported, else made at random)."""
        if name and self.find(name) is not None:
            raise KeystoreError(f"a key named {name!r} already exists")
        if kind == "eth":
            key: Key = EthKey(name, private_key if private_key is not None else _random_eth_key())
            if self.find(key.address.hex()) is not None:
                raise KeystoreError(f"the key of 0x{key.address.hex()} is in the keystore already")
        elif kind != "ed25519" or private_key is not None:
            raise KeystoreError(f"unknown key kind {kind!r} (ed25519 or eth)")
        else:
            key = Key(name, bytes(nacl.signing.SigningKey.generate()))
        record = self._record(key)  # (unlocks first: a wrong passphrase writes nothing)
        with self.env.begin(write=True) as txn:
            txn.put(key.address, record, db=self.db)
        return key

    def add(self, key: Key) -> None:
        """Keep ``key`` (e.g. one made elsewhere) in this keystore."""
        record = self._record(key)
        with self.env.begin(write=True) as txn:
            txn.put(key.address, record, db=self.db)

    def all(self) -> list[Key]:
        with self.env.begin() as txn:
            return [self._key(v) for _, v in txn.cursor(db=self.db)]

    def find(self, name_or_address: str) -> Key | None:
        text = name_or_address.lower().removeprefix("0x")
        for key in self.all():
            if key.name == name_or_address or key.address.hex() == text:
                return key
        return None

    def get(self, name_or_address: str) -> Key:
        key = self.find(name_or_address)
        if key is None:
            raise UnknownKey(f"no key {name_or_address!r} in the keystore (see `missive account list`)")
        return key
