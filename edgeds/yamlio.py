"""YAML loading that remembers where every value came from.

:func:`load_yaml` returns the plain data together with a :class:`SourceMap` that maps each
location (a tuple of keys and list indices) to the file and line it was written on, so that
schema errors can be reported as ``file:line: field: message``. Duplicate keys and YAML merge
keys are rejected (both silently hide a value in PyYAML's default loader), every one of them in
one :class:`~edgeds.errors.ConfigError`. A document merged over another (a profile's
``extends:``) keeps both files' lines; :meth:`SourceMap.blame` reports a problem in the file
that was loaded, naming the other file's line as the origin of an inherited value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

Loc = tuple[str | int, ...]
Problem = tuple[Path | None, int | None, str, str]


@dataclass(frozen=True)
class Blame:
    """Where a problem is reported: the loaded file and a line of it, and where the value at
    fault was written when that is another file (an inherited value), else None."""

    path: Path | None
    line: int | None
    inherited_from: tuple[Path, int] | None = None
    anchored: bool = False
    """True when the line is the anchor's: nothing enclosing the location is written in this file."""


@dataclass
class SourceMap:
    """Where each location of a loaded document was written: ``loc -> (file, line)``. The root
    location ``()`` is the loaded file's first node."""

    entries: dict[Loc, tuple[Path, int]] = field(default_factory=dict)

    @property
    def file(self) -> Path | None:
        """The file the document was loaded from (where its root was written)."""
        root = self.entries.get(())
        return root[0] if root is not None else None

    def where(self, loc: Loc) -> tuple[Path | None, int | None]:
        """File and line of ``loc``, or of its nearest written ancestor."""
        for end in range(len(loc), -1, -1):
            hit = self.entries.get(tuple(loc[:end]))
            if hit is not None:
                return hit
        return None, None

    def merged_over(self, base: SourceMap, data: Mapping[str, Any], dropped: tuple[str, ...] = ()) -> SourceMap:
        """The map of ``data`` (this map's document) merged over ``base``'s with :func:`deep_merge`
        (used by ``extends:``): ``base``'s entries are kept where ``data`` does not replace them
        (a list or value of ``data`` replaces the base's whole value), except under the top-level
        keys ``dropped`` (not inherited). The root stays this map's."""
        kept = {
            loc: hit for loc, hit in base.entries.items() if loc and loc[0] not in dropped and not _replaced(data, loc)
        }
        return SourceMap({**kept, **self.entries})

    def blame(self, loc: Loc, anchor: Loc | None = None) -> Blame:
        """Where to report a problem at ``loc``: always in :attr:`file`, the file that was loaded.

        The line is that of ``loc`` or of its nearest ancestor written in this file. A value
        written only in another file (merged in by :meth:`merged_over`) is blamed on this file's
        nearest enclosing key, or on ``anchor`` (e.g. ``("extends",)``) when there is none, and
        its origin is returned in :attr:`Blame.inherited_from`. A location written nowhere (a
        missing field) is blamed on its nearest written ancestor, the root being replaced by
        ``anchor`` when that is given and written here.
        """
        own = self.file
        origin: tuple[Path, int] | None = None
        for end in range(len(loc), 0, -1):
            hit = self.entries.get(tuple(loc[:end]))
            if hit is None:
                continue
            if hit[0] == own:
                return Blame(own, hit[1], origin)
            origin = origin or hit
        anchored = self.entries.get(anchor) if anchor is not None else None
        if anchored is not None and anchored[0] == own:
            return Blame(own, anchored[1], origin, anchored=True)
        root = self.entries.get(())
        return Blame(own, root[1] if root is not None else None, origin)


def _replaced(over: Any, loc: Loc) -> bool:
    """Whether ``over``, laid on a base document by :func:`deep_merge`, replaces the base's value at ``loc``."""
    node = over
    for key in loc:
        if not isinstance(node, Mapping):
            return True  # a list or value of ``over`` replaced the base's whole value here
        if key not in node:
            return False
        node = node[key]
    return True


def display_path(path: Path) -> Path:
    """``path`` relative to the working directory when it lies below it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def load_yaml(path: Path) -> tuple[Any, SourceMap]:
    """Read ``path`` and return ``(data, source_map)``. Raises :class:`ConfigError`."""
    shown = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError.single(shown, None, "", "file not found") from exc
    except OSError as exc:
        raise ConfigError.single(shown, None, "", f"cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError.single(shown, None, "", f"not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
    return parse_yaml(text, shown)


def parse_yaml(text: str, path: Path) -> tuple[Any, SourceMap]:
    """Parse ``text`` (read from ``path``, used in messages) with a source map."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark is not None:
            problem = f"{problem} ({context} started at line {context_mark.line + 1})"
        raise ConfigError.single(path, line, "", f"invalid YAML: {problem}") from exc
    smap = SourceMap()
    if node is None:
        return None, smap
    smap.entries[()] = (path, node.start_mark.line + 1)
    problems: list[Problem] = []
    data = _Builder(path, smap, problems).build(node, ())
    if problems:
        raise ConfigError(problems)
    return data, smap


_scalar_constructor = yaml.constructor.SafeConstructor()


@dataclass
class _Builder:
    """Builds plain data from a composed node, recording lines in ``smap`` and every duplicate
    key, merge key and non-string key in ``problems`` (the document is read to its end)."""

    path: Path
    smap: SourceMap
    problems: list[Problem]

    open_nodes: set[int] = field(default_factory=set)  # collections being built: an alias to one is a cycle

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        if isinstance(node, yaml.CollectionNode):
            if id(node) in self.open_nodes:
                line = node.start_mark.line + 1
                self.problems.append((self.path, line, _dotted(loc), "an alias refers to its own enclosing value"))
                return None
            self.open_nodes.add(id(node))
            try:
                return self._mapping(node, loc) if isinstance(node, yaml.MappingNode) else self._sequence(node, loc)
            finally:
                self.open_nodes.discard(id(node))
        try:
            return _scalar_constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError) as exc:  # an unknown tag, or a tagged value that is not of its type
            problem = getattr(exc, "problem", None) or str(exc)
            self.problems.append((self.path, node.start_mark.line + 1, _dotted(loc), f"invalid value: {problem}"))
            return None

    def _sequence(self, node: yaml.CollectionNode, loc: Loc) -> list[Any]:
        items = []
        for index, item in enumerate(node.value):
            element: Loc = (*loc, index)
            self.smap.entries[element] = (self.path, item.start_mark.line + 1)
            items.append(self.build(item, element))
        return items

    def _mapping(self, node: yaml.CollectionNode, loc: Loc) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.problems.append((self.path, line, _dotted(loc), "YAML merge keys (<<) are not supported"))
                continue
            key = self.build(key_node, loc)
            if not isinstance(key, (str, int)):
                self.problems.append((self.path, line, _dotted(loc), f"keys must be strings, got {key!r}"))
                continue
            child: Loc = (*loc, key)
            if key in first_line:
                message = f"duplicate key (first at line {first_line[key]}): remove one"
                self.problems.append((self.path, line, _dotted(child), message))
                continue
            first_line[key] = line
            self.smap.entries[child] = (self.path, line)
            out[key] = self.build(value_node, child)
        return out


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def dotted(loc: Loc) -> str:
    """``("backends", 0, "name")`` -> ``"backends[0].name"``."""
    return _dotted(loc)


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base``: mappings merge key by key, everything else is replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
