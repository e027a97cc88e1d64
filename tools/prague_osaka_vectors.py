"""Gather the public conformance vectors for the Prague and Osaka additions into one directory.

The VM runs Prague's BLS12-381 precompiles (EIP-2537), Osaka's CLZ (EIP-7939) and
P256VERIFY (EIP-7951).  ``../shared/conformance`` may not hold vectors for them yet; they
live in public repositories, and this machine reaches no network but package registries.
So this script takes clones (or bare git directories) of those repositories, however they
were obtained, and copies the vector files, unchanged, into a directory laid out like
``../shared/conformance``, with a ``MANIFEST.tsv`` saying where each came from:

=========  =================================  ==============================================
option     repository                         files
=========  =================================  ==============================================
--eips     ethereum/EIPs                      ``assets/eip-2537/*.json`` (BLS12-381, success
                                              and ``fail-`` vectors), ``assets/eip-7951/
                                              test-vectors.json`` (P-256, Wycheproof-derived)
--geth     ethereum/go-ethereum               ``core/vm/testdata/precompiles/``: every file
                                              the runner knows (BLS12-381, p256Verify, and the
                                              Cancun precompiles' ecRecover, bn256*, blake2F,
                                              modexp_eip2565)
--eest     fselmo/fixtures_eest (filled       ``state_tests/prague/eip2537_bls_12_381_
           execution-spec-tests fixtures,     precompiles/**``: whole transactions that call
           as ../shared's Cancun ones)        the precompiles from contracts, gas included
=========  =================================  ==============================================

No public filled fixtures for CLZ were found in a repository this could read (the
execution-spec-tests fixtures are release tarballs, not in git); ``tests/test_clz.py``
carries EIP-7939's own test cases.

    python tools/prague_osaka_vectors.py --eips EIPS --geth GETH --eest EEST --out DIR
    missive vm conformance DIR                    # ends with "N passed, M failed"
    MISSIVE_EXTRA_VECTORS=DIR python -m pytest tests/test_conformance.py

A file the snapshot does not hold (large files may be left out of a shallow or partial
copy) is skipped and named.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from missive.toolchain.conformance import PRECOMPILE_FILES

EEST_PREFIX = "state_tests/prague/eip2537_bls_12_381_precompiles/"
GETH_PREFIX = "core/vm/testdata/precompiles/"


def git_dir(path: Path) -> Path:
    return path / ".git" if (path / ".git").exists() else path


def git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", f"--git-dir={git_dir(repo)}", *args], capture_output=True, check=True).stdout


def files_under(repo: Path, prefix: str) -> list[str]:
    return git(repo, "ls-tree", "-r", "--name-only", "HEAD", "--", prefix).decode().split()


def wanted_geth(name: str) -> bool:
    stem = Path(name).stem.removeprefix("fail-")
    return name.endswith(".json") and stem in PRECOMPILE_FILES


def gather(sources: list[tuple[str, Path, str, str]], out: Path) -> tuple[list[str], list[str]]:
    """Copy the files; return the manifest lines and the files that could not be read."""
    manifest = ["local_path\tsource_repo\tsource_path\tcommit"]
    missing = []
    for repository, repo, prefix, target in sources:
        commit = git(repo, "rev-parse", "HEAD").decode().strip()
        names = [n for n in files_under(repo, prefix)
                 if n.endswith(".json") and (repository != "ethereum/go-ethereum" or wanted_geth(Path(n).name))]
        for name in names:
            relative = name[len("assets/"):] if repository == "ethereum/EIPs" else name[len(prefix):]
            local = Path(target) / relative
            try:
                content = git(repo, "show", f"HEAD:{name}")
            except subprocess.CalledProcessError:
                missing.append(f"{repository}:{name}")
                continue
            if not content.strip():
                missing.append(f"{repository}:{name} (empty in this copy)")
                continue
            destination = out / local
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(content)
            manifest.append(f"{local}\t{repository}\t{name}\t{commit}")
    return manifest, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eips", type=Path, help="a clone or git directory of ethereum/EIPs")
    parser.add_argument("--geth", type=Path, help="a clone or git directory of ethereum/go-ethereum")
    parser.add_argument("--eest", type=Path, help="a clone or git directory of fselmo/fixtures_eest")
    parser.add_argument("--out", type=Path, required=True, help="the directory to write (created)")
    args = parser.parse_args(argv)
    sources: list[tuple[str, Path, str, str]] = []
    if args.eips:
        sources += [("ethereum/EIPs", args.eips, "assets/eip-2537/", "precompiles"),
                    ("ethereum/EIPs", args.eips, "assets/eip-7951/", "precompiles")]
    if args.geth:
        sources.append(("ethereum/go-ethereum", args.geth, GETH_PREFIX, "precompiles/go-ethereum"))
    if args.eest:
        sources.append(("fselmo/fixtures_eest", args.eest, EEST_PREFIX,
                        "eest_state_tests/prague/eip2537_bls_12_381_precompiles"))
    if not sources:
        parser.error("name at least one of --eips, --geth, --eest")
    args.out.mkdir(parents=True, exist_ok=True)
    manifest, missing = gather(sources, args.out)
    (args.out / "MANIFEST.tsv").write_text("\n".join(manifest) + "\n", encoding="utf-8")
    print(f"{len(manifest) - 1} files written to {args.out} (MANIFEST.tsv says where each came from)")
    for name in missing:
        print(f"skipped, not in this copy: {name}", file=sys.stderr)
    print(f"run them: missive vm conformance {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
