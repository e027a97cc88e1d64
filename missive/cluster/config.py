"""A node's configuration file (TOML, since people edit it; everything else on disk is msgpack).

::

    name = "n1"
    dir = "/path/to/n1"            # LMDB store and identity key live here
    host = "127.0.0.1"
    port = 7401                    # 0: pick a free one (written to <dir>/port)
    replicas = 2                   # nodes holding each actor (default 1); the same on every node
    failover_timeout = 2.0         # seconds without a heartbeat before a node counts as down
    operator = "cd34..."           # the cluster operator's Ed25519 id, hex: the one key allowed the
                                   # administrative requests (shutdown, create_account, replay);
                                   # without it the node refuses them to everybody
    development = true             # a development cluster: create_account mints coin for anyone
                                   # the operator names (the faucet); off by default
    connections_per_key = 16       # connections one client key may hold (members and operator: more)
    idle_timeout = 60.0            # seconds before a client's idle connection is closed
    chain_id = 190823740172061     # the cluster's chain id (CHAINID; what its external messages are
                                   # signed for): the same on every node; without it a node picks
                                   # its own when its store is made, which suits only a node alone

    [trust]                        # optional (missive.cluster.trust.TrustSettings)
    interval = 1.0                 # seconds per attestation step and gossip round (default 1)
    # fault = "wrong-attestations" # tests and simulation only: answer every spot check wrongly

    [[peers]]                      # every member, this node included or not
    name = "n2"
    host = "127.0.0.1"
    port = 7402
    id = "ab12..."                 # the peer's Ed25519 node id, hex

The same file format runs a node on another machine: list the seed peers
with their addresses and ids.  ``missive cluster up`` writes ``operator`` (the
key it keeps in the cluster directory), ``development = true`` (it starts a
local development cluster) and ``chain_id`` (chosen when the cluster is made).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import attrs

from missive.cluster.trust import TrustSettings
from missive.errors import MissiveError
from missive.net.transport import IDLE_TIMEOUT, MAX_PER_KEY


class ConfigError(MissiveError):
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
    operator: bytes | None = None  # the operator's node id: the only key allowed administrative requests
    development: bool = False  # the faucet (create_account) is on
    connections_per_key: int = MAX_PER_KEY
    idle_timeout: float = IDLE_TIMEOUT
    chain_id: int | None = None  # the cluster's chain id; None: the store's own (chosen when it is made)

    def dump(self) -> str:
        lines = [f'name = "{self.name}"', f'dir = "{self.dir}"', f'host = "{self.host}"', f"port = {self.port}",
                 f"replicas = {self.replicas}", f"failover_timeout = {self.failover_timeout}"]
        if self.operator is not None:
            lines.append(f'operator = "{self.operator.hex()}"')
        if self.development:
            lines.append("development = true")
        if self.connections_per_key != MAX_PER_KEY:
            lines.append(f"connections_per_key = {self.connections_per_key}")
        if self.idle_timeout != IDLE_TIMEOUT:
            lines.append(f"idle_timeout = {self.idle_timeout}")
        if self.chain_id is not None:
            lines.append(f"chain_id = {self.chain_id}")
        lines.append("")
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
        chain_id = data.get("chain_id")
        if chain_id is not None and (not isinstance(chain_id, int) or isinstance(chain_id, bool)
                                     or not 2 <= chain_id < 2**63):
            raise ConfigError(f"{path}: chain_id must be an integer from 2 to 2**63 - 1, not {chain_id!r}")
        return NodeConfig(str(data["name"]), Path(str(data["dir"])), str(data.get("host", "127.0.0.1")),
                          _port(data.get("port", 0), "port"), peers, replicas, float(timeout), trust,
                          **_doors(data, path), chain_id=chain_id)
    except KeyError as exc:
        raise ConfigError(f"{path}: missing key {exc}") from None


def _doors(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """The settings of who may do what and hold how much (operator, development, limits), checked."""
    operator = data.get("operator")
    if operator is not None:
        operator = _node_id(operator, "operator", f"{path}: operator")
    development = data.get("development", False)
    if not isinstance(development, bool):
        raise ConfigError(f"{path}: development must be true or false, not {development!r}")
    per_key = data.get("connections_per_key", MAX_PER_KEY)
    if not isinstance(per_key, int) or isinstance(per_key, bool) or not 1 <= per_key <= 4096:
        raise ConfigError(f"{path}: connections_per_key must be an integer from 1 to 4096, not {per_key!r}")
    idle = data.get("idle_timeout", IDLE_TIMEOUT)
    if not isinstance(idle, int | float) or isinstance(idle, bool) or not 0.1 <= idle <= 86400:
        raise ConfigError(f"{path}: idle_timeout must be a number of seconds from 0.1 to 86400, not {idle!r}")
    return {"operator": operator, "development": development, "connections_per_key": per_key,
            "idle_timeout": float(idle)}


def _port(value: object, what: str) -> int:
    if not isinstance(value, int) or not 0 <= value < 65536:
        raise ConfigError(f"{what} must be a TCP port number, not {value!r}")
    return value


def _node_id(value: object, name: str, what: str | None = None) -> bytes:
    try:
        raw = bytes.fromhex(str(value))
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ConfigError(f"{what or f'peer {name}: id'} must be 64 hex digits (an Ed25519 public key)")
    return raw
