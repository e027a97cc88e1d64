"""The local keystore: Ed25519 account keys, kept in the node directory.

Keys live in their own LMDB environment (``<node>/keystore``), apart from the
ledger, so a ledger can be copied or replayed without the secrets.  Each key
has an optional human name ("alice").  The store is for development: keys are
not encrypted at rest.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import lmdb
import msgpack
import nacl.signing

from missive.errors import NotFound
from missive.mailbox.admission import address_of
from missive.mailbox.envelope import Envelope


class KeystoreError(Exception):
    pass


class UnknownKey(KeystoreError, NotFound):
    """No key with that name or address in the keystore."""


@attrs.frozen
class Key:
    name: str
    seed: bytes = attrs.field(repr=False)

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def address(self) -> bytes:
        return address_of(self.public_key)

    def sign(self, envelope: Envelope) -> tuple[Envelope, bytes, bytes]:
        """(envelope, public key, signature over its id): what the node accepts."""
        return envelope, self.public_key, self.signing_key.sign(envelope.id).signature


class Keystore:
    def __init__(self, node_dir: str | os.PathLike[str]) -> None:
        path = Path(node_dir) / "keystore"
        path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(path), map_size=1 << 26, max_dbs=2, sync=True)
        self.env.reader_check()  # slots of processes killed while reading (see Store.clear_stale_readers)
        self.db = self.env.open_db(b"keys")

    def close(self) -> None:
        self.env.close()

    def new(self, name: str = "") -> Key:
        key = Key(name, bytes(nacl.signing.SigningKey.generate()))
        if name and self.find(name) is not None:
            raise KeystoreError(f"a key named {name!r} already exists")
        with self.env.begin(write=True) as txn:
            txn.put(key.address, msgpack.packb([1, key.name, key.seed]), db=self.db)
        return key

    def all(self) -> list[Key]:
        with self.env.begin() as txn:
            return [Key(*msgpack.unpackb(v)[1:]) for _, v in txn.cursor(db=self.db)]

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
