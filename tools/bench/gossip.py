"""Benchmark: trust gossip in the simulator against naive whole-kernel flooding.

For each N the simulator (``missive.consensus.sim``, deterministic from the
seed) builds N nodes on the small-world overlay, lets them attest their
assigned neighbours for k = 16 steps (30% of them colluding liars by default:
they cheat on half of the spot checks, vouch perfectly for fellow liars and
report every honest subject as failed), signs every node's direct-trust
statement, then runs gossip — a targeted push of each fresh statement, then
rounds of one exchange per node with a peer the overlay picks — until every
honest node's kernel holds at least 99.99% of all entries.  Naive flooding
(every exchange sends both whole kernels) runs in the same run, same overlay,
loss and churn.  Figures:

* rounds until 99.99% coverage, for gossip and for flooding;
* bytes sent per node until then (msgpack sizes of every message), and the
  ratio gossip / flooding;
* liar ranking: conspiracy-breaching scores from three honest evaluators'
  kernels; how many liars score above the honest median, the best liar's
  score and the honest median.

Targets (issue 5): <= 12 rounds at 1,024 nodes, <= 25% of flooding's bytes,
no liar above the honest median with 30% colluding liars.
Prints a table and writes JSON (default tools/bench/results/gossip.json).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import attrs
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from missive.consensus.sim import SimConfig, SimResult, simulate  # noqa: E402

SIZES = (64, 256, 1024, 4096)
QUICK = (64, 256)


def figures(r: SimResult) -> dict[str, Any]:
    return {
        "n": r.config.n,
        "config": attrs.asdict(r.config),
        "rounds": r.rounds,
        "bytes_per_node": r.bytes_per_node,
        "flood_rounds": r.flood_rounds,
        "flood_bytes_per_node": r.flood_bytes_per_node,
        "bytes_ratio": r.ratio,
        "modes": r.modes,
        "coverage_per_round": r.coverage,
        "flood_coverage_per_round": r.flood_coverage,
        "ranks": [attrs.asdict(x) for x in r.ranks],
        "liars_above_median": max((x.liars_above_median for x in r.ranks), default=None),
        "seconds": r.seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--quick", action="store_true", help=f"N = {', '.join(map(str, QUICK))} only (a smoke run)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--liars", type=float, default=0.3)
    parser.add_argument("--cheat", type=float, default=0.5, help="how often a liar fails a spot check")
    parser.add_argument("--loss", type=float, default=0.01)
    parser.add_argument("--churn", type=float, default=0.0)
    parser.add_argument("--withhold", action="store_true", help="liars pass on only their colluders' statements")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gossip.json")
    args = parser.parse_args(argv)
    sizes = list(QUICK) if args.quick else args.sizes
    console = Console(width=160)
    withholding = ", withholding" if args.withhold else ""
    table = Table(title=f"trust gossip vs naive flooding (liars {args.liars:.0%}{withholding}, loss {args.loss:.0%}, churn {args.churn:.0%}, seed {args.seed})")
    for column in ("N", "rounds", "bytes/node", "flood rounds", "flood bytes/node", "gossip/flood", "liars > honest median", "best liar / median", "modes w/r/s/t", "s"):
        table.add_column(column, justify="right")
    results = []
    for n in sizes:
        r = simulate(SimConfig(n, seed=args.seed, liars=args.liars, cheat=args.cheat, loss=args.loss, churn=args.churn, withhold=args.withhold))
        f = figures(r)
        results.append(f)
        above = f["liars_above_median"]
        best = max((x.liar_max for x in r.ranks), default=0)
        median = min((x.honest_median for x in r.ranks), default=0)
        m = r.modes
        table.add_row(
            f"{n:,}",
            str(r.rounds) if r.rounds is not None else f">{r.config.max_rounds}",
            f"{r.bytes_per_node:,.0f}",
            str(r.flood_rounds) if r.flood_rounds is not None else f">{r.config.max_rounds}",
            f"{r.flood_bytes_per_node:,.0f}",
            f"{r.ratio:.1%}",
            f"{above} of {r.ranks[0].liars}" if r.ranks else "-",
            f"{best} / {median:g}",
            f"{m['whole']}/{m['reduced']}/{m['in_sync']}/{m['targeted']}",
            f"{r.seconds:.1f}",
        )
        console.print(f"N={n:,}: {r.rounds} rounds, {r.ratio:.1%} of flooding's bytes, {above} liars above the honest median ({r.seconds:.1f} s)")
    console.print(table)
    console.print("targets: <= 12 rounds at 1,024 nodes; <= 25% of flooding's bytes; no liar above the honest median")
    out = {"results": results, "machine": _common.machine_info(), "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    _common.write_json(args.out, out)
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
