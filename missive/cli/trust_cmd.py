"""``missive trust [--node HOST:PORT|NAME | --cluster DIR] [--graph FILE.svg]``: a node's view of trust.

Asks one cluster node for its ``trust_view`` (see :mod:`missive.cluster.trust`)
and shows it: the node's direct trust in each peer it attests (the k-bit map,
newest step first), its kernel, transitive trust and conspiracy-breaching
scores, and the evidence it kept — each piece checked here, by this command,
against the subject's signature.  ``--graph`` draws the trust graph the node's
kernel holds as an SVG written by hand (members on a circle, arrows as wide as
the direct trust, edges with evidence in red).  PNG would need a rasteriser
and fonts, which Missive does not ship, so only SVG is written.

Exit status: 0 shown, 1 the node could not be reached or failed, 2 bad input
(unknown node, unwritable file, unsupported extension).
"""

from __future__ import annotations

import argparse
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

from missive.cli.common import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, CliError, make_console


def escape(text: str) -> str:
    from xml.sax.saxutils import escape as xml_escape  # (imported when a graph is drawn)

    return xml_escape(text)


def quoteattr(text: str) -> str:
    from xml.sax.saxutils import quoteattr as xml_quoteattr

    return xml_quoteattr(text)


def Table(*args: Any, **kwargs: Any) -> Any:  # noqa: N802  (rich's Table, imported when a table is drawn)
    from rich.table import Table as RichTable

    return RichTable(*args, **kwargs)

DEFAULT_CLUSTER = Path(".missive-cluster")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "trust", help="a cluster node's view of trust: direct trust, kernel, scores, evidence",
        description="Show one cluster node's view of the trust layer: its direct trust in the peers it attests, "
        "its kernel, transitive trust and conspiracy-breaching scores, and the evidence it kept (verified here).")
    p.add_argument("--node", default=None, metavar="HOST:PORT|NAME",
                   help="the node to ask (a member's name needs --cluster, or a cluster in ./.missive-cluster)")
    p.add_argument("--cluster", type=Path, default=None, metavar="DIR",
                   help=f"the cluster started in DIR (default {DEFAULT_CLUSTER}); without --node, the first node that answers")
    p.add_argument("--graph", type=Path, default=None, metavar="FILE.svg",
                   help="also draw the trust graph as an SVG picture")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.graph is not None:
        check_graph_path(args.graph)
    view = fetch_view(args.node, args.cluster)
    show(view)
    if args.graph is not None:
        try:
            args.graph.write_text(render_svg(view), encoding="utf-8")
        except OSError as exc:
            raise CliError(f"--graph: cannot write {args.graph}: {exc.strerror or exc}") from None
        make_console().print(f"trust graph written to {args.graph}", markup=False)
    return EXIT_OK


# -- where to ask -----------------------------------------------------------------------------------


def check_graph_path(path: Path) -> None:
    """Refuse, before asking any node, a picture we could not write."""
    suffix = path.suffix.lower()
    if suffix == ".png":
        raise CliError(f"--graph {path}: PNG is not supported (it needs a rasteriser Missive does not ship); "
                       "SVG is: give a FILE.svg")
    if suffix != ".svg":
        raise CliError(f"--graph {path}: unknown picture format {suffix or '(no extension)'}; SVG is supported: "
                       "give a FILE.svg")
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise CliError(f"--graph {path}: is a directory")
    if not parent.is_dir():
        raise CliError(f"--graph {path}: no directory {parent}")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise CliError(f"--graph {path}: cannot write there (permission denied)")


def candidates(node: str | None, cluster: Path | None) -> list[tuple[str, int]]:
    """The (host, port) to ask, in order: the named node, or every member of the cluster."""
    from missive.cluster.client import ClusterError, parse_node
    from missive.cluster.launcher import read_cluster

    if cluster is None and node is not None and (":" in node or node.isdigit()):
        try:
            return [parse_node(node)]
        except ClusterError as exc:
            raise CliError(str(exc)) from None
    root = cluster if cluster is not None else DEFAULT_CLUSTER
    try:
        members = read_cluster(root)["nodes"]
    except ClusterError as exc:
        hint = "" if node is None else f" (--node {node!r} is not HOST:PORT, so it names a member of a cluster)"
        raise CliError(f"{exc}{hint}") from None
    if node is None:
        return [(str(m["host"]), int(m["port"])) for m in members]
    named = [m for m in members if node in (m["name"], f"{m['host']}:{m['port']}", str(m["port"]))]
    if not named:
        names = ", ".join(str(m["name"]) for m in members)
        raise CliError(f"--node {node!r}: no such node in the cluster at {root} ({names})", EXIT_NOT_FOUND)
    return [(str(named[0]["host"]), int(named[0]["port"]))]


def fetch_view(node: str | None, cluster: Path | None) -> dict[str, Any]:
    """The first answering candidate's ``trust_view``."""
    from missive.cluster.client import ClusterError, call
    from missive.net import NetError

    problems = []
    for host, port in candidates(node, cluster):
        try:
            view: dict[str, Any] = call(host, port, "trust_view", timeout=10.0)
            return view
        except ClusterError as exc:
            problems.append(str(exc))
        except NetError as exc:
            problems.append(f"node {host}:{port}: trust_view failed: {exc}")
    if len(problems) == 1:
        raise CliError(problems[0], EXIT_FAILED)
    raise CliError(f"no node of the cluster answers ({'; '.join(problems)})", EXIT_FAILED)


# -- the tables -------------------------------------------------------------------------------------


def _names(view: dict[str, Any]) -> dict[bytes, str]:
    return {bytes(m["id"]): str(m["name"]) for m in view["members"]}


def _evidence(view: dict[str, Any]) -> list[Any]:
    from missive.cluster.trust import evidence_from_view

    return [evidence_from_view(raw) for raw in view["evidence"]]


def show(view: dict[str, Any]) -> None:
    console = make_console()
    names = _names(view)
    k = int(view["k"])
    top = (1 << k) - 1
    evidence = _evidence(view)
    against = Counter(e.subject for e in evidence)
    console.print(f"trust as seen by {view['name']} ({bytes(view['id']).hex()[:16]}) at step {view['step']}: "
                  f"one step every {view['interval']:g} s, k = {k}", markup=False)
    if view.get("fault"):
        console.print(f"[yellow]this node has an injected fault: {view['fault']} (tests and simulation only)[/]")

    direct = Table(title="direct trust: this node's attestations (bits: newest step first)", title_justify="left")
    for column in ("peer", "D", "successes", "failures", "spot checks", "evidence"):
        direct.add_column(column)
    for d in view["direct"]:
        subject = bytes(d["id"])
        value = int(d["trust"])
        direct.add_row(names.get(subject, subject.hex()[:16]), f"{value} ({value / top:.0%})", d["bits"], d["failures"],
                       f"{d['receipt_checks']} receipt, {d['challenge_checks']} challenge only",
                       f"[red]{against[subject]}[/]" if against[subject] else "0")
    console.print(direct)

    kernel = view["kernel"]
    modes = view["gossip"]
    console.print(f"kernel: {kernel['statements']} statement(s) from {len(kernel['attesters'])} of "
                  f"{len(view['members'])} members, {kernel['entries']} entries; "
                  f"{kernel['equivocations']} equivocation(s), {kernel['rejected']} rejected", markup=False)
    console.print(f"gossip: {view['rounds']} round(s); exchanges whole {modes.get('whole', 0)}, reduced "
                  f"{modes.get('reduced', 0)}, in sync {modes.get('in_sync', 0)}; targeted pushes "
                  f"{modes.get('targeted', 0)}", markup=False)

    versions = {bytes(a): int(v) for a, v in kernel["versions"]}
    scores = Table(title="scores from the kernel", title_justify="left")
    for column in ("node", "statement", "transitive trust", "conspiracy-breaching"):
        scores.add_column(column)
    for s in view["scores"]:
        node = bytes(s["id"])
        label = names.get(node, node.hex()[:16]) + (" (this node)" if node == bytes(view["id"]) else "")
        version = versions.get(node)
        scores.add_row(label, f"version {version}" if version is not None else "[red]none[/]",
                       f"{float(s['transitive']):.3f}", str(s["conspiracy"]))
    console.print(scores)
    show_evidence(view, evidence, names)
    if "execution" in view:
        show_execution(view["execution"], names)


def show_execution(execution: dict[str, Any], names: dict[bytes, str]) -> None:
    """Execution trust: per executor, diffs re-executed or applied on trust; evidence of wrong diffs,
    each re-executed here (``WrongDiff.check``) before it is shown as proof."""
    from missive.replicas.execution import EvidenceError, WrongDiff

    console = make_console()
    table = Table(title=f"execution trust: state diffs re-executed below trust {execution['threshold']:.0%}, "
                        f"and {execution['sample']:.0%} of the others", title_justify="left")
    for column in ("executor", "trust", "re-executed", "applied on trust", "put off (message on its way)"):
        table.add_column(column)
    distrusted = {bytes(n) for n in execution["distrusted"]}
    for c in execution["checked"]:
        node = bytes(c["id"])
        trust = "[red]distrusted[/]" if node in distrusted else f"{float(c['trust']):.0%}"
        table.add_row(names.get(node, node.hex()[:16]), trust, str(c["reexecuted"]), str(c["on_trust"]),
                      str(c["waiting"]))
    console.print(table)
    if not execution["wrong_diffs"]:
        console.print("evidence of wrong state diffs: none", markup=False)
        return
    proofs = Table(title="evidence: a wrong state diff the executor signed (re-executed here)", title_justify="left")
    for column in ("executor", "actor", "found by", "what is wrong", "verdict"):
        proofs.add_column(column)
    for raw in execution["wrong_diffs"]:
        try:
            evidence = WrongDiff.decode(bytes(raw))
            differences = evidence.check()
            verdict = "[green]✓ proves it[/]" if differences else "[red]✗ the diff is right (false accusation)[/]"
            what = differences[0] if differences else ""
        except EvidenceError as exc:
            proofs.add_row("?", "?", "?", str(exc), "[red]✗ proves nothing[/]")
            continue
        proofs.add_row(names.get(evidence.executor, evidence.executor.hex()[:16]), "0x" + evidence.address.hex(),
                       names.get(evidence.accuser, evidence.accuser.hex()[:16]), what, verdict)
    console.print(proofs)


#: Evidence rows shown per subject (the newest); the older ones are summed up in one row.
EVIDENCE_ROWS = 4


def show_evidence(view: dict[str, Any], evidence: list[Any], names: dict[bytes, str]) -> None:
    """Each piece of evidence checked here (``Evidence.verify``): the newest few per subject in full."""
    console = make_console()
    if not evidence:
        console.print("evidence: none (no peer answered a spot check wrongly)", markup=False)
        return
    table = Table(title="evidence: wrong answers the subject signed (checked here)", title_justify="left")
    for column in ("subject", "step", "spot check", "answer", "signature"):
        table.add_column(column)

    def verdict(good: int, total: int) -> str:
        if good == total:
            return "[green]✓ verifies[/]" if total == 1 else f"[green]✓ all {total} verify[/]"
        return f"[red]✗ {total - good} of {total} do not verify[/]"

    by_subject: dict[bytes, list[Any]] = {}
    for e in sorted(evidence, key=lambda e: e.step):
        by_subject.setdefault(e.subject, []).append(e)
    for subject, pieces in by_subject.items():
        name = names.get(subject, subject.hex()[:16])
        older, newest = pieces[:-EVIDENCE_ROWS], pieces[-EVIDENCE_ROWS:]
        if older:
            table.add_row(name, f"{older[0].step}–{older[-1].step}", f"{len(older)} earlier", "",
                          verdict(sum(e.verify() for e in older), len(older)))
        for e in newest:
            checked = "receipt of 0x" + e.receipt.hex()[:16] if e.receipt else "challenge only"
            table.add_row(name, str(e.step), checked, "0x" + e.answer.hex()[:16], verdict(int(e.verify()), 1))
    console.print(table)


# -- the picture --------------------------------------------------------------------------------------

#: Canvas, the circle the members sit on (centre and radius), a member's radius.
WIDTH, HEIGHT = 860, 720
CX, CY, RADIUS, NODE_R = 430, 390, 240, 30


def _positions(members: list[bytes]) -> dict[bytes, tuple[float, float]]:
    """Members on a circle, the first at the top, clockwise."""
    n = max(1, len(members))
    return {m: (CX + RADIUS * math.sin(2 * math.pi * i / n), CY - RADIUS * math.cos(2 * math.pi * i / n))
            for i, m in enumerate(members)}


def _label_at(x: float, y: float) -> tuple[float, float, str]:
    """Where a member's caption goes: outside the circle, away from the edges (which run inside it)."""
    dx, dy = (x - CX) / RADIUS, (y - CY) / RADIUS
    anchor = "middle" if abs(dx) < 0.35 else ("start" if dx > 0 else "end")
    return x + dx * (NODE_R + 10), y + dy * (NODE_R + 14) + 4, anchor


def _edge(a: tuple[float, float], b: tuple[float, float]) -> tuple[str, tuple[float, float, str]]:
    """A gently curved path from circle a to circle b (a→b and b→a bend apart), and a point beside its middle."""
    (x1, y1), (x2, y2) = a, b
    dx, dy = x2 - x1, y2 - y1
    length = math.hypot(dx, dy) or 1.0
    ux, uy = dx / length, dy / length
    sx, sy = x1 + ux * NODE_R, y1 + uy * NODE_R
    ex, ey = x2 - ux * (NODE_R + 4), y2 - uy * (NODE_R + 4)
    bend = 0.12 * length
    cx, cy = (sx + ex) / 2 - uy * bend, (sy + ey) / 2 + ux * bend
    mx, my = (sx + 2 * cx + ex) / 4 - uy * 12, (sy + 2 * cy + ey) / 4 + ux * 12  # beside the curve, not on it
    anchor = "middle" if abs(uy) < 0.3 else ("start" if -uy > 0 else "end")
    return f"M {sx:.1f} {sy:.1f} Q {cx:.1f} {cy:.1f} {ex:.1f} {ey:.1f}", (mx, my, anchor)


def render_svg(view: dict[str, Any]) -> str:
    """The trust graph of ``view`` as a standalone SVG document."""
    names = _names(view)
    me = bytes(view["id"])
    k = int(view["k"])
    top = (1 << k) - 1
    members = [bytes(m["id"]) for m in view["members"]]
    at = _positions(members)
    evidence = Counter(e.subject for e in _evidence(view) if e.attester == me)
    scores = {bytes(s["id"]): s for s in view["scores"]}
    seen_by = f"as seen by {view['name']} at step {view['step']}"
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif">',
        f"<title>{escape('Missive trust graph ' + seen_by)}</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="12" markerHeight="12" '
        'markerUnits="userSpaceOnUse" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker>'
        '<marker id="arrow-red" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="12" markerHeight="12" '
        'markerUnits="userSpaceOnUse" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#c62828"/></marker></defs>',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="20" y="30" font-size="18">{escape("trust " + seen_by)}</text>',
        '<text x="20" y="50" font-size="12" fill="#555">arrow attester → subject, width and colour: direct trust '
        f'D/(2^{k}−1); red: evidence of wrong answers</text>',
    ]
    for a, b, d in view["edges"]:
        a, b, value = bytes(a), bytes(b), int(d)
        if a not in at or b not in at:
            continue
        path, (mx, my, anchor) = _edge(at[a], at[b])
        t = value / top
        bad = evidence[b] if a == me else 0
        colour = "#c62828" if bad else f"rgb({int(200 - 150 * t)},{int(200 - 40 * t)},{int(200 - 150 * t)})"
        dash = ' stroke-dasharray="6 4"' if value == 0 else ""
        marker = "arrow-red" if bad else "arrow"
        tip = f"{names.get(a, '?')} → {names.get(b, '?')}: D = {value} ({t:.0%})"
        out.append(f'<path class="edge" d="{path}" fill="none" stroke="{colour}" stroke-width="{1 + 6 * t:.2f}"{dash} '
                   f'marker-end="url(#{marker})"><title>{escape(tip)}</title></path>')
        if bad:
            out.append(f'<text x="{mx:.1f}" y="{my:.1f}" font-size="12" fill="#c62828" text-anchor="{anchor}" '
                       f'stroke="white" stroke-width="4" paint-order="stroke">✗ {bad} wrong answer(s) kept</text>')
    for m in members:
        x, y = at[m]
        name = names.get(m, m.hex()[:8])
        stroke = "#c62828" if evidence[m] else ("#1565c0" if m == me else "#333")
        fill = "#e3f2fd" if m == me else "#fafafa"
        s = scores.get(m, {})
        lx, ly, anchor = _label_at(x, y)
        caption = f"{m.hex()[:8]} · T {float(s.get('transitive', 0.0)):.2f} · CB {s.get('conspiracy', 0)}"
        out.append(f'<g class="node" id={quoteattr("node-" + name)}>'
                   f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{NODE_R}" fill="{fill}" stroke="{stroke}" '
                   f'stroke-width="{3 if evidence[m] or m == me else 1.5}"/>'
                   f'<text x="{x:.1f}" y="{y + 5:.1f}" font-size="15" text-anchor="middle">{escape(name)}</text>'
                   f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="11" fill="#555" text-anchor="{anchor}">'
                   f"{escape(caption)}</text></g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"
