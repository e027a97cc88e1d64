"""circom 2 and snarkjs, the zk-SNARK prover, run with Node.js as separate processes.

Installed by ``missive toolchain install`` (beside solc-js; ``.ci/run`` runs it): ``npm install
--prefix DIR snarkjs@SNARKJS_VERSION circom2@CIRCOM2_VERSION``, DIR being ``$MISSIVE_ZK_DIR``,
else ``~/.cache/missive/zk``.  Both are GPL-3.0 programs; Missive (MIT) only runs them, never
imports them.  Without them every zk *check* still works (Python and the on-ledger verifier
contract need nothing from npm); compiling a circuit, setting up its keys and proving say what
to install (:func:`missing_reason`).

The steps, each a function returning the files it wrote in a working directory:
circuit (``.circom``) → ``compile_circuit`` (R1CS + witness generator wasm) → ``powers_of_tau``
(a small universal setup, 2^power constraints) → ``setup`` (the circuit's Groth16 proving key and
verification key) → ``prove`` (witness and proof for some inputs).  ``solidity_verifier`` writes
snarkjs's Solidity verifier for a key (compiled by solc-js it agrees with ours, see the tests).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

from missive.errors import BadInput, Failed

SNARKJS_VERSION: Final = "0.7.6"
CIRCOM2_VERSION: Final = "0.2.23"
#: the seed's ZoKrates, as wasm (GPL-3.0, run as a separate process by zk_scripts/zokrates.mjs)
ZOKRATES_VERSION: Final = "1.1.9"
ZOKRATES_SCRIPT: Final = Path(__file__).with_name("zk_scripts") / "zokrates.mjs"
#: seconds a tool may take before it is stopped (a 2^10 setup takes a few seconds here)
TIMEOUT: Final = 600.0


class ZkToolMissing(BadInput):
    """circom2/snarkjs (or Node.js) is not installed: the message says what to run."""


class ZkToolFailed(Failed):
    """A prover step ran and failed (a circuit that does not compile, inputs that break a constraint)."""


def zk_dir() -> Path:
    from missive.toolchain.solidity import tool_dir

    return tool_dir("MISSIVE_ZK_DIR", "zk")


def _bin(name: str) -> Path:
    return zk_dir() / "node_modules" / ".bin" / name


def missing_reason() -> str | None:
    """Why circuits cannot be compiled or proved here, in one line; None when they can."""
    if shutil.which("node") is None:
        return ("proving needs Node.js (`node` is not on PATH) and circom2 + snarkjs: install Node.js, then run "
                "`missive toolchain install`")
    missing = [name for name in ("snarkjs", "circom2") if not _bin(name).exists()]
    if missing:
        return (f"{' and '.join(missing)} not installed (looked in {zk_dir()}): run `missive toolchain install` "
                f"(npm install of snarkjs@{SNARKJS_VERSION} circom2@{CIRCOM2_VERSION}), or set MISSIVE_ZK_DIR")
    return None


def install(target: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``npm install --prefix TARGET snarkjs circom2`` at the pinned versions; the caller reports failures."""
    from missive.toolchain.solidity import npm_install

    return npm_install(target or zk_dir(), f"snarkjs@{SNARKJS_VERSION}", f"circom2@{CIRCOM2_VERSION}",
                       f"zokrates-js@{ZOKRATES_VERSION}")


def zokrates_missing() -> str | None:
    """Why ZoKrates circuits cannot be set up or proved here, in one line; None when they can."""
    if shutil.which("node") is None:
        return "ZoKrates needs Node.js (`node` is not on PATH): install it, then run `missive toolchain install`"
    if not (zk_dir() / "node_modules" / "zokrates-js" / "index-node.js").is_file():
        return (f"zokrates-js is not installed (looked in {zk_dir()}): run `missive toolchain install` (npm install "
                f"of zokrates-js@{ZOKRATES_VERSION}), or set MISSIVE_ZK_DIR")
    return None


def zokrates(request: dict[str, Any]) -> dict[str, Any]:
    """One request to zokrates-js (``setup`` a source, or ``prove`` with its program and key): its
    JSON answer, or ZkToolFailed with ZoKrates's own message on one line."""
    reason = zokrates_missing()
    if reason is not None:
        raise ZkToolMissing(reason)
    try:
        done = subprocess.run(["node", str(ZOKRATES_SCRIPT)], input=json.dumps(request), capture_output=True,
                              text=True, check=False, timeout=TIMEOUT,
                              env={**os.environ, "MISSIVE_ZK_DIR_RESOLVED": str(zk_dir().resolve())})
    except subprocess.TimeoutExpired:
        raise ZkToolFailed(f"zokrates-js {request.get('op')} took more than {TIMEOUT:g} s") from None
    try:
        answer: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        answer = {"error": (done.stderr.strip() or f"exit status {done.returncode}").splitlines()[-1]}
    if "error" in answer:
        detail = " ".join(part.strip() for part in str(answer["error"]).splitlines() if part.strip(" |"))
        raise ZkToolFailed(f"zokrates-js {request.get('op')} failed: {detail}")
    return answer


def installed_versions() -> dict[str, str]:
    found = {}
    for name in ("snarkjs", "circom2", "zokrates-js"):
        try:
            found[name] = str(json.loads((zk_dir() / "node_modules" / name / "package.json").read_text())["version"])
        except (OSError, ValueError, KeyError):
            pass
    return found


def run_tool(name: str, *args: str | Path, cwd: Path) -> str:
    """Run ``name`` (snarkjs or circom2) in ``cwd``; its output, or ZkToolFailed with its last error line."""
    reason = missing_reason()
    if reason is not None:
        raise ZkToolMissing(reason)
    command = [str(_bin(name)), *(str(a) for a in args)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=cwd, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ZkToolFailed(f"{name} {args[0]} took more than {TIMEOUT:g} s") from None
    text = _plain(done.stdout + done.stderr)
    # snarkjs exits 0 on some failures and prints "[ERROR]"; circom prints "error[P1012]: what" then
    # where ("┌─ file:line:column"), and ends with "previous errors were found"
    lines = text.splitlines()
    errors = [i for i, line in enumerate(lines) if "ERROR" in line or line.lstrip().lower().startswith("error")]
    if done.returncode != 0 or errors:
        if errors:
            first = errors[0]
            where = next((line.split("─", 1)[1].strip().replace('"', "") for line in lines[first + 1:first + 3]
                          if "┌─" in line), "")
            detail = lines[first].strip() + (f" at {where}" if where else "")
        else:
            detail = (text.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise ZkToolFailed(f"{name} {args[0]} failed: {detail}")
    return text


def _plain(line: str) -> str:
    """A tool's line without its terminal colours."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", line)


def compile_circuit(source: Path, out: Path) -> tuple[Path, Path]:
    """circom2 ``source`` → (R1CS file, witness-generator wasm) in ``out``."""
    r1cs, wasm, _ = compile_circuit_sized(source, out)
    return r1cs, wasm


def compile_circuit_sized(source: Path, out: Path) -> tuple[Path, Path, int]:
    """As :func:`compile_circuit`, with the smallest powers-of-tau power its setup needs
    (2^power above its constraints plus public values; 8 at least)."""
    out.mkdir(parents=True, exist_ok=True)
    text = _plain(run_tool("circom2", source.resolve(), "--r1cs", "--wasm", "-o", out.resolve(), cwd=out))
    counts = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and value.strip().isdigit():
            counts[name.strip()] = int(value)
    size = sum(counts.get(k, 0) for k in ("non-linear constraints", "linear constraints", "public inputs",
                                          "public outputs")) + 2
    name = source.stem
    return out / f"{name}.r1cs", out / f"{name}_js" / f"{name}.wasm", max(8, (size - 1).bit_length())


def powers_of_tau(power: int, out: Path) -> Path:
    """A small universal setup for circuits of up to 2^power constraints (new, one random
    contribution, phase 2 prepared).  Fine for tests and demos; a production key needs a ceremony."""
    if not 1 <= power <= 16:
        raise BadInput(f"powers of tau 2^{power}: the power must be between 1 and 16 here")
    out.mkdir(parents=True, exist_ok=True)
    run_tool("snarkjs", "powersoftau", "new", "bn128", str(power), "pot_0.ptau", cwd=out)
    run_tool("snarkjs", "powersoftau", "contribute", "pot_0.ptau", "pot_1.ptau", f"-e={secrets.token_hex(32)}",
             cwd=out)
    run_tool("snarkjs", "powersoftau", "prepare", "phase2", "pot_1.ptau", f"pot{power}.ptau", cwd=out)
    for step in ("pot_0.ptau", "pot_1.ptau"):
        (out / step).unlink()
    return out / f"pot{power}.ptau"


def setup(r1cs: Path, ptau: Path, out: Path) -> tuple[Path, dict[str, Any]]:
    """The circuit's Groth16 proving key (``.zkey``) and its verification key (snarkjs JSON)."""
    zkey = out / f"{r1cs.stem}.zkey"
    run_tool("snarkjs", "groth16", "setup", r1cs.resolve(), ptau.resolve(), zkey.resolve(), cwd=out)
    vk = out / f"{r1cs.stem}.vk.json"
    run_tool("snarkjs", "zkey", "export", "verificationkey", zkey.resolve(), vk.resolve(), cwd=out)
    return zkey, dict(json.loads(vk.read_text()))


def prove(wasm: Path, zkey: Path, inputs: dict[str, Any], out: Path) -> tuple[dict[str, Any], list[str]]:
    """A Groth16 proof of the circuit on ``inputs``: (proof JSON, public values as snarkjs lists them)."""
    out.mkdir(parents=True, exist_ok=True)
    tag = secrets.token_hex(4)
    given, proof, public = out / f"input-{tag}.json", out / f"proof-{tag}.json", out / f"public-{tag}.json"
    given.write_text(json.dumps(inputs))
    try:
        run_tool("snarkjs", "groth16", "fullprove", given.resolve(), wasm.resolve(), zkey.resolve(),
                 proof.resolve(), public.resolve(), cwd=out)
        return dict(json.loads(proof.read_text())), [str(v) for v in json.loads(public.read_text())]
    finally:
        for path in (given, proof, public):
            path.unlink(missing_ok=True)


def snarkjs_verify(vk: dict[str, Any], public: list[str], proof: dict[str, Any], out: Path) -> bool:
    """snarkjs's own verifier (for comparison and the benchmark): True when it says OK."""
    files = {"vk": vk, "public": public, "proof": proof}
    paths = {}
    for name, content in files.items():
        paths[name] = out / f"check-{name}.json"
        paths[name].write_text(json.dumps(content))
    try:
        text = run_tool("snarkjs", "groth16", "verify", paths["vk"].resolve(), paths["public"].resolve(),
                        paths["proof"].resolve(), cwd=out)
    except ZkToolFailed:
        return False
    return "OK" in text


def solidity_verifier(zkey: Path, out: Path) -> Path:
    """snarkjs's Solidity verifier for this key (compile it with solc-js: ``missive compile``)."""
    target = out / "Groth16Verifier.sol"
    run_tool("snarkjs", "zkey", "export", "solidityverifier", zkey.resolve(), target.resolve(), cwd=out)
    return target


__all__ = ["CIRCOM2_VERSION", "SNARKJS_VERSION", "ZkToolFailed", "ZkToolMissing", "compile_circuit",
           "compile_circuit_sized", "install",
           "installed_versions", "missing_reason", "powers_of_tau", "prove", "setup", "snarkjs_verify",
           "solidity_verifier", "zk_dir"]
