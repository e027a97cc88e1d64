"""``missive check``: where a contract expects a synchronous answer that Missive does not give.

On Ethereum a ``CALL`` runs the callee before the next instruction; in Missive it
queues a message and leaves the return data empty (SPEC §3, ``examples/GUIDE.md``).
Code written for Ethereum that reads what a call returned keeps running, but on
an empty answer: most often it reverts (loud), sometimes it carries on with a
different meaning (silent: OpenZeppelin's SafeERC20 takes empty return data as
success).  This module reads a contract's runtime bytecode and names each place:

* ``empty-return-as-success``: after a message call the code checks the return
  data's size and the callee's code size, the SafeERC20 pattern.  Always refused.
* ``return-data-read``: the return data of a message call is read
  (``RETURNDATASIZE``/``RETURNDATACOPY``: high-level calls with return values,
  ``(bool ok, bytes memory data) = a.call(...)``, Vyper's ``raw_call`` with
  ``max_outsize``).  Refused unless the contract has an ``onReply`` entry point,
  which shows it was written for messages (then it is a note).
* ``query-read``: a ``STATICCALL`` to another contract (a view call) in a contract
  without ``onReply``: it becomes a query whose answer arrives later.  Refused.
* ``reply-without-onreply``: a call that asks for a reply (non-zero output size)
  in a contract without ``onReply``: the reply has nowhere to go.  Refused.
* ``balance-of-other``: ``BALANCE`` of an address other than the contract's own;
  the handler fails at run time, naming the opcode (loud: a note).

Calls to the system contract and the precompiles are synchronous and not
reported.  A *refused* finding stops ``missive deploy`` unless
``--accept-async`` names it (by kind, or ``kind@offset``).  The analysis is
static and approximate (it follows constant jumps, and helper returns to
addresses pushed before, up to :data:`WINDOW` instructions past each call), so it
can miss a read behind a jump computed from data or further away; the guide says
how to write code it understands.  In code without a source map a finding names
the external function the dispatcher sends to it (by selector, or by name from
the ABI).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs

from missive.toolchain.evmcode import (
    SELF,
    TERMINATORS,
    AbstractStack,
    Block,
    Instruction,
    blocks,
    disassemble,
    strip_metadata,
    walk,
)

if TYPE_CHECKING:
    from missive.toolchain.compiler import CompiledContract

#: The system contract's address ("missive"), synchronous like a precompile.
SYSTEM_ADDRESS: Final = 0x6D697373697665
#: Addresses below this are precompiles (0x01-0x11 today, P256VERIFY at 0x100).
PRECOMPILE_LIMIT: Final = 0x101
#: ``onReply(bytes32,bool,bytes)``.
ON_REPLY_SELECTOR: Final = 0x9CC2B73B
#: Where in the guide each kind of finding is explained.
GUIDE: Final = "examples/SOLIDITY.md#4-what-missive-check-reports"
#: How far past a call the analysis follows the code looking for return-data reads.
WINDOW: Final = 96

KINDS: Final = {
    "empty-return-as-success": "takes a call's empty return data as success (the SafeERC20 pattern): here every "
                               "call returns empty data at once, so a failed transfer counts as done",
    "return-data-read": "reads a call's return data, which is always empty here (the callee has not run yet)",
    "query-read": "makes a view call (STATICCALL) to another contract: it becomes a query, answered later in onReply, "
                  "and the contract has no onReply",
    "reply-without-onreply": "asks for a reply (a call with a non-zero output size) but has no onReply(bytes32,bool,"
                             "bytes) to receive it",
    "balance-of-other": "reads another account's balance (BALANCE): the handler fails at run time",
}
FIXES: Final = {
    "empty-return-as-success": "do not take a token's word synchronously: send the transfer, ask for a reply and "
                               "credit the stake in onReply when it succeeded (Missive.sol's MessageClient)",
    "return-data-read": "ask for a reply and use the answer in onReply (Missive.sol's MessageClient), or call "
                        "functions that return nothing",
    "query-read": "send a query with Missive.sol's query() and handle the answer in onReply",
    "reply-without-onreply": "add onReply(bytes32,bool,bytes), or call with output size 0",
    "balance-of-other": "ask the other contract for what you need, by message",
}


@attrs.frozen
class Finding:
    kind: str
    #: byte offset of the instruction in the runtime code
    offset: int
    #: False for notes (reported; deploy goes on)
    refused: bool
    #: ``File.sol:42``, when the compiler gave a source map
    source: str | None = None
    #: the function it is in, when known (``stake`` or ``0xa9059cbb``)
    function: str | None = None
    #: in the init code (the constructor) rather than the runtime code
    in_constructor: bool = False

    @property
    def name(self) -> str:
        """What ``--accept-async`` takes to accept this one finding."""
        return f"{self.kind}@{'init:' if self.in_constructor else ''}{self.offset}"

    @property
    def where(self) -> str:
        parts = [self.source or f"{'init code ' if self.in_constructor else ''}offset {self.offset}"]
        if self.in_constructor and not self.function:
            parts.append("in the constructor")
        if self.function:
            parts.append(f"in {self.function}")
        return ", ".join(parts)

    def line(self) -> str:
        return f"{self.name}: {self.where}: {KINDS[self.kind]}"

    def as_json(self) -> dict[str, Any]:
        return {"finding": self.name, "kind": self.kind, "offset": self.offset, "init_code": self.in_constructor,
                "refused": self.refused,
                "source": self.source, "function": self.function, "what": KINDS[self.kind], "fix": FIXES[self.kind]}


@attrs.frozen
class Report:
    name: str
    findings: tuple[Finding, ...]
    has_on_reply: bool

    @property
    def refused(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.refused)

    def unaccepted(self, accepted: Iterable[str]) -> tuple[Finding, ...]:
        """Refused findings not named by ``accepted`` (kinds, or ``kind@offset``)."""
        names = {a.strip() for item in accepted for a in item.split(",") if a.strip()}
        return tuple(f for f in self.refused if f.kind not in names and f.name not in names)

    def refusal(self, accepted: Iterable[str] = ()) -> str | None:
        """The one-line reason to refuse a deploy, or None."""
        left = self.unaccepted(accepted)
        if not left:
            return None
        first = left[0]
        more = f" (and {len(left) - 1} more: {', '.join(f.name for f in left[1:4])}{', ...' if len(left) > 4 else ''})" \
            if len(left) > 1 else ""
        return (f"{self.name} would change meaning silently under message semantics: {first.line()}{more}; "
                f"fix: {FIXES[first.kind]}; see {GUIDE}; run `missive check` for the list, or deploy anyway "
                f"with --accept-async {first.kind}")


class _Code:
    def __init__(self, code: bytes, *, metadata: bool = True) -> None:
        self.instructions = disassemble(strip_metadata(code) if metadata else code)
        self.blocks = blocks(self.instructions)
        self.starts = sorted(self.blocks)
        self.next_start = dict(zip(self.starts, self.starts[1:], strict=False))
        self.jumpdests = {i.pc for i in self.instructions if i.op == 0x5B}

    def successors(self, block: Block, stack_top: int | None, last: Instruction) -> list[int]:
        out: list[int] = []
        if last.op in (0x56, 0x57) and stack_top is not None and stack_top in self.jumpdests:
            out.append(stack_top)
        if last.op not in TERMINATORS:
            following = self.next_start.get(block.start)
            if following is not None:
                out.append(following)
        return out

    def window_after(self, block: Block, index: int) -> set[str]:
        """Names of the opcodes reached within :data:`WINDOW` instructions after ``block``'s ``index``-th
        one, following fall-through and constant jumps, stopping at the next call.  What is known of the
        stack goes along each jump, so a helper's return to an address its caller pushed is followed too
        (solc's internal functions: the return data is often read after the helper that made the call)."""
        seen: set[str] = set()
        todo: list[tuple[int, int, int, AbstractStack]] = [(block.start, index + 1, 0, AbstractStack())]
        visited: set[int] = set()
        while todo:
            start, first, budget, stack = todo.pop()
            current = self.blocks[start]
            jump_target: int | None = None
            last: Instruction | None = None
            stopped = False
            names: set[str] = set()
            for position, (ins, before) in enumerate(walk(current, stack)):
                if position < first:
                    continue
                budget += 1
                if ins.op in _CALLS or budget > WINDOW:
                    stopped = True
                    break
                names.add(ins.name)
                jump_target = before.peek()
                last = ins
            # (walk has stepped ``stack`` past the block's last instruction: it is the stack the jump leaves)
            if current.instructions[-1].op == 0xFD:  # a failed call's revert passed on: harmless here
                names -= {"RETURNDATASIZE", "RETURNDATACOPY"}
            seen |= names
            if stopped or last is None:
                continue
            for target in self.successors(current, jump_target, last):
                if target not in visited:
                    visited.add(target)
                    todo.append((target, 0, budget, stack.copy()))
        return seen

    def entries(self) -> dict[int, int]:
        """The dispatcher's entry points, pc -> selector: ``PUSH4 selector``, then within two instructions
        ``EQ PUSH dest JUMPI`` (solc, optimized or not: the function is at ``dest``) or ``XOR PUSH dest
        JUMPI`` (Vyper: ``dest`` is the next candidate, the function follows the JUMPI)."""
        out: dict[int, int] = {}
        for block in self.blocks.values():
            code = block.instructions
            for i, ins in enumerate(code):
                if ins.op != 0x63 or ins.arg is None:
                    continue
                for j in range(i + 1, min(i + 3, len(code) - 2)):
                    if code[j].op not in (0x14, 0x18) or not 0x60 <= code[j + 1].op <= 0x7F or code[j + 2].op != 0x57:
                        continue
                    dest = code[j + 1].arg if code[j].op == 0x14 else code[j + 2].pc + 1
                    if dest is not None and (dest in self.jumpdests or dest in self.blocks):
                        out.setdefault(dest, ins.arg)
                    break
        return out

    def reachable(self, entry: int, limit: int = 4000) -> set[int]:
        """The blocks reached from ``entry``: both ways of each JUMPI, constant jumps and a helper's return
        (the stack goes along, as in :meth:`window_after`); at most ``limit`` visits."""
        seen: set[int] = set()
        # A block is entered again when the return addresses on the stack differ: a helper called from
        # two places returns to each of them.
        visits: set[tuple[int, tuple[int, ...]]] = set()
        todo: list[tuple[int, AbstractStack]] = [(entry, AbstractStack())]
        while todo and len(visits) < limit:
            start, stack = todo.pop()
            key = (start, tuple(v for v in stack.items if v is not None and v in self.jumpdests))
            if key in visits or start not in self.blocks:
                continue
            visits.add(key)
            seen.add(start)
            block = self.blocks[start]
            target: int | None = None
            for _ins, before in walk(block, stack):
                target = before.peek()
            last = block.instructions[-1]
            for following in self.successors(block, target, last):
                todo.append((following, stack.copy()))
        return seen


#: CALL, CALLCODE, DELEGATECALL, STATICCALL: where a window after a call stops.
_CALLS: Final = frozenset({0xF1, 0xF2, 0xF4, 0xFA})


def _selector_names(abi: Sequence[dict[str, Any]]) -> dict[int, str]:
    """selector -> ``name(types)`` for the ABI's functions."""
    from Crypto.Hash import keccak

    out: dict[int, str] = {}
    for entry in abi:
        if entry.get("type", "function") != "function" or "name" not in entry:
            continue
        signature = f"{entry['name']}({','.join(_abi_type(i) for i in entry.get('inputs', []))})"
        digest = keccak.new(digest_bits=256, data=signature.encode()).digest()
        out[int.from_bytes(digest[:4], "big")] = signature
    return out


def _abi_type(item: dict[str, Any]) -> str:
    kind = str(item.get("type", ""))
    if kind.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in item.get("components", [])) + ")" + kind[len("tuple"):]
    return kind


class _Functions:
    """Which external function (by selector, or by name from the ABI) each block belongs to, for code
    without a source map: a finding in bare bytecode then says where it is in the contract's terms."""

    def __init__(self, code: _Code, abi: Sequence[dict[str, Any]]) -> None:
        self.code = code
        self.names = _selector_names(abi)
        self.entries = code.entries()
        self._reach: dict[int, set[int]] | None = None

    def of(self, offset: int) -> str | None:
        if not self.entries:
            return None
        if self._reach is None:
            self._reach = {entry: self.code.reachable(entry) for entry in self.entries}
        block = max((start for start in self.code.starts if start <= offset), default=None)
        owners = [self.entries[entry] for entry, blocks in sorted(self._reach.items()) if block in blocks]
        labels = list(dict.fromkeys(self.names.get(sel, f"0x{sel:08x}") for sel in owners))
        if not labels:
            return None
        return " or ".join(labels[:3]) + (f" (and {len(labels) - 3} more)" if len(labels) > 3 else "")


def check_code(runtime: bytes, *, name: str = "contract", abi: Sequence[dict[str, Any]] = (),
               pc_lines: dict[int, int] | None = None, source_name: str | None = None,
               source_text: str | None = None, init: bytes = b"") -> Report:
    """The findings in ``runtime`` (deployed code) and, if given, ``init`` (its constructor: the init code up to
    where it embeds ``runtime``).  ``pc_lines`` maps runtime offsets to source lines."""
    code = _Code(runtime)
    on_reply = any(e.get("type") == "function" and e.get("name") == "onReply" for e in abi) or any(
        i.op == 0x63 and i.arg == ON_REPLY_SELECTOR for i in code.instructions)
    functions = _Functions(code, abi)
    findings = _scan(code, on_reply, pc_lines, source_name or name, source_text, in_constructor=False,
                     functions=functions)
    if init:
        embedded = init.find(runtime) if runtime else -1
        constructor = _Code(init[:embedded] if embedded > 0 else init, metadata=embedded <= 0)
        findings += _scan(constructor, on_reply, None, source_name or name, None, in_constructor=True)
    return Report(name, tuple(findings), on_reply)


def _scan(code: _Code, on_reply: bool, pc_lines: dict[int, int] | None, source_name: str,
          source_text: str | None, *, in_constructor: bool, functions: _Functions | None = None) -> list[Finding]:
    findings: list[Finding] = []

    def locate(offset: int) -> tuple[str | None, str | None]:
        source, function = _locate_in_source(offset)
        if function is None and functions is not None:
            function = functions.of(offset)
        return source, function

    def _locate_in_source(offset: int) -> tuple[str | None, str | None]:
        if not pc_lines:
            return None, None
        line = pc_lines.get(offset)
        if line is None:  # a mapped instruction close before it, else close after it, else further before it
            before = [pc for pc in pc_lines if offset - 16 <= pc <= offset]
            after = [pc for pc in pc_lines if offset <= pc <= offset + 16]
            further = [pc for pc in pc_lines if offset - 64 <= pc <= offset]
            if before or after or further:
                line = pc_lines[max(before) if before else min(after) if after else max(further)]
            else:
                return None, None
        function = _enclosing_function(source_text, line) if source_text else None
        return f"{source_name}:{line}", function

    def add(kind: str, offset: int, refused: bool) -> None:
        source, function = locate(offset)
        findings.append(Finding(kind, offset, refused, source, function, in_constructor))

    for start in code.starts:
        block = code.blocks[start]
        for index, (ins, stack) in enumerate(walk(block)):
            if ins.op == 0x31:  # BALANCE
                if stack.peek() != SELF:
                    add("balance-of-other", ins.pc, False)
                continue
            if ins.op not in (0xF1, 0xFA):  # CALL, STATICCALL (DELEGATECALL/CALLCODE stay synchronous)
                continue
            target = stack.peek(1)
            if target is not None and target != SELF and (target == SYSTEM_ADDRESS or 0 < target < PRECOMPILE_LIMIT):
                continue
            out_size = stack.peek(6 if ins.op == 0xF1 else 5)
            after = code.window_after(block, index)
            reads = "RETURNDATASIZE" in after or "RETURNDATACOPY" in after
            if reads and "EXTCODESIZE" in after:
                add("empty-return-as-success", ins.pc, True)
            elif reads:
                add("return-data-read", ins.pc, not on_reply)
            elif ins.op == 0xFA and not on_reply:
                add("query-read", ins.pc, True)
            elif out_size != 0 and not on_reply:
                add("reply-without-onreply", ins.pc, True)
    return findings


def check_contract(contract: CompiledContract) -> Report:
    source_text = None
    if contract.pc_lines and contract.source_path is not None:
        try:
            source_text = contract.source_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            source_text = None
    return check_code(contract.runtime_bytecode, name=contract.name, abi=contract.abi, pc_lines=contract.pc_lines,
                      source_name=contract.source_path.name if contract.source_path else None,
                      source_text=source_text, init=contract.bytecode)


_FUNCTION_LINE = re.compile(r"^\s*(?:function|def)\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(")


def _enclosing_function(source: str, line: int) -> str | None:
    """The name of the function (Solidity ``function f(``, Vyper ``def f(``) around ``line`` (1-based)."""
    lines = source.splitlines()
    for text in reversed(lines[: max(0, min(line, len(lines)))]):
        match = _FUNCTION_LINE.match(text)
        if match:
            return match.group(1)
    return None
