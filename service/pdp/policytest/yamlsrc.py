"""Read YAML (and JSON) documents keeping every node's line, so problems can name file:line."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pdp.policytest.model import Problem, SuiteInvalid, Where

try:
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: ScalarNode) -> None:
        super().__init__(f"duplicate key {key.value!r}")
        self.node = key


class _Loader(_SafeLoader):
    """Safe YAML, except that timestamps stay strings (as in JSON) and duplicate keys are errors."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[str] = set()
        for key, _ in node.value:
            if isinstance(key, ScalarNode):
                if key.value in seen:
                    raise _DuplicateKey(key)
                seen.add(key.value)
        return super().construct_mapping(node, deep)


def _timestamp_as_str(loader: _Loader, node: ScalarNode) -> str:
    return str(loader.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_str)


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
        data = loader.construct_document(root) if root is not None else None
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
