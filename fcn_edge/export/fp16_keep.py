"""``export --fp16 --keep-fp32 ITEMS``: which op types and which nodes of an fp32 ONNX the user
asks to keep in fp32 (:func:`fcn_edge.export.fp16.convert_with_report`'s ``keep_fp32_ops`` and
``keep_fp32_nodes``).

An item is read against the graph it applies to: a node name of that graph is a node, else an
ONNX op type present in the graph is an op type. Anything else is refused, because an item
that matches nothing would keep nothing and the fp16 artifact would overflow again with no word
said: a misspelt op type (``ConvTransposed``), an op type this model does not have, a node name
from another export.
"""
from __future__ import annotations

from typing import Iterable

import onnx

from ..errors import InputError

__all__ = ["LIST_NODES", "keep_fp32_option", "parse_keep_fp32", "split_items"]

#: How a user lists an exported ONNX's node names and op types (printed with the refusals).
LIST_NODES = ("python -c \"import onnx, sys; [print(n.name, n.op_type) for n in "
              "onnx.load(sys.argv[1]).graph.node]\" MODEL.onnx")


def split_items(text_or_items: str | Iterable[str], flag: str = "--keep-fp32"
                ) -> tuple[str, ...]:
    """``"A, B"`` or ``["A", "B,C"]`` → ``("A", "B", "C")``; an empty item is refused."""
    given = [text_or_items] if isinstance(text_or_items, str) else list(text_or_items)
    items = tuple(item.strip() for text in given for item in text.split(","))
    if not items or "" in items:
        raise InputError(f"{flag} {','.join(given)!r}: an empty item; give op types or node "
                         f"names separated by commas, e.g. {flag} ConvTranspose,Add")
    return items


def parse_keep_fp32(text_or_items: str | Iterable[str], model: onnx.ModelProto,
                    flag: str = "--keep-fp32") -> tuple[frozenset[str], frozenset[str]]:
    """The op types and the node names of ``model`` that ``text_or_items`` asks to keep fp32.

    A node name wins over an op type of the same spelling (a node named ``Add`` is that node).
    """
    nodes = {node.name for node in model.graph.node if node.name}
    op_types = sorted({node.op_type for node in model.graph.node})
    ops, named = set(), set()
    for item in split_items(text_or_items, flag):
        if item in nodes:
            named.add(item)
        elif item in op_types:
            ops.add(item)
        else:
            what = ("this model has no node of that op type" if onnx.defs.has(item) else
                    "neither a node nor an op type of this model")
            raise InputError(f"{flag} {item}: {what}; its op types: {', '.join(op_types)}; "
                             f"its node names are the fp32 ONNX's: {LIST_NODES}")
    return frozenset(ops), frozenset(named)


def keep_fp32_option(value: str | Iterable[str], fp16: bool) -> tuple[str, ...]:
    """``ExportConfig.keep_fp32`` normalised to a tuple of items (``"A,B"`` is two); refused
    without ``fp16``, the only artifact it changes. The items are read against the graph only
    once the fp32 ONNX exists (node names are its, after onnxslim): :func:`parse_keep_fp32`."""
    if not isinstance(value, str) and not value:
        return ()
    if not fp16:
        raise InputError("--keep-fp32 applies to the fp16 artifact: add --fp16")
    return split_items(value)
