"""The one YAML reader for the project's files (alerting configuration, pricing).

A key written twice in one mapping is an error (PyYAML would keep the last one
silently: which value was meant is unknown), and every error names its line and
column, so a mistake in any file reads the same.
"""

from __future__ import annotations

from typing import Any

import yaml


class _UniqueKeyLoader(yaml.SafeLoader):
    pass


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def load_yaml(text: str, source: str) -> Any:
    """The document in `text`; a ValueError `"<source>: line L column C: problem"` if
    it is not valid YAML or repeats a key.

    >>> load_yaml("a: 1\\nb: [x, y]\\n", "f.yaml")
    {'a': 1, 'b': ['x', 'y']}
    >>> load_yaml("a: 1\\na: 2\\n", "f.yaml")
    Traceback (most recent call last):
    ...
    ValueError: f.yaml: line 2 column 1: duplicate key 'a'
    """
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        raise ValueError(f"{source}: {where}{exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: {exc}") from None
