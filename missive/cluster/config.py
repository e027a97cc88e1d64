"""A node's configuration file (TOML, since people edit it; everything else on disk is msgpack).

::

    name = "n1"
    dir = "/path/to/n1"            # LMDB store and identity key live here
    host = "127.0.0.1"
    port = 7401                    # 0: pick a free one (written to <dir>/port)
    replicas = 2                   # nodes holding each actor (default 1); the same on every node
    failover_timeout = 2.0         # seconds without a heartbeat before a node counts as down

    [trust]                        # optional (missive.cluster.trust.TrustSettings)
    interval = 1.0                 # seconds per attestation step and gossip round (default 1)
    # fault = "wrong-attestations" # tests and simulation only: answer every spot check wrongly

    [[peers]]                      # every member, this node included or not
    name = "n2"
    host = "127.0.0.1"
    port = 7402
    id = "ab12..."                 # the peer's Ed25519 node id, hex

The same file format runs a node on another machine: list the seed peers
with their addresses and ids.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import attrs

from missive.cluster.trust import TrustSettings


class ConfigError(Exception):
    """The config file is missing, malformed, or names something impossible."""


@attrs.frozen
class Peer:
    name: str
    host: str
    port: int
    node_id: bytes


@attrs.frozen
class NodeConfig:
    name: str
    dir: Path
    host: str
    port: int
    peers: tuple[Peer, ...] = ()
    replicas: int = 1
    failover_timeout: float = 2.0
    trust: TrustSettings = TrustSettings()  # the [trust] table (missive/cluster/trust.py)

    def dump(self) -> str:
        lines = [f'name = "{self.name}"', f'dir = "{self.dir}"', f'host = "{self.host}"', f"port = {self.port}",
                 f"replicas = {self.replicas}", f"failover_timeout = {self.failover_timeout}", ""]
        for peer in self.peers:
            lines += ["[[peers]]", f'name = "{peer.name}"', f'host = "{peer.host}"', f"port = {peer.port}",
                      f'id = "{peer.node_id.hex()}"', ""]
        lines += self.trust.dump()  # the [trust] table, if not the default
        return "\n".join(lines)


def load(path: Path) -> NodeConfig:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    try:
        peers = tuple(
            Peer(str(p["name"]), str(p["host"]), _port(p["port"], f"peer {p['name']}"), _node_id(p["id"], str(p["name"])))
            for p in data.get("peers", [])
        )
        replicas = data.get("replicas", 1)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or not 1 <= replicas <= 64:
            raise ConfigError(f"{path}: replicas must be an integer from 1 to 64, not {replicas!r}")
        timeout = data.get("failover_timeout", 2.0)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0.1 <= timeout <= 3600:
            raise ConfigError(f"{path}: failover_timeout must be a number of seconds from 0.1 to 3600, not {timeout!r}")
        try:
            trust = TrustSettings.from_table(data.get("trust"), str(path))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return NodeConfig(str(data["name"]), Path(str(data["dir"])), str(data.get("host", "127.0.0.1")),
                          _port(data.get("port", 0), "port"), peers, replicas, float(timeout), trust)
    except KeyError as exc:
        raise ConfigError(f"{path}: missing key {exc}") from None


def _port(value: object, what: str) -> int:
    if not isinstance(value, int) or not 0 <= value < 65536:
        raise ConfigError(f"{what} must be a TCP port number, not {value!r}")
    return value


def _node_id(value: object, name: str) -> bytes:
    try:
        raw = bytes.fromhex(str(value))
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ConfigError(f"peer {name}: id must be 64 hex digits (an Ed25519 public key)")
    return raw
