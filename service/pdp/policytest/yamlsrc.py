"""Read YAML (and JSON) documents keeping every node's line, so problems can name file:line."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pdp.policytest.model import Problem, SuiteInvalid, Where

try:
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]


_STR = "tag:yaml.org,2002:str"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"  # kept as text: JSON (and the schema) has no dates
_MERGE = "tag:yaml.org,2002:merge"


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Node) -> None:
        super().__init__(f"duplicate key {key.value!r}")
        self.node = key


class _Loader(_SafeLoader):
    """Safe YAML; timestamps stay text (for the rare `<<:` merge PyYAML builds itself)."""


def _timestamp_as_str(loader: _Loader, node: ScalarNode) -> str:
    return str(loader.construct_scalar(node))


_Loader.add_constructor(_TIMESTAMP, _timestamp_as_str)


def _python(root: Node, loader: _Loader) -> Any:
    """Plain data from a node tree: strings directly, other scalars by PyYAML's safe rules.

    Several times faster than PyYAML's own construction, which matters for suites of
    thousands of tests; duplicate keys are refused on the way.
    """
    seen: dict[int, Any] = {}  # anchors: a node reached twice gives the same object

    def data(node: Node) -> Any:
        if isinstance(node, ScalarNode):
            if node.tag in (_STR, _TIMESTAMP):
                return node.value
            return loader.construct_object(node)
        if id(node) in seen:
            return seen[id(node)]
        if isinstance(node, SequenceNode):
            items: list[Any] = []
            seen[id(node)] = items
            items.extend(data(child) for child in node.value)
            return items
        if any(key.tag == _MERGE for key, _ in node.value):
            return loader.construct_object(node, deep=True)  # `<<:` merges: rare, let PyYAML do it
        mapping: dict[Any, Any] = {}
        seen[id(node)] = mapping
        for key, value in node.value:
            k = data(key)
            if not isinstance(k, Hashable):
                raise ConstructorError(None, None, "found an unhashable key", key.start_mark)
            if k in mapping:
                raise _DuplicateKey(key)
            mapping[k] = data(value)
        return mapping

    return data(root)


@dataclass(frozen=True)
class Document:
    file: str  # as shown in messages
    data: Any
    root: Node | None

    def node(self, path: Sequence[str | int]) -> Node | None:
        """The node at `path`, or the deepest existing node along it."""
        node = self.root
        for step in path:
            child = child_node(node, step)
            if child is None:
                break
            node = child
        return node

    def line(self, path: Sequence[str | int]) -> int:
        node = self.node(path)
        return 1 if node is None else node.start_mark.line + 1

    def where(self, path: Sequence[str | int]) -> Where:
        return Where(self.file, self.line(path))


def child_node(node: Node | None, step: str | int) -> Node | None:
    if isinstance(node, MappingNode):
        for key, value in node.value:
            if isinstance(key, ScalarNode) and key.value == str(step):
                found: Node = value
                return found
    elif isinstance(node, SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
        child: Node = node.value[step]
        return child
    return None


def key_line(node: Node | None, key: str) -> int | None:
    """The line of `key` itself within a mapping node."""
    if isinstance(node, MappingNode):
        for k, _ in node.value:
            if isinstance(k, ScalarNode) and k.value == key:
                return int(k.start_mark.line) + 1
    return None


def load_yaml(path: Path, shown: str) -> Document:
    """Parse one YAML document; raises SuiteInvalid naming file:line on any problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteInvalid([Problem(Where(shown), f"cannot read: {exc}")]) from exc
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        data = _python(root, loader) if root is not None else None
    except _DuplicateKey as exc:
        where = Where(shown, exc.node.start_mark.line + 1)
        raise SuiteInvalid([Problem(where, str(exc))]) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Where(shown, None if mark is None else mark.line + 1)
        what = " ".join(x for x in (exc.context, exc.problem) if x)
        raise SuiteInvalid([Problem(where, f"invalid YAML: {what}")]) from exc
    except yaml.YAMLError as exc:
        raise SuiteInvalid([Problem(Where(shown), f"invalid YAML: {exc}")]) from exc
    finally:
        loader.dispose()
    return Document(shown, data, root)


def shown_path(path: Path) -> str:
    """A path as messages show it: relative to the working directory where possible."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
