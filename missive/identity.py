"""Identities and signatures: a node's long-term Ed25519 key pair, and the one Ed25519 check.

Every signature in Missive (messages, seals, handshakes, attestations, state diffs) is checked
by :func:`verify`; a lower room (the ledger, the trust core) uses it without the network.

A node *is* its key: the node id is the 32-byte Ed25519 verify key, so a peer
proves who it is by signing the handshake transcript, and no registry or
certificate authority is needed — a cluster's membership is simply the set of
allowed node ids.

The identity file is msgpack ``{"format": 1, "seed": <32 bytes>}``, written
atomically with mode 0600.  The format number is there so a later version can
add fields (or encryption at rest) and still recognise old files.  Like the
account keystore, the seed is not encrypted at rest: this is for development
clusters on one machine.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import attrs
import msgpack
import nacl.exceptions
import nacl.signing

from missive.errors import MissiveError

#: A node id: the 32 raw bytes of an Ed25519 verify key.
NodeId = bytes

NODE_ID_SIZE = 32
SIGNATURE_SIZE = 64
IDENTITY_FORMAT = 1


class IdentityError(MissiveError):
    """An identity file is missing, unreadable or not in a format we know."""


def short_id(node_id: bytes) -> str:
    """The first 8 bytes of a node id in hex: enough to tell nodes apart in logs."""
    return node_id[:8].hex()


def verify(node_id: NodeId, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the Ed25519 signature of ``message`` by the key ``node_id`` (a node id
    or an account's public key); malformed keys and signatures are simply not valid."""
    if len(node_id) != NODE_ID_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        nacl.signing.VerifyKey(node_id).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, nacl.exceptions.TypeError):
        return False
    return True


@attrs.frozen
class NodeIdentity:
    """The signing half of a node's identity; share :attr:`node_id`, keep this private."""

    signing_key: nacl.signing.SigningKey = attrs.field(repr=False)

    @classmethod
    def generate(cls) -> NodeIdentity:
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeIdentity:
        if len(seed) != 32:
            raise IdentityError(f"an Ed25519 seed is 32 bytes, not {len(seed)}")
        return cls(nacl.signing.SigningKey(seed))

    @property
    def seed(self) -> bytes:
        return bytes(self.signing_key)

    @property
    def node_id(self) -> NodeId:
        return bytes(self.signing_key.verify_key)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte detached Ed25519 signature of ``message``."""
        return self.signing_key.sign(message).signature

    def __repr__(self) -> str:
        return f"NodeIdentity({short_id(self.node_id)}…)"

    # -- files ---------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the identity to ``path`` atomically (temp file + rename), mode 0600, its directory made 0700."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = msgpack.packb({"format": IDENTITY_FORMAT, "seed": self.seed}, use_bin_type=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, target)
            if stat.S_IMODE(target.parent.stat().st_mode) & 0o077:  # a private key lives in a private directory
                os.chmod(target.parent, 0o700)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NodeIdentity:
        """Read an identity written by :meth:`save`; :class:`IdentityError` if it is not one."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise IdentityError(f"cannot read identity file {path}: {exc.strerror or exc}") from exc
        try:
            record = msgpack.unpackb(data, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise IdentityError(f"{path} is not an identity file: {exc}") from exc
        if not isinstance(record, dict) or "format" not in record:
            raise IdentityError(f"{path} is not an identity file")
        if record["format"] != IDENTITY_FORMAT:
            raise IdentityError(
                f"{path}: identity format {record['format']!r} is not supported (expected {IDENTITY_FORMAT})"
            )
        seed = record.get("seed")
        if not isinstance(seed, bytes):
            raise IdentityError(f"{path}: identity has no seed")
        return cls.from_seed(seed)

    @classmethod
    def load_or_generate(cls, path: str | os.PathLike[str]) -> NodeIdentity:
        """The identity in ``path``, creating (and saving) a fresh one if there is no file."""
        if Path(path).exists():
            return cls.load(path)
        identity = cls.generate()
        identity.save(path)
        return identity
