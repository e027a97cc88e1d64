"""The cluster's trust plumbing in one process: the Transport over PeerLinks, and the trust store.

The Transport must turn every way a peer can fail — no link, link down, an
error, a wrong type, too many bytes, no answer in time — into ``None``, which
is what the consensus actors expect of a lossy network; and a good answer into
its bytes.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import trio
from net_support import HOST, running_server, trio_test

from missive.cluster.trust import EVIDENCE_KEPT, MAX_TRUST_FRAME, TRUST_METHOD, LinkTransport, TrustStore
from missive.consensus.actors import Evidence
from missive.consensus.direct_trust import TrustHistory
from missive.consensus.kernel import Attester
from missive.net import NodeIdentity, PeerLink, allow_only


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


async def _answer(peer: bytes, data: Any) -> Any:
    """A peer's ``trust`` handler whose behaviour the request names."""
    if data == b"raise":
        raise ValueError("malformed")
    if data == b"text":
        return "not bytes"
    if data == b"big":
        return bytes(MAX_TRUST_FRAME + 1)
    if data == b"slow":
        await trio.sleep(5)
    if data == b"nothing":
        return None
    return b"re:" + data


@trio_test(timeout=20)
async def test_requests_give_the_reply_or_none_for_every_failure() -> None:
    me, server = NodeIdentity.generate(), NodeIdentity.generate()
    async with running_server(server, allow_only({me.node_id}), {TRUST_METHOD: _answer}) as port:
        link = PeerLink(me, HOST, port, server.node_id)
        down = PeerLink(me, HOST, _closed_port(), NodeIdentity.generate().node_id, backoff_max=0.1)
        transport = LinkTransport(me.node_id, {server.node_id: link, down.peer_id: down}, timeout=0.5)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.run)
            nursery.start_soon(down.run)
            assert await transport.request(server.node_id, b"gx") is None  # not connected yet: no wait, no answer
            with trio.fail_after(5):
                await link.wait_connected()
            assert await transport.request(server.node_id, b"gx") == b"re:gx"
            assert transport.me == me.node_id
            for failing in (b"raise", b"text", b"big", b"slow", b"nothing"):
                assert await transport.request(server.node_id, failing) is None, failing
            assert transport.failures[server.node_id] == 2  # the remote error and the timeout
            assert await transport.request(down.peer_id, b"gx") is None  # peer down
            assert await transport.request(NodeIdentity.generate().node_id, b"gx") is None  # not a peer at all
            await transport.send(down.peer_id, b"gx")  # best effort: never raises
            await transport.send(server.node_id, b"raise")
            assert await transport.request(server.node_id, b"again") == b"re:again"  # the link survived it all
            nursery.cancel_scope.cancel()


def _evidence(subject: bytes, step: int) -> Evidence:
    return Evidence(b"\x01" * 32, subject, step, b"n" * 16, b"", b"wrong", b"s" * 64)


def test_the_trust_store_keeps_step_histories_statements_and_the_newest_evidence(tmp_path: Path) -> None:
    attester = Attester(b"\x05" * 32)
    subject, other = b"\x02" * 32, b"\x03" * 32
    statement = attester.statement(7, 7, {subject: 0b1011 << 12})
    store = TrustStore(tmp_path / "trust")
    history = TrustHistory(16, 7, 0b1011 << 12, 0b0100 << 12)
    store.save(7, {subject: history}, {attester.public_key: statement.wire},
               [_evidence(subject, s) for s in range(1, EVIDENCE_KEPT + 5)] + [_evidence(other, 3)])
    store.close()

    saved = TrustStore(tmp_path / "trust").load()
    assert saved.step == 7 and saved.saved_at > 0
    assert saved.histories == {subject: history} and saved.statements == [statement.wire]
    kept = [(e.subject, e.step) for e in saved.evidence]
    assert kept == [(subject, s) for s in range(5, EVIDENCE_KEPT + 5)] + [(other, 3)]  # the newest per subject
    assert saved.evidence[-1] == _evidence(other, 3)


def test_a_trust_store_of_another_format_is_refused(tmp_path: Path) -> None:
    import lmdb
    import msgpack

    TrustStore(tmp_path / "trust").close()
    env = lmdb.open(str(tmp_path / "trust"), max_dbs=4)
    with env.begin(write=True) as txn:
        txn.put(b"format", msgpack.packb(99), db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(ValueError, match="trust format 99"):
        TrustStore(tmp_path / "trust")
