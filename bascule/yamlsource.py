"""YAML loading that remembers where every value came from.

Configuration errors must name the file, line and column of the offending value. PyYAML's
plain loaders throw positions away, so we compose the node tree, build plain Python data from it
ourselves and keep the start mark of every key and value, indexed by its path (the same tuple
shape pydantic uses for an error's ``loc``).

Scalars follow the YAML 1.2 core schema rather than PyYAML's YAML 1.1 defaults: ``on``/``yes``
stay strings, dates stay strings, and ``010`` is ten. Those YAML 1.1 readings surprise people
writing configuration and would be silently wrong here. Duplicate keys are an error.

Pure: it parses text; reading the files is ``bascule.config_files``'s.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from bascule.errors import UsageError

__all__ = [
    "ConfigError",
    "Loc",
    "Mark",
    "Problem",
    "YamlDocument",
    "format_path",
    "parse_yaml",
    "parse_yaml_stream",
]

# A location inside a document: mapping keys and sequence indexes, like pydantic's ``loc``.
Loc = tuple[str | int, ...]


@dataclass(frozen=True, order=True)
class Mark:
    """A position in a file, 1-based like editors and compilers show it."""

    line: int
    column: int


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file: where, which field, what, and what to do about it."""

    file: str
    message: str
    mark: Mark | None = None
    field: str = ""

    def __str__(self) -> str:
        where = (
            self.file if self.mark is None else f"{self.file}:{self.mark.line}:{self.mark.column}"
        )
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class ConfigError(UsageError):
    """Configuration that cannot be used; carries every problem found, not just the first."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        if not problems:
            raise ValueError("ConfigError needs at least one problem")
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def files(self) -> tuple[str, ...]:
        """The files with problems, in the order first seen."""
        return tuple(dict.fromkeys(p.file for p in self.problems))


def format_path(path: Sequence[str | int]) -> str:
    """``("checks", "health", 0, "path")`` -> ``checks.health[0].path``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class YamlDocument:
    """Plain data from one YAML document plus the position of each value and mapping key."""

    file: str
    data: Any
    value_marks: dict[Loc, Mark] = field(default_factory=dict)
    key_marks: dict[Loc, Mark] = field(default_factory=dict)

    def mark_of(self, path: Sequence[str | int], *, key: bool = False) -> Mark:
        """Where ``path`` is written; for a path that does not exist, its nearest ancestor.

        With ``key=True`` a mapping entry's key is preferred to its value: that is where an
        unknown or duplicate key should be reported.
        """
        p: Loc = tuple(path)
        if key and p in self.key_marks:
            return self.key_marks[p]
        for n in range(len(p), -1, -1):
            mark = self.value_marks.get(p[:n])
            if mark is not None:
                return mark
        return Mark(1, 1)

    def has(self, path: Sequence[str | int]) -> bool:
        return tuple(path) in self.value_marks


# --- YAML 1.2 core schema on top of PyYAML's safe loader --------------------------------------


class _Loader(yaml.SafeLoader):
    """Safe loader with YAML 1.2 core scalar resolution (see the module docstring)."""


_Loader.yaml_implicit_resolvers = {}
_IMPLICIT: list[tuple[str, str, list[str]]] = [
    # "" as a first character is how PyYAML finds the resolver for the empty scalar.
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        list("-+0123456789."),
    ),
    ("tag:yaml.org,2002:merge", r"^<<$", ["<"]),
]
for _tag, _regexp, _first in _IMPLICIT:
    _Loader.add_implicit_resolver(_tag, re.compile(_regexp), _first)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text, 10)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _mark(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    """Turns a composed node tree into plain data, recording marks and collecting problems."""

    def __init__(self, loader: _Loader, doc: YamlDocument) -> None:
        self.loader = loader
        self.doc = doc
        self.problems: list[Problem] = []
        self._active: set[int] = set()  # nodes being built, to refuse recursive aliases

    def problem(self, node: yaml.Node, message: str, path: Loc) -> None:
        self.problems.append(Problem(self.doc.file, message, _mark(node), format_path(path)))

    def build(self, node: yaml.Node, path: Loc) -> Any:
        self.doc.value_marks.setdefault(path, _mark(node))
        if id(node) in self._active:
            self.problem(node, "recursive alias — a value cannot contain itself", path)
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            return self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            self.problem(node, f"{exc.problem} — write a plain value", path)
            return None
        finally:
            self._active.discard(id(node))

    def _entries(
        self, node: yaml.MappingNode, path: Loc, seen: frozenset[int] = frozenset()
    ) -> Iterator[tuple[yaml.Node, yaml.Node]]:
        """Entries in the order they take effect: ``<<`` merges first, later ones overriding.

        Per the YAML merge key spec, the mapping's own keys beat merged ones, and of several
        merged mappings the first listed wins, so they are yielded last-listed first.
        """
        seen = seen | {id(node)}
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        own: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != "tag:yaml.org,2002:merge":
                own.append((key_node, value_node))
                continue
            is_list = isinstance(value_node, yaml.SequenceNode)
            for source in reversed(value_node.value) if is_list else [value_node]:
                if not isinstance(source, yaml.MappingNode):
                    self.problem(source, "a merge key (<<) needs a mapping or a list of them", path)
                elif id(source) in seen:
                    self.problem(source, "recursive merge — a mapping cannot merge itself", path)
                else:
                    merged.extend(self._entries(source, path, seen))
        yield from merged
        yield from own

    def _mapping(self, node: yaml.MappingNode, path: Loc) -> dict[str, Any]:
        result: dict[str, Any] = {}
        own_seen: dict[str, Mark] = {}
        own_keys = {id(k) for k, _ in node.value}
        for key_node, value_node in self._entries(node, path):
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, "a mapping key must be a plain scalar", path)
                continue
            # Keys are kept as written: every key in our files is a name, never a number.
            key: str = key_node.value
            if id(key_node) in own_keys:
                if key in own_seen:
                    first = own_seen[key]
                    self.problem(
                        key_node,
                        f"duplicate key {key!r} (first at line {first.line}) — keep only one",
                        (*path, key),
                    )
                    continue
                own_seen[key] = _mark(key_node)
            child: Loc = (*path, key)
            # Own entries come after merged ones and override them, marks included.
            self.doc.key_marks[child] = _mark(key_node)
            self.doc.value_marks[child] = _mark(value_node)
            result[key] = self.build(value_node, child)
        return result


def parse_yaml(text: str, file: str) -> YamlDocument:
    """Parse one YAML document from ``text``; ``file`` is the name used in messages.

    Raises ConfigError with every problem found (syntax errors stop at the first one).
    """
    loader = _Loader(text)
    try:
        return _document(loader, loader.get_single_node(), file)
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, file) from None
    finally:
        loader.dispose()


def parse_yaml_stream(text: str, file: str) -> list[YamlDocument]:
    """Parse every document of a multi-document stream (``---`` between them), empty ones
    left out; marks are lines of the whole text. ConfigError as ``parse_yaml``."""
    loader = _Loader(text)
    docs: list[YamlDocument] = []
    problems: list[Problem] = []
    try:
        while loader.check_node():
            try:
                doc = _document(loader, loader.get_node(), file)
            except ConfigError as exc:
                problems.extend(exc.problems)
                continue
            if doc.data is not None:
                docs.append(doc)
    except yaml.YAMLError as exc:
        problems.extend(_syntax_error(exc, file).problems)
    finally:
        loader.dispose()
    if problems:
        raise ConfigError(problems)
    return docs


def _document(loader: _Loader, root: yaml.Node | None, file: str) -> YamlDocument:
    doc = YamlDocument(file=file, data=None)
    if root is None:
        return doc
    builder = _Builder(loader, doc)
    doc.data = builder.build(root, ())
    if builder.problems:
        raise ConfigError(builder.problems)
    return doc


def _syntax_error(exc: yaml.YAMLError, file: str) -> ConfigError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = None if mark is None else Mark(mark.line + 1, mark.column + 1)
        what = " ".join(s for s in (exc.context, exc.problem) if s)
        return ConfigError(
            [Problem(file, f"YAML syntax error: {what} — fix the YAML syntax", where)]
        )
    return ConfigError([Problem(file, f"YAML error: {exc}")])
