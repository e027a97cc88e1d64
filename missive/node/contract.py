"""A deployed contract and its ABI functions: :class:`Contract`, :class:`ContractFunction`.

Calling a ``view``/``pure`` function sends a ``query`` and returns the decoded answer; any
other sends a ``call`` and returns its :class:`~missive.node.sent.Sent`.  Works against
:class:`~missive.node.api.NodeAPI`: the same on one node and on a cluster.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from missive.mailbox.envelope import Kind
from missive.mailbox.records import Receipt
from missive.node.abi import abi_type, decode_log, decode_values, encode_args, function_entry, parse_signature
from missive.node.errors import ArgumentError, NodeError, UnknownFunction
from missive.node.sent import Sent
from missive.node.twins import in_trio
from missive.node.values import hexstr
from missive.vm.keccak import keccak256

if TYPE_CHECKING:
    from missive.node.api import NodeAPI


class ContractFunction:
    """One ABI function of a deployed contract; call it to send a call (or a query, for view/pure)."""

    def __init__(self, contract: Contract, entry: dict[str, Any]) -> None:
        self.contract = contract
        self.entry = entry
        self.name = str(entry.get("name", ""))
        self.inputs = [abi_type(i) for i in entry.get("inputs", [])]
        self.input_names = [str(i.get("name", "")) for i in entry.get("inputs", [])]
        self.outputs = [abi_type(o) for o in entry.get("outputs", [])]
        self.mutability = str(entry.get("stateMutability") or ("view" if entry.get("constant") else
                                                             "payable" if entry.get("payable") else "nonpayable"))
        self.signature = f"{self.name}({','.join(self.inputs)})"
        self.selector = keccak256(self.signature.encode())[:4]

    @property
    def is_view(self) -> bool:
        return self.mutability in ("view", "pure")

    @property
    def is_payable(self) -> bool:
        return self.mutability == "payable"

    def __repr__(self) -> str:
        outs = f" -> ({','.join(self.outputs)})" if self.outputs else ""
        return f"<function {self.signature}{outs} [{self.mutability}] of {self.contract!r}>"

    def encode(self, *args: Any) -> bytes:
        """Calldata for ``args``; ArgumentError when they do not fit the ABI."""
        return self.selector + encode_args(self.inputs, args, self.signature, self.input_names)

    def decode_output(self, data: bytes) -> Any:
        return decode_values(self.outputs, data, self.signature)

    def _check_value(self, value: int) -> None:
        if value and not self.is_payable:
            raise ArgumentError(f"{self.signature} is {self.mutability}: it cannot receive value")

    # -- sending -------------------------------------------------------------------------------

    def send(self, *args: Any, sender: object = None, value: int = 0, gas: int | None = None,
             wants_reply: bool = False, bid: int | None = None) -> Sent:
        """Send a ``call`` message (even for a view function); return once it is durable.
        ``bid``: fee per gas (None: the node's ``default_bid``)."""
        self._check_value(value)
        data = self.encode(*args)
        return self.contract._node.submit(Kind.CALL, self.contract._address, data, sender=sender, value=value,
                                          gas=gas, wants_reply=wants_reply, function=self, bid=bid)

    async def asend(self, *args: Any, sender: object = None, value: int = 0, gas: int | None = None,
                    wants_reply: bool = False, bid: int | None = None) -> Sent:
        self._check_value(value)
        self.encode(*args)  # bad arguments fail here, not in the worker thread
        return await trio.to_thread.run_sync(
            functools.partial(self.send, *args, sender=sender, value=value, gas=gas, wants_reply=wants_reply, bid=bid)
        )

    def query(self, *args: Any, sender: object = None, gas: int | None = None, bid: int | None = None) -> Sent:
        """Send a ``query`` message (read-only run, reply wanted); return once it is durable."""
        data = self.encode(*args)
        return self.contract._node.submit(Kind.QUERY, self.contract._address, data, sender=sender, value=0, gas=gas,
                                          wants_reply=True, function=self, bid=bid)

    async def aquery(self, *args: Any, sender: object = None, gas: int | None = None, bid: int | None = None) -> Sent:
        self.encode(*args)
        return await trio.to_thread.run_sync(functools.partial(self.query, *args, sender=sender, gas=gas, bid=bid))

    def __call__(self, *args: Any, sender: object = None, value: int = 0, gas: int | None = None,
                 timeout: float | None = None, bid: int | None = None) -> Any:
        """view/pure: query and return the decoded answer.  Otherwise: send a call and return its Sent."""
        if self.is_view:
            if value:
                raise ArgumentError(f"{self.signature} is {self.mutability}: a query cannot carry value")
            if in_trio():  # say so before anything is sent
                raise NodeError(f"calling {self.signature} waits for its reply; inside trio code use `await ....acall()`")
            sent = self.query(*args, sender=sender, gas=gas, bid=bid)
            return sent.reply(timeout)
        return self.send(*args, sender=sender, value=value, gas=gas, bid=bid)

    async def acall(self, *args: Any, sender: object = None, value: int = 0, gas: int | None = None,
                    timeout: float | None = None, bid: int | None = None) -> Any:
        """The coroutine twin of calling the function."""
        if self.is_view:
            if value:
                raise ArgumentError(f"{self.signature} is {self.mutability}: a query cannot carry value")
            sent = await self.aquery(*args, sender=sender, gas=gas, bid=bid)
            return await sent.areply(timeout)
        return await self.asend(*args, sender=sender, value=value, gas=gas, bid=bid)


class OverloadedFunction:
    """Several ABI functions with one name and different parameter counts: chosen by argument count."""

    def __init__(self, functions: list[ContractFunction]) -> None:
        self.functions = {len(f.inputs): f for f in functions}
        self.name = functions[0].name

    def pick(self, args: Sequence[Any]) -> ContractFunction:
        found = self.functions.get(len(args))
        if found is None:
            options = ", ".join(f.signature for f in self.functions.values())
            raise ArgumentError(f"{self.name}: no overload takes {len(args)} argument(s); there are {options}")
        return found

    def __repr__(self) -> str:
        return f"<overloaded function {' | '.join(f.signature for f in self.functions.values())}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.pick(args)(*args, **kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        return await self.pick(args).acall(*args, **kwargs)

    def send(self, *args: Any, **kwargs: Any) -> Sent:
        return self.pick(args).send(*args, **kwargs)

    async def asend(self, *args: Any, **kwargs: Any) -> Sent:
        return await self.pick(args).asend(*args, **kwargs)

    def query(self, *args: Any, **kwargs: Any) -> Sent:
        return self.pick(args).query(*args, **kwargs)

    async def aquery(self, *args: Any, **kwargs: Any) -> Sent:
        return await self.pick(args).aquery(*args, **kwargs)


class Contract:
    """A deployed contract and its ABI.  ABI functions are attributes (they win over ``address``/``abi``).

    Metadata: ``address`` (bytes), ``abi``, ``deployment`` (the deploy's :class:`Sent`, if this
    process deployed it).  ``contract.function("transfer(address,uint256)")`` picks a function by
    signature (for overloads that share a parameter count).
    """

    def __init__(self, node: NodeAPI, address: bytes, abi: list[dict[str, Any]], name: str = "contract",
                 deployment: Sent | None = None) -> None:
        self._node = node
        self._address = address
        self._label = name
        self._abi = abi
        self.address = address
        self.abi = abi
        self.deployment = deployment
        self._by_signature: dict[str, ContractFunction] = {}
        by_name: dict[str, list[ContractFunction]] = {}
        for entry in abi:
            if entry.get("type", "function") == "function" and entry.get("name"):
                function = ContractFunction(self, entry)
                self._by_signature[function.signature] = function
                by_name.setdefault(function.name, []).append(function)
        self._ambiguous: dict[str, list[str]] = {}
        for fname, functions in by_name.items():
            if len(functions) == 1:
                setattr(self, fname, functions[0])
            elif len({len(f.inputs) for f in functions}) == len(functions):
                setattr(self, fname, OverloadedFunction(functions))
            else:
                self._ambiguous[fname] = [f.signature for f in functions]

    @property
    def hex(self) -> str:
        return hexstr(self._address)

    def __repr__(self) -> str:
        return f"<{self._label} at {hexstr(self._address)}>"

    def function_names(self) -> list[str]:
        return sorted({f.name for f in self._by_signature.values()})

    def functions(self) -> list[ContractFunction]:
        """Every ABI function, overloads included."""
        return list(self._by_signature.values())

    def function(self, signature: str) -> ContractFunction:
        """The function with this exact signature, e.g. ``"transfer(address,uint256)"``."""
        found = self.find(signature)
        if found is None:
            raise AttributeError(f"{self._label} has no function {signature!r}; it has {', '.join(sorted(self._by_signature)) or 'none'}")
        return found

    def find(self, signature: str) -> ContractFunction | None:
        """The function with this signature (types canonicalised: ``uint`` is ``uint256``), or None."""
        name, inputs, _ = parse_signature(signature)
        return self._by_signature.get(f"{name}({','.join(inputs)})")

    def named(self, name: str) -> list[ContractFunction]:
        """The functions called ``name`` (several when overloaded), in ABI order."""
        return [f for f in self._by_signature.values() if f.name == name]

    def by_selector(self, selector: bytes) -> ContractFunction | None:
        """The function whose calldata starts with this 4-byte selector, if the ABI has it."""
        return next((f for f in self._by_signature.values() if f.selector == selector[:4]), None)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        ambiguous = self.__dict__.get("_ambiguous", {}).get(name)
        if ambiguous:
            raise AttributeError(
                f"{name} is overloaded in {self.__dict__.get('_label')} ({', '.join(ambiguous)}); "
                f"pick one with .function('{ambiguous[0]}')"
            )
        names = sorted({f.name for f in self.__dict__.get("_by_signature", {}).values()})
        raise AttributeError(
            f"{self.__dict__.get('_label', 'contract')} has no function {name!r}; functions: {', '.join(names) or '(none: no ABI)'}"
        )

    @property
    def balance(self) -> int:
        return self._node.balance(self._address)

    def storage(self) -> dict[int, int]:
        return self._node.storage(self._address)

    def events(self, receipt: Receipt) -> list[tuple[str, dict[str, Any]]]:
        """The receipt's logs this contract emitted that its ABI names, decoded."""
        out = []
        for address, topics, data in receipt.logs:
            if address == self._address:
                decoded = decode_log(self._abi, topics, data)
                if decoded is not None:
                    out.append(decoded)
        return out


def resolve_function(node: NodeAPI, address: bytes, text: str, nargs: int, *, view: bool,
                     returns: list[str] | None = None) -> tuple[ContractFunction, bool]:
    """The function ``text`` names at ``address`` (``missive send``/``query``): an explicit signature
    (``transfer(address,uint256)``, optionally with ``returns``), or a bare name looked up in the
    registered ABI (by argument count among overloads); and whether its return types are known."""
    name, inputs, sig_returns = parse_signature(text)
    registered = node.abis().get(address)
    label = registered[0] if registered is not None else "contract"
    contract = Contract(node, address, registered[1], label) if registered is not None else None
    if "(" in text:
        signature = f"{name}({','.join(inputs)})"
        known = contract.find(signature) if contract is not None else None
        if known is not None and returns is None and sig_returns is None:
            return known, True
        outputs = returns if returns is not None else sig_returns
        if outputs is None and known is not None:
            outputs = known.outputs
        mutability = known.mutability if known is not None else ("view" if view else "payable")
        entry = function_entry(name, inputs, outputs or [], mutability)
        return Contract(node, address, [entry], label).function(signature), outputs is not None
    if contract is None:
        raise UnknownFunction(f"no ABI known for {hexstr(address)}: give the signature with types, e.g. "
                              f"'{name}(address,uint256)'")
    candidates = contract.named(name)
    if not candidates:
        raise UnknownFunction(f"{label} at {hexstr(address)} has no function {name!r}; functions: "
                              f"{', '.join(contract.function_names())}")
    fitting = [f for f in candidates if len(f.inputs) == nargs] or candidates
    if len(fitting) > 1:
        raise ArgumentError(f"{name} is overloaded ({', '.join(f.signature for f in fitting)}); give the full signature")
    fn = fitting[0]
    if returns is not None:
        fn.outputs = returns
    return fn, True
