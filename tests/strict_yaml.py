"""YAML parsed the way the API server reads it, not the way PyYAML forgives it.

PyYAML keeps the last of two equal keys in a mapping; a manifest with a label written twice then
looks fine to a test while what the cluster stores depends on the parser. ``load_all`` refuses a
duplicate key, naming it and where it is.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping has the same key twice."""


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: dict[Hashable, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            if key in seen:
                raise DuplicateKeyError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found the key {key!r} twice (first at line {seen[key].start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def load_all(text: str) -> list[Any]:
    """The non-empty documents of ``text``; a duplicate key anywhere raises
    :class:`DuplicateKeyError`."""
    return [doc for doc in yaml.load_all(text, Loader=_StrictLoader) if doc]
