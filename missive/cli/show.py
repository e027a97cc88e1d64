"""How the node commands show messages, receipts and what a message caused: one line per message,
a receipt's outcome decoded with the registered ABIs (``missive send``, ``receipt``, ``inbox``...)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from missive.cli.common import EXIT_FAILED, CliError, make_console

if TYPE_CHECKING:  # the node (and with it the VM) is imported only by the commands that use it
    from missive.mailbox.envelope import Envelope
    from missive.mailbox.records import Receipt
    from missive.node import ContractFunction, NodeAPI, Trace
    from missive.node.api import Abis


def hx(data: bytes) -> str:
    return "0x" + data.hex()


def short(message_id: bytes) -> str:
    """A message id shortened for tables; ``missive receipt`` takes it back as a prefix."""
    return "0x" + message_id.hex()[:16]


def called_function(node: NodeAPI, envelope: Envelope, abis: Abis) -> ContractFunction | None:
    """The function of the recipient's registered ABI whose selector the payload starts with."""
    from missive.node import Contract

    registered = abis.get(envelope.recipient)
    if registered is None or len(envelope.payload) < 4:
        return None
    return Contract(node, envelope.recipient, registered[1], registered[0]).by_selector(envelope.payload[:4])


def describe_payload(node: NodeAPI, envelope: Envelope, abis: Abis) -> str:
    """``transfer(0x.., 10)`` when the recipient's ABI knows the selector, else the payload's size."""
    from missive.mailbox.envelope import Kind
    from missive.node.abi import decode_inputs, format_value

    payload = envelope.payload
    if envelope.kind in (Kind.REPLY, Kind.BOUNCE):
        ok = "" if envelope.kind is Kind.BOUNCE else ("success, " if envelope.success else "failed, ")
        return f"answers {short(envelope.request_id)} ({ok}{len(payload)} bytes)"
    if envelope.kind is Kind.DEPLOY:
        return f"init code {len(payload)} bytes"
    fn = called_function(node, envelope, abis)
    values = decode_inputs(fn.inputs, payload[4:]) if fn is not None else None
    if fn is not None and values is not None:
        return f"{fn.name}({', '.join(format_value(v) for v in values)})"
    if not payload:
        return "no payload"
    return f"selector {hx(payload[:4])}, {len(payload)} bytes" if len(payload) >= 4 else f"payload {hx(payload)}"


def envelope_line(node: NodeAPI, envelope: Envelope, abis: Abis) -> str:
    parts = [f"{envelope.kind.name.lower():<9}", f"from {hx(envelope.sender)}", f"to {hx(envelope.recipient)}"]
    if envelope.value:
        parts.append(f"value {envelope.value}")
    parts.append(describe_payload(node, envelope, abis))
    return "  ".join(parts)


def show_outcome(node: NodeAPI, receipt: Receipt, fn: ContractFunction | None) -> None:
    """Status, gas, decoded result or revert reason, events and sent messages of a receipt."""
    from missive.node.abi import decode_log, format_value

    console = make_console()
    status = receipt.status + (f" ({receipt.error})" if receipt.error and receipt.error != receipt.status else "")
    console.print(f"status:    {status}", markup=False)
    console.print(f"gas used:  {receipt.gas_used}", markup=False)
    if receipt.fee or receipt.refund:
        console.print(f"fee:       {receipt.fee} to {hx(receipt.coinbase) if receipt.fee else '-'}, refund "
                      f"{receipt.refund}", markup=False)
    if receipt.success:
        if receipt.output:
            if fn is not None and fn.outputs:
                try:
                    shown = format_value(fn.decode_output(receipt.output))
                except Exception:
                    shown = hx(receipt.output)
            else:
                shown = hx(receipt.output)
            console.print(f"result:    {shown}", markup=False)
    else:
        reason = node.explain(receipt.output, receipt.recipient)
        if reason is not None:
            console.print(f"reason:    {reason}", markup=False)
        elif receipt.output:
            console.print(f"revert data: {hx(receipt.output)}", markup=False)
    abis = node.abis()
    for address, topics, data in receipt.logs:
        decoded = decode_log(abis[address][1], topics, data) if address in abis else None
        if decoded is not None:
            args = ", ".join(f"{k}={format_value(v)}" for k, v in decoded[1].items())
            console.print(f"event:     {decoded[0]}({args})", markup=False)
        else:
            console.print(f"log:       {hx(address)} topics {[hex(t) for t in topics]} data {hx(data)}", markup=False)
    for message_id in receipt.outgoing:
        message = node.message(message_id)
        if message is not None:
            console.print(f"sent:      {message.kind.name.lower()} to {hx(message.recipient)} "
                          f"{describe_payload(node, message, abis)}  id {hx(message_id)}", markup=False)


def outcome_words(receipt: Receipt, node: NodeAPI | None = None) -> str:
    from missive.node.abi import revert_reason

    reason = node.explain(receipt.output, receipt.recipient) if node is not None else revert_reason(receipt.output)
    return receipt.status + (f" ({receipt.error})" if receipt.error and receipt.error != receipt.status else "") + (
        f": {reason}" if reason is not None else "")


def pending_words(node: NodeAPI, message_id: bytes) -> str:
    """``scheduled to 0x.. at t=5 (0x1234..)``: a waiting message in a few words."""
    envelope = node.message(message_id)
    if envelope is None:
        return short(message_id)
    due = f" at t={envelope.not_before}" if envelope.not_before else ""
    return f"{envelope.kind.name.lower()} to {hx(envelope.recipient)}{due} ({short(message_id)})"


def failed_error(fn_label: str, receipt: Receipt, node: NodeAPI | None = None) -> CliError:
    from missive.node.abi import revert_reason
    from missive.node.errors import Reverted

    reason = node.explain(receipt.output, receipt.recipient) if node is not None else revert_reason(receipt.output)
    err = Reverted(fn_label, reason=reason, data=receipt.output, status=receipt.status,
                   error=receipt.error, receipt=receipt)
    return CliError(str(err), EXIT_FAILED)


# -- missive trace: one message of the tree ----------------------------------------------------------------


def trace_outcome(node: NodeAPI, item: Trace) -> str:
    """``success, gas 21000 of 1000000``; ``revert ..., gas ..: reason``; ``pending (not handled yet)``."""
    receipt = item.receipt
    if receipt is None:
        due = f", due at t={item.envelope.not_before}" if item.envelope.not_before else ""
        return f"pending (not handled yet{due})"
    words = f"{receipt.status}" + (f" ({receipt.error})" if receipt.error and receipt.error != receipt.status
                                    else "")
    words += f", gas {receipt.gas_used} of {item.envelope.gas}"
    if not receipt.success:
        reason = node.explain(receipt.output, receipt.recipient)
        if reason is not None:
            words += f": {reason}"
        elif receipt.output:
            words += f": revert data {hx(receipt.output)}"
    return words


def trace_line(node: NodeAPI, item: Trace, abis: Abis) -> str:
    """One message of a tree on one line: kind, id, from -> to, value, payload, and its outcome."""
    from missive.mailbox.envelope import Kind

    envelope = item.envelope
    head = f"{envelope.kind.name.lower()} {short(item.id)}  {hx(envelope.sender)} -> {hx(envelope.recipient)}"
    if envelope.value:
        head += f"  value {envelope.value}"
    payload = describe_payload(node, envelope, abis)
    if envelope.kind is Kind.REPLY and not envelope.success and envelope.payload:
        reason = node.explain(envelope.payload, envelope.sender)
        if reason is not None:
            payload += f": {reason}"
    return f"{head}  {payload}  =>  {trace_outcome(node, item)}"


def trace_json(node: NodeAPI, item: Trace, abis: Abis) -> dict[str, Any]:
    """A message of a tree and its children, for ``missive trace --json``."""
    receipt = item.receipt
    return {
        "id": hx(item.id), "kind": item.envelope.kind.name.lower(), "from": hx(item.envelope.sender),
        "to": hx(item.envelope.recipient), "value": item.envelope.value, "gas_limit": item.envelope.gas,
        "payload": describe_payload(node, item.envelope, abis),
        "status": receipt.status if receipt is not None else "pending",
        "gas_used": receipt.gas_used if receipt is not None else None,
        "error": receipt.error if receipt is not None else None,
        "reason": node.explain(receipt.output, receipt.recipient) if receipt is not None
        and not receipt.success else None,
        "children": [trace_json(node, c, abis) for c in item.children],
    }
