"""The cluster file (``cluster.msgpack``: members, ports, pids) is rewritten whenever a node is
(re)started, while clients read it to find the nodes.  A reader must never see half a file: a
fault run (``tools/faults.py``, whose clients read it before each submit) saw ``ValueError:
Unpack failed: incomplete input`` four times while killed nodes were restarted."""

from __future__ import annotations

import threading
from pathlib import Path

from missive.cluster import launcher


def test_readers_never_see_a_half_written_cluster_file(tmp_path: Path) -> None:
    nodes = [{"name": f"n{i}", "host": "127.0.0.1", "port": 1000 + i, "id": bytes([i]) * 32, "pid": i,
              "started": 0.0, "dir": str(tmp_path / f"n{i}" / ("x" * 2000))} for i in range(40)]
    data = {"format": launcher.FORMAT, "replicas": 2, "nodes": nodes, "chain_id": 7}
    launcher.write_cluster(tmp_path, data)
    failures: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                assert len(launcher.read_cluster(tmp_path)["nodes"]) == 40
            except BaseException as exc:  # noqa: BLE001 - collected and reported below
                failures.append(exc)
                return

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(300):
            nodes[n % 40]["pid"] = n
            launcher.write_cluster(tmp_path, data)
    finally:
        stop.set()
        reader.join()
    assert not failures, failures[0]
    assert launcher.read_cluster(tmp_path)["nodes"][19]["pid"] == 299
    assert [p.name for p in tmp_path.iterdir()] == [launcher.CLUSTER_FILE]  # no temporary file left behind
