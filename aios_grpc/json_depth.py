"""How deep JSON may nest: ``AIOS_MAX_JSON_DEPTH`` for packet data and control-plane Structs.

Python's JSON decoder recurses once per level and stops at the interpreter's recursion
limit with a ``RecursionError``; a document a little shallower parses, and then every
consumer that walks it recursively (``json.dumps``, protobuf's ``Struct``, the block's
own code) may fail the same way. A limit well under the recursion limit keeps that
away from the block and answers the caller with INVALID_ARGUMENT instead.

The check is cheap for the usual packet: a document of depth ``d`` has at least ``2*d``
characters and ``d`` opening brackets, so text shorter than twice the limit, or with
fewer brackets than the limit (counted in C by ``str.count``), is not walked at all.
"""

from __future__ import annotations

from typing import Any


def depth_of(value: Any, stop: int) -> int:
    """The nesting depth of ``value`` (dicts and lists; a scalar is 0), counted up to ``stop`` + 1.

    Iterative, so that a deep value cannot exhaust the stack while it is measured.
    """
    deepest = 0
    todo: list[tuple[Any, int]] = [(value, 0)]
    pop = todo.pop
    push = todo.append
    while todo:
        item, depth = pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > stop:
                return deepest
        for child in children:
            if isinstance(child, dict | list | tuple):
                push((child, depth))
    return deepest


def text_too_deep(text: str | bytes, value: Any, limit: int) -> bool:
    """Whether JSON ``text`` (parsed as ``value``) nests deeper than ``limit``."""
    if len(text) <= 2 * limit:
        return False
    if isinstance(text, bytes):
        opening = text.count(b"[") + text.count(b"{")
    else:
        opening = text.count("[") + text.count("{")
    if opening <= limit:
        return False
    return depth_of(value, limit) > limit


def too_deep_message(what: str, limit: int) -> str:
    """The error text for ``what`` nesting deeper than ``limit``."""
    return f"{what} nests deeper than {limit} levels of objects and arrays (AIOS_MAX_JSON_DEPTH)"


__all__ = ["depth_of", "text_too_deep", "too_deep_message"]
