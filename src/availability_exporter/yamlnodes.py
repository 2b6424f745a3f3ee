"""Checking composed YAML nodes: lines, kinds, typed scalars and mapping keys, for every loader.

Both files this program reads (the endpoints file in ``config`` and the web config in
``webconfig.loading``) are *composed* into nodes rather than loaded into Python objects, so
that each problem can name its line and nothing is built from a node before it has been
checked. The helpers here know nothing of either format: they answer "what is this node",
"is it a usable number/boolean/string" and "which keys does this mapping have, and which of
them are bad"; each loader words its own messages.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

import yaml

__all__ = [
    "BOOL_TAG",
    "NULL_TAG",
    "NUMBER_TAGS",
    "STR_TAG",
    "KeyProblem",
    "KeyScan",
    "Why",
    "boolean",
    "construct",
    "is_null",
    "kind",
    "line",
    "nested_fields",
    "number",
    "scan_keys",
    "short",
    "string_key",
    "typed_scalar",
]

NULL_TAG: Final = "tag:yaml.org,2002:null"
STR_TAG: Final = "tag:yaml.org,2002:str"
BOOL_TAG: Final = "tag:yaml.org,2002:bool"
NUMBER_TAGS: Final = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")

# What constructing a node can raise besides YAMLError: "!!int abc", "!!bool maybe",
# a 10,000-digit number, "!!timestamp 2001-13-45", an unhashable key.
_BUILD_ERRORS: Final = (
    ValueError,
    KeyError,
    IndexError,
    OverflowError,
    TypeError,
    RecursionError,
    yaml.YAMLError,
)


def line(node: yaml.Node) -> int:
    """The node's 1-based line in the file."""
    return int(node.start_mark.line) + 1


def short(text: str, limit: int = 40) -> str:
    """``text`` cut to ``limit`` characters with "...", so a message stays one readable line."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def kind(node: yaml.Node) -> str:
    """What the node is, in words for a message: "a list", "null", "the scalar 'x'"."""
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if node.tag == NULL_TAG:
        return "null"
    return f"the scalar {short(str(node.value))!r}"


def is_null(node: yaml.Node) -> bool:
    """True for ``~``, ``null`` or nothing at all after the colon."""
    return isinstance(node, yaml.ScalarNode) and node.tag == NULL_TAG


def typed_scalar(node: yaml.Node, tags: tuple[str, ...]) -> Any:
    """The scalar's Python value when its tag is one of ``tags`` and it builds; else None."""
    if not isinstance(node, yaml.ScalarNode) or node.tag not in tags:
        return None
    try:
        return yaml.constructor.SafeConstructor().construct_object(node)
    except _BUILD_ERRORS:
        return None


def boolean(node: yaml.Node) -> bool | None:
    """The node's value if it is a YAML boolean (``true``, ``no``...); else None."""
    value = typed_scalar(node, (BOOL_TAG,))
    return value if isinstance(value, bool) else None


def number(node: yaml.Node) -> int | float | None:
    """The node's value if it is a YAML int or float (never a boolean); else None."""
    value = typed_scalar(node, NUMBER_TAGS)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def string_key(node: yaml.Node) -> str | None:
    """The node's text if it is a plain string scalar (what a mapping key must be); else None."""
    if isinstance(node, yaml.ScalarNode) and node.tag == STR_TAG and isinstance(node.value, str):
        return node.value
    return None


def construct(node: yaml.Node) -> object:
    """The node as plain Python data, to show in a message or to type-check.

    A node the safe constructor cannot build (``!!int abc``, an unhashable key) comes back
    as its text when it is a scalar and as an empty list or mapping otherwise, so a checker
    reports it like any other wrong value instead of failing with the constructor's error.
    """
    try:
        return yaml.constructor.SafeConstructor().construct_document(node)
    except _BUILD_ERRORS:
        if isinstance(node, yaml.SequenceNode):
            return []
        if isinstance(node, yaml.MappingNode):
            return {}
        return str(node.value)


class Why(Enum):
    """Why a mapping key was not taken."""

    NOT_A_STRING = "not a string"
    UNKNOWN = "unknown"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class KeyProblem:
    """One bad key: its node, its text when it is a string, and why it was not taken."""

    node: yaml.Node
    key: str | None
    why: Why


@dataclass(slots=True)
class KeyScan:
    """A mapping's usable entries (key -> (key node, value node)) and its bad keys, in order."""

    entries: dict[str, tuple[yaml.Node, yaml.Node]] = field(default_factory=dict)
    problems: list[KeyProblem] = field(default_factory=list)


def scan_keys(node: yaml.MappingNode, allowed: Collection[str] | None = None) -> KeyScan:
    """Sort a mapping's keys into entries and problems; the first of duplicate keys wins.

    With ``allowed``, a key outside it is UNKNOWN each time it appears (not a duplicate:
    its message says what is allowed). Without it every string key is an entry, for a
    caller that reports unknown keys its own way.
    """
    scan = KeyScan()
    for key_node, value_node in node.value:
        key = string_key(key_node)
        if key is None:
            scan.problems.append(KeyProblem(key_node, None, Why.NOT_A_STRING))
        elif allowed is not None and key not in allowed:
            scan.problems.append(KeyProblem(key_node, key, Why.UNKNOWN))
        elif key in scan.entries:
            scan.problems.append(KeyProblem(key_node, key, Why.DUPLICATE))
        else:
            scan.entries[key] = (key_node, value_node)
    return scan


def nested_fields(
    node: yaml.MappingNode, allowed: Sequence[str], what: str,
    problem: Callable[[yaml.Node, str], None],
) -> tuple[dict[str, yaml.Node], bool]:
    """The value node of each allowed key of a nested mapping, and whether every key was fine.

    Each bad key goes to ``problem`` as ``<what>: unknown key 'k'; allowed keys: ...``,
    ``<what>: duplicate key 'k'`` or ``<what>: keys must be strings, not ...``.
    """
    scan = scan_keys(node, allowed)
    for bad in scan.problems:
        if bad.why is Why.UNKNOWN:
            problem(bad.node, f"{what}: unknown key {short(bad.key or '')!r}; allowed keys: "
                              f"{', '.join(allowed)}")
        elif bad.why is Why.DUPLICATE:
            problem(bad.node, f"{what}: duplicate key {bad.key!r}")
        else:
            problem(bad.node, f"{what}: keys must be strings, not {kind(bad.node)}")
    return {key: value for key, (_, value) in scan.entries.items()}, not scan.problems
