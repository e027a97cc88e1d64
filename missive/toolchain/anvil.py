"""anvil (Foundry's local Ethereum node), for comparing ``missive rpc`` with it (``tools/bench/rpc.py``).

Installed by ``missive toolchain install`` (``.ci/run`` runs it): ``npm install --prefix DIR
@foundry-rs/anvil@ANVIL_VERSION``, DIR being ``$MISSIVE_ANVIL_DIR``, else ``~/.cache/missive/anvil``.
That package is a small Node.js wrapper whose optional dependency for this platform
(``@foundry-rs/anvil-linux-amd64`` and the like) carries the prebuilt binary, about 40 MB.

A directory of its own, not solc-js's: the tests compile Solidity with what is in the solc directory,
and anvil is only the benchmark's peer, so a platform npm has no anvil binary for (or a failed
download) must not touch it.  :func:`binary` finds the native binary itself rather than the
wrapper: the bench runs it directly so that stopping the process stops anvil (no Node.js in between)
and the CPU ``/proc`` reports for that process is anvil's own.  Missive never needs anvil: without
it everything works and the bench prints :func:`missing_reason`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from missive.errors import BadInput, Failed

#: The anvil version ``missive toolchain install`` installs (and CI benchmarks against).
ANVIL_VERSION: Final = "1.7.1"
PACKAGE: Final = "@foundry-rs/anvil"
#: Python's names for platform and machine -> the suffix of Foundry's npm package for it.
_PLATFORMS: Final = {"linux": "linux", "darwin": "darwin", "win32": "win32"}
_MACHINES: Final = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
#: seconds anvil may take to answer its first request
START_TIMEOUT: Final = 30.0


class AnvilMissing(BadInput):
    """anvil is not installed here: the message says what to run."""


class AnvilFailed(Failed):
    """anvil was started and did not answer (it exited, or kept silent past :data:`START_TIMEOUT`)."""


def anvil_dir() -> Path:
    from missive.toolchain.solidity import tool_dir

    return tool_dir("MISSIVE_ANVIL_DIR", "anvil")


def platform_package(system: str | None = None, machine: str | None = None) -> str | None:
    """The npm package with anvil's binary for this platform (``@foundry-rs/anvil-linux-amd64``), or None
    where Foundry publishes none."""
    os_name = _PLATFORMS.get(system or sys.platform)
    arch = _MACHINES.get((machine or platform.machine()).lower())
    if os_name is None or arch is None or (os_name == "win32" and arch != "amd64"):
        return None
    return f"{PACKAGE}-{os_name}-{arch}"


def binary() -> Path | None:
    """The native anvil binary npm installed into :func:`anvil_dir`, or None."""
    package = platform_package()
    if package is None:
        return None
    path = anvil_dir() / "node_modules" / package / "bin" / ("anvil.exe" if sys.platform == "win32" else "anvil")
    return path if path.is_file() else None


def installed_version() -> str | None:
    package = platform_package()
    if package is None:
        return None
    try:
        text = (anvil_dir() / "node_modules" / package / "package.json").read_text(encoding="utf-8")
        return str(json.loads(text)["version"])
    except (OSError, ValueError, KeyError):
        return None


def missing_reason() -> str | None:
    """Why anvil cannot be run here, in one line; None when it can."""
    if platform_package() is None:
        return f"Foundry publishes no anvil binary on npm for {sys.platform}/{platform.machine()}"
    if binary() is None:
        return (f"anvil is not installed (looked in {anvil_dir()}): run `missive toolchain install` (npm install of "
                f"{PACKAGE}@{ANVIL_VERSION}), or set MISSIVE_ANVIL_DIR")
    return None


def install(target: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``npm install --prefix TARGET @foundry-rs/anvil@ANVIL_VERSION``; the caller reports failures.
    npm picks the platform's binary package (an optional dependency); npm 11 does not run the
    wrapper's postinstall script, and nothing here needs it."""
    from missive.toolchain.solidity import npm_install

    return npm_install(target or anvil_dir(), f"{PACKAGE}@{ANVIL_VERSION}")



def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the kernel's pick for port 0; anvil --silent does not say which
    port it took, so it is given one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _answers(host: str, port: int) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=2)
    try:
        conn.request("POST", "/", b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}',
                     {"content-type": "application/json"})
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@contextlib.contextmanager
def running(*extra: str, host: str = "127.0.0.1") -> Iterator[tuple[subprocess.Popen[bytes], str, int]]:
    """Run anvil (automine, default settings, ``--silent``) on a free port of ``host`` until the block
    ends: ``(process, host, port)``, once it answers ``eth_chainId``.  The process is stopped however
    the block ends (an exception, Ctrl-C's KeyboardInterrupt): SIGTERM, then SIGKILL after 5 s; on
    Linux also when the caller's process dies without unwinding."""
    path = binary()
    if path is None:
        raise AnvilMissing(missing_reason() or "anvil is not installed")
    port = free_port(host)
    proc = subprocess.Popen([str(path), "--host", host, "--port", str(port), "--silent", *extra],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(host, port):
            if proc.poll() is not None:
                assert proc.stderr is not None
                last = (proc.stderr.read().decode(errors="replace").strip() or f"exit status {proc.returncode}")
                raise AnvilFailed(f"anvil stopped before it answered on {host}:{port}: {last.splitlines()[-1]}")
            if time.monotonic() > deadline:
                raise AnvilFailed(f"anvil did not answer on {host}:{port} within {START_TIMEOUT:g} s")
            time.sleep(0.05)
        yield proc, host, port
    finally:
        stop(proc)


def _die_with_parent() -> None:
    """In the child, before anvil runs: SIGTERM it when the process that started it dies, even by
    SIGKILL, where no ``finally`` runs (Linux's PR_SET_PDEATHSIG)."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # 1: PR_SET_PDEATHSIG


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop ``proc`` and reap it: SIGTERM, then SIGKILL if it is still there after 5 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()
