"""Gossip: the seed's three modes, as a sans-IO engine plus its messages.

One exchange is a ping-pong of messages between an initiator A and a peer B;
both sides run :meth:`Gossiper.handle` on what they receive until one of them
has nothing to say.  A opens with a :class:`Summary` of its kernel: its size
and the XOR digests of its buckets at a level giving about two statements per
bucket (8 bytes per bucket).  B compares them with its own digests and
estimates how much the two kernels *share*: the fraction of non-empty
buckets whose digests agree.  That picks the mode:

* **gossip about gossip** (share below ``whole_below``): the kernels have little
  in common — typically a new node, or early on.  Reconciling would cost more
  than it saves, so B sends its whole kernel; A, which then knows B's kernel
  exactly, answers with precisely the statements B lacks.  A new node catches
  up in one exchange.
* **reduced gossip** (otherwise): B sends the (attester slot, version) pairs of
  only the buckets that differ (:class:`Versions`); A answers with the
  statements B lacks or has older, plus the slots it wants; B sends those.
  Bytes on the wire are the digests, the versions of the differing buckets
  and the missing statements — nothing B already holds, unlike flooding.
* **targeted gossip**: when a node issues a fresh statement (a new attestation
  step), it pushes it (:class:`Push`) straight to the nodes it concerns — the
  subjects it attests and the nodes that attest it — without waiting for a
  round, so closely related nodes learn it at once.

If all buckets agree B answers :class:`InSync` and the exchange costs one
summary.  Statements travel as their signed wire bytes; the kernel verifies
them on merge, so a peer can withhold but never forge.  Every message is a
msgpack list; :func:`wire_size` gives ``len(encode(m))`` without encoding
(the simulator counts bytes with it; a test holds them equal).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Sequence

import attrs
import msgpack

from missive.consensus.kernel import Kernel, Statement, digests_from_bytes, digests_to_bytes

WHOLE_BELOW = 0.2
ROWS_PER_BUCKET = 2


@attrs.frozen
class Summary:
    size: int
    level: int
    digests: bytes


@attrs.frozen
class Whole:
    statements: tuple[Statement, ...]
    complement: bool


@attrs.frozen
class Versions:
    level: int
    buckets: tuple[int, ...]
    slots: tuple[int, ...]
    versions: tuple[int, ...]


@attrs.frozen
class Rows:
    statements: tuple[Statement, ...]
    want: tuple[int, ...] = ()


@attrs.frozen
class Push:
    statements: tuple[Statement, ...]


@attrs.frozen
class InSync:
    pass


Message = Summary | Whole | Versions | Rows | Push | InSync


def _slots_bytes(slots: Sequence[int]) -> bytes:
    return b"".join(s.to_bytes(8, "big") for s in slots)


def _slots_from(data: bytes) -> tuple[int, ...]:
    if len(data) % 8:
        raise ValueError("slot bytes not a multiple of 8")
    return tuple(int.from_bytes(data[i : i + 8], "big") for i in range(0, len(data), 8))


def _buckets_bytes(buckets: Sequence[int]) -> bytes:
    return b"".join(b.to_bytes(2, "big") for b in buckets)


def encode(m: Message) -> bytes:
    """The message as msgpack bytes."""
    if isinstance(m, Summary):
        body: list[object] = ["S", m.size, m.level, m.digests]
    elif isinstance(m, Whole):
        body = ["W", m.complement, [s.wire for s in m.statements]]
    elif isinstance(m, Versions):
        body = ["V", m.level, _buckets_bytes(m.buckets), _slots_bytes(m.slots), list(m.versions)]
    elif isinstance(m, Rows):
        body = ["R", [s.wire for s in m.statements], _slots_bytes(m.want)]
    elif isinstance(m, Push):
        body = ["P", [s.wire for s in m.statements]]
    else:
        body = ["I"]
    data: bytes = msgpack.packb(body)
    return data


def decode(data: bytes) -> Message:
    """Parse a gossip message; ValueError on anything malformed."""
    try:
        body = msgpack.unpackb(data, strict_map_key=True)
        tag = body[0]
        if tag == "S":
            _, size, level, digests = body
            if not 0 <= int(level) <= 16 or len(digests) != 8 << int(level):
                raise ValueError("summary level and digests disagree")
            return Summary(int(size), int(level), bytes(digests))
        if tag == "W":
            _, complement, wires = body
            return Whole(tuple(Statement.from_wire(bytes(w)) for w in wires), bool(complement))
        if tag == "V":
            _, level, buckets, slots, versions = body
            bk = bytes(buckets)
            if len(bk) % 2 or len(slots) != 8 * len(versions):
                raise ValueError("versions message lengths disagree")
            return Versions(int(level), tuple(int.from_bytes(bk[i : i + 2], "big") for i in range(0, len(bk), 2)), _slots_from(bytes(slots)), tuple(int(v) for v in versions))
        if tag == "R":
            _, wires, want = body
            return Rows(tuple(Statement.from_wire(bytes(w)) for w in wires), _slots_from(bytes(want)))
        if tag == "P":
            _, wires = body
            return Push(tuple(Statement.from_wire(bytes(w)) for w in wires))
        if tag == "I":
            return InSync()
    except (ValueError, TypeError, IndexError, msgpack.UnpackException) as e:
        raise ValueError(f"malformed gossip message: {e}") from e
    raise ValueError(f"unknown gossip message {tag!r}")


def _uint(n: int) -> int:
    return 1 if n < 128 else 2 if n < 256 else 3 if n < 65536 else 5 if n < 1 << 32 else 9


def _bin(n: int) -> int:
    return n + (2 if n < 256 else 3 if n < 65536 else 5)


def _arr(n: int) -> int:
    return 1 if n < 16 else 3 if n < 65536 else 5


def _wires(statements: Sequence[Statement]) -> int:
    return _arr(len(statements)) + sum(_bin(len(s.wire)) for s in statements)


def wire_size(m: Message) -> int:
    """``len(encode(m))``, computed without encoding."""
    if isinstance(m, Summary):
        return 1 + 2 + _uint(m.size) + _uint(m.level) + _bin(len(m.digests))
    if isinstance(m, Whole):
        return 1 + 2 + 1 + _wires(m.statements)
    if isinstance(m, Versions):
        return 1 + 2 + _uint(m.level) + _bin(2 * len(m.buckets)) + _bin(8 * len(m.slots)) + _arr(len(m.versions)) + sum(_uint(v) for v in m.versions)
    if isinstance(m, Rows):
        return 1 + 2 + _wires(m.statements) + _bin(8 * len(m.want))
    if isinstance(m, Push):
        return 1 + 2 + _wires(m.statements)
    return 1 + 2


def compare(mine: array[int], theirs: array[int], chunk: int = 64) -> tuple[list[int], int]:
    """(buckets whose digests differ, buckets non-empty on either side).

    Equal runs are skipped ``chunk`` buckets at a time by comparing slices (in C).
    """
    differ: list[int] = []
    nonempty = 0
    for lo in range(0, len(mine), chunk):
        a, b = mine[lo : lo + chunk], theirs[lo : lo + chunk]
        if a == b:
            nonempty += len(a) - a.count(0)
            continue
        for j in range(len(a)):
            x, y = a[j], b[j]
            if x or y:
                nonempty += 1
                if x != y:
                    differ.append(lo + j)
    return differ, nonempty


@attrs.define
class Gossiper:
    """The sans-IO gossip engine of one node: builds and answers messages over its kernel."""

    kernel: Kernel
    whole_below: float = WHOLE_BELOW
    rows_per_bucket: int = ROWS_PER_BUCKET
    modes: dict[str, int] = attrs.Factory(lambda: {"whole": 0, "reduced": 0, "in_sync": 0, "targeted": 0})

    def level(self) -> int:
        buckets = -(-len(self.kernel) // self.rows_per_bucket)
        return min(self.kernel.max_level, max(0, (buckets - 1).bit_length()))

    def summary(self) -> Summary:
        """The opening message of an exchange."""
        level = self.level()
        return Summary(len(self.kernel), level, digests_to_bytes(self.kernel.digests(level)))

    def flood(self) -> Whole:
        """The naive baseline: the whole kernel, no reply expected."""
        return Whole(tuple(self.kernel), complement=False)

    def push(self, statements: Iterable[Statement]) -> Push:
        """A targeted push of fresh statements."""
        self.modes["targeted"] += 1
        return Push(tuple(statements))

    def handle(self, m: Message) -> Message | None:
        """Merge what ``m`` carries and return the reply (None ends the exchange)."""
        if isinstance(m, Summary):
            return self._on_summary(m)
        if isinstance(m, Whole):
            return self._on_whole(m)
        if isinstance(m, Versions):
            return self._on_versions(m)
        if isinstance(m, Rows):
            self.kernel.merge(m.statements)
            if m.want:
                rows = self.kernel.rows
                found = tuple(rows[s] for s in m.want if s in rows)
                return Rows(found) if found else None
            return None
        if isinstance(m, Push):
            self.kernel.merge(m.statements)
        return None

    def share(self, m: Summary) -> tuple[float, list[int]]:
        """Estimated shared fraction of the two kernels, and the differing buckets."""
        if not 0 <= m.level <= self.kernel.max_level or len(m.digests) != 8 << m.level:
            raise ValueError("summary level and digests disagree")
        differ, nonempty = compare(self.kernel.digests(m.level), digests_from_bytes(m.digests))
        return (1.0 - len(differ) / nonempty if nonempty else 1.0), differ

    def _on_summary(self, m: Summary) -> Message:
        share, differ = self.share(m)
        if not differ:
            self.modes["in_sync"] += 1
            return InSync()
        if share < self.whole_below:
            self.modes["whole"] += 1
            return Whole(tuple(self.kernel), complement=True)
        self.modes["reduced"] += 1
        rows = tuple(self.kernel.in_buckets(m.level, differ))
        return Versions(m.level, tuple(differ), tuple(r.slot for r in rows), tuple(r.version for r in rows))

    def _on_whole(self, m: Whole) -> Message | None:
        self.kernel.merge(m.statements)
        if not m.complement:
            return None
        theirs = {s.slot: s.rank() for s in m.statements}
        missing = tuple(r for r in self.kernel if theirs.get(r.slot, (-1, 0)) < r.rank())
        return Rows(missing) if missing else None

    def _on_versions(self, m: Versions) -> Message | None:
        if len(m.slots) != len(m.versions) or not 0 <= m.level <= self.kernel.max_level:
            raise ValueError("versions message malformed")
        theirs = dict(zip(m.slots, m.versions, strict=True))
        rows = self.kernel.rows
        send = tuple(r for r in self.kernel.in_buckets(m.level, m.buckets) if theirs.get(r.slot, -1) < r.version)
        want = tuple(s for s, v in theirs.items() if s not in rows or rows[s].version < v)
        return Rows(send, want) if send or want else None


def exchange(initiator: Gossiper, send: Callable[[Message], Message | None]) -> int:
    """Run one exchange synchronously; ``send`` delivers a message and returns the peer's reply.

    Returns the number of replies received (0: the peer never answered, so a
    caller may try another).  The async actor (:mod:`actors`) runs the same
    loop over a transport.
    """
    m: Message | None = initiator.summary()
    replies = 0
    while m is not None:
        reply = send(m)
        if reply is None:
            break
        replies += 1
        m = initiator.handle(reply)
    return replies
