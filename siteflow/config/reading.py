"""Reading a config file: UTF-8 text holding one YAML document, safely.

The loader is PyYAML's safe one with two limits: nesting deeper than
:data:`~siteflow.config.structure.MAX_DEPTH` is refused while the document is composed (before
Python's recursion limit is reached), and a mapping that names a key twice is refused (YAML
keeps the last silently). Aliases are kept as shared references, so an alias bomb is built
in linear time; :func:`~siteflow.config.structure.check_structure` then measures it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node

from siteflow.config.structure import MAX_DEPTH
from siteflow.config.validation import ConfigError

FILE = "<file>"
"""The key path of a problem with the file as a whole."""

MERGE_TAG = "tag:yaml.org,2002:merge"


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing deep nesting and duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        """PyYAML's, after checking the depth of the node."""
        if self.depth >= MAX_DEPTH:
            raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:
        """PyYAML's, after checking that no scalar key comes twice (merge keys aside)."""
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            key = self.construct_object(key_node)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise ConstructorError(
                        "while constructing a mapping", node.start_mark, f"found the key {key!r} twice", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


def read_config_file(path: Path) -> Any:
    """The YAML document in the file ``path``.

    Raises:
        ConfigError: at the key path ``<file>``, naming ``path``, when the file cannot be
            read, is not UTF-8 text or is not valid YAML (or nests too deeply, or repeats a key).
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(FILE, f"cannot be read: {error.strerror or error}", str(path)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        bad = data[error.start : error.start + 1].hex()
        raise ConfigError(FILE, f"is not UTF-8 text: byte 0x{bad} at offset {error.start}", str(path)) from None
    try:
        return yaml.load(text, Loader=_ConfigLoader)
    except yaml.YAMLError as error:
        raise ConfigError(FILE, f"not valid YAML: {error}", str(path)) from None
