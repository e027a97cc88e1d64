"""anvil, installed by ``missive toolchain install`` (as CI does) for tools/bench/rpc.py: where it is
looked for, what status says, an install that fails, and that the bench's helper always stops it."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli_node import missive, ok

from missive.cli import check_cmd
from missive.cli.common import make_console
from missive.toolchain import anvil


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_the_platform_package_names_foundrys_npm_binaries() -> None:
    assert anvil.platform_package("linux", "x86_64") == "@foundry-rs/anvil-linux-amd64"
    assert anvil.platform_package("linux", "aarch64") == "@foundry-rs/anvil-linux-arm64"
    assert anvil.platform_package("darwin", "arm64") == "@foundry-rs/anvil-darwin-arm64"
    assert anvil.platform_package("win32", "AMD64") == "@foundry-rs/anvil-win32-amd64"
    assert anvil.platform_package("win32", "arm64") is None
    assert anvil.platform_package("freebsd14", "x86_64") is None


def test_status_names_the_installed_anvil_and_its_binary(tmp_path: Path) -> None:
    out = ok(missive("toolchain", "status", cwd=tmp_path))
    assert f"anvil {anvil.ANVIL_VERSION} in {anvil.anvil_dir()}" in out
    binary = anvil.binary()
    assert binary is not None and binary.name == "anvil"
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True, timeout=30)
    assert f"anvil Version: {anvil.ANVIL_VERSION}" in version.stdout


def test_without_anvil_status_says_how_to_install_it_and_still_succeeds(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISSIVE_ANVIL_DIR", str(tmp_path / "no-anvil"))  # the subprocess helper copies os.environ
    assert anvil.binary() is None and anvil.installed_version() is None
    assert anvil.missing_reason() == (f"anvil is not installed (looked in {tmp_path / 'no-anvil'}): run `missive "
                                      f"toolchain install` (npm install of @foundry-rs/anvil@{anvil.ANVIL_VERSION}), "
                                      "or set MISSIVE_ANVIL_DIR")
    out = ok(missive("toolchain", "status", cwd=tmp_path))
    assert "solc-js " in out and f"anvil: {anvil.missing_reason()}" in out
    with pytest.raises(anvil.AnvilMissing, match="run `missive toolchain install`"), anvil.running():
        pass


def test_a_failed_anvil_install_is_one_warning(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Only the bench needs anvil: npm failing for it warns, and solc-js and the prover stay usable."""
    monkeypatch.setenv("MISSIVE_ANVIL_DIR", str(tmp_path / "anvil"))
    monkeypatch.setattr(anvil, "install", lambda target: subprocess.CompletedProcess(
        ["npm"], 1, "", "npm error 404 Not Found - GET https://registry.npmjs.org/@foundry-rs%2fanvil\n"))
    check_cmd.install_anvil(make_console())
    out, err = capsys.readouterr()
    assert out == f"installing anvil {anvil.ANVIL_VERSION} into {tmp_path / 'anvil'} (npm)\n"
    assert err == (f"warning: npm install of anvil {anvil.ANVIL_VERSION} failed: npm error 404 Not Found - GET "
                   "https://registry.npmjs.org/@foundry-rs%2fanvil (only tools/bench/rpc.py uses anvil)\n")


def test_the_helper_stops_anvil_however_the_block_ends() -> None:
    for escape in (RuntimeError("the bench failed"), KeyboardInterrupt()):
        with pytest.raises(type(escape)), anvil.running() as (proc, host, port):
            assert proc.poll() is None and listening(port)
            raise escape
        assert proc.returncode is not None and not listening(port)


def test_an_anvil_that_cannot_start_is_one_line_and_reaped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "anvil"
    fake.write_text(f"#!{sys.executable}\nimport sys\nprint('error: invalid value for --port', file=sys.stderr)\n"
                    "sys.exit(2)\n")
    fake.chmod(0o755)
    monkeypatch.setattr(anvil, "binary", lambda: fake)
    with pytest.raises(anvil.AnvilFailed, match=r"anvil stopped before it answered on 127\.0\.0\.1:\d+: error: "
                                                r"invalid value for --port$"), anvil.running():
        pass
