"""YAML text in, plain Python data out, with the file:line:col of every value and key.

In: the text of one YAML document and the (repo-relative) name of its file.
Out: a `LoadedYaml` holding the data (dict, list, str, int, Decimal, bool, None) and
two maps from JSON path (`charges[2].amount`, "" for the root) to `Location`: where
each value starts and where each mapping key starts. Errors: every problem found,
raised as one `RulesError` (`load_yaml`, for rule files) or `FactsError`
(`parse_yaml_data`, for shipment files).

Composing the node tree is libyaml's job where PyYAML has it (in C, about ten times
faster), with PyYAML's pure-Python parser for the documents libyaml would read or place
differently; either way the nodes, marks and messages are the same.

Rule files are edited by hand, so a typo must fail loudly rather than change a figure.
We therefore use PyYAML only to compose the node tree and build the values ourselves:
- YAML 1.2 core scalars, not PyYAML's YAML 1.1: `NO`, `yes`, `off` stay text and dates
  stay text; only true/false are booleans.
- numbers are exact: `1.10` is Decimal("1.10") built from the source text, never a float;
  `.inf`, `.nan`, hex, octal, binary, `1_000`, sexagesimal `1:20` and integers with a
  leading zero (`0101`, which a number would turn into 101) are errors.
- no tags beyond the core ones, so nothing can construct an object; no merge keys `<<`,
  which hide where a value came from; duplicate keys are errors (PyYAML keeps the last).
- mapping keys are always text, taken as written: `0101:` is the key "0101".
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import yaml
from yaml.events import AliasEvent, StreamEndEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from engine.errors import FactsError, Location, Problem, RulesError, TivError, json_path

_CORE = "tag:yaml.org,2002:"
_STR = _CORE + "str"
_INT = _CORE + "int"
_FLOAT = _CORE + "float"
_BOOL = _CORE + "bool"
_NULL = _CORE + "null"
_MAP = _CORE + "map"
_SEQ = _CORE + "seq"
# What our resolver gives an untagged plain scalar, so that `!!str 12` (explicitly
# text) stays distinguishable from a bare `12` after composing.
_PLAIN = "tag:tiv,2025:plain"
_SCALAR_TAGS = frozenset({_PLAIN, _STR, _INT, _FLOAT, _BOOL, _NULL})

_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_TRUE = frozenset({"true", "True", "TRUE"})
_FALSE = frozenset({"false", "False", "FALSE"})

_INTEGER = re.compile(r"[-+]?[0-9]+")
_LEADING_ZERO = re.compile(r"[-+]?0[0-9]+")
_DECIMAL = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_NOT_FINITE = re.compile(r"[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)")
# Forms YAML 1.1 (PyYAML) or 1.2 read as numbers but that we refuse: a reader would
# have to know the rule to see the figure. Underscored forms are matched separately.
_RADIX = re.compile(r"[-+]?0(?:[xX][0-9a-fA-F_]+|[oO][0-7_]+|[bB][01_]+)")
_SEXAGESIMAL = re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?")
_UNDERSCORED = re.compile(r"[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?")

# `a != b` inside a plain scalar (a condition), which no parser reads as a tag: the
# '!' follows a word and a space. Any other '!' may start a tag (see _load_with_libyaml).
_COMPARISON = re.compile(r"(?<=[\w).])[ ]+!=[ ]")

# Aliases are expanded into independent values (so each path has its own mark); this
# bounds the expansion so a "billion laughs" document fails instead of exhausting memory.
MAX_ALIAS_EXPANSION = 100_000

# The largest rule file or facts document read at all, in bytes: refused before parsing
# (a 50 MB YAML of list items took the parser 90 s and 1.2 GB). 2 MiB is fifty times the
# largest shipped pack, and some 10,000 goods lines of facts. `--max-input BYTES` on the
# command line, or $TIV_MAX_INPUT_BYTES.
MAX_INPUT_ENV = "TIV_MAX_INPUT_BYTES"
DEFAULT_MAX_INPUT_BYTES = 2 * 1024 * 1024


def max_input_bytes(error_class: type[TivError] = RulesError) -> int:
    """The limit in force: $TIV_MAX_INPUT_BYTES, else the default."""
    given = os.environ.get(MAX_INPUT_ENV, "").strip()
    if not given:
        return DEFAULT_MAX_INPUT_BYTES
    if not given.isdigit() or int(given) < 1:
        raise error_class(
            Problem(
                "input.limit",
                f"{MAX_INPUT_ENV}={given[:40]!r} is not a whole number of bytes (at least 1)",
                Location(),
            )
        )
    return int(given)


def check_input_size(size: int, file: str, error_class: type[TivError] = RulesError) -> None:
    """Refuse a document of `size` bytes over the limit, before it is read or parsed."""
    limit = max_input_bytes(error_class)
    if size > limit:
        what = "rule file" if error_class is RulesError else "facts document"
        raise error_class(
            Problem(
                "input.too_large",
                f"the {what} is {size:,} bytes, over the limit of {limit:,} bytes; split it, "
                f"or raise the limit with --max-input BYTES or ${MAX_INPUT_ENV}",
                Location(file),
            )
        )


@dataclass(frozen=True)
class LoadedYaml:
    """A parsed YAML document: plain data plus where each value and key was written."""

    data: Any
    file: str
    marks: Mapping[str, Location]
    key_marks: Mapping[str, Location]

    def locate(self, path: str | Sequence[str | int], *, key: bool = False) -> Location:
        """Where `path` was written; the nearest ancestor's place if it was not.

        `key=True` prefers the mapping key's position (for "unknown field" problems);
        list items and the root have no key, so their value position is used. The
        returned Location always carries the requested `path`.
        """
        text = path if isinstance(path, str) else json_path(path)
        if key and text in self.key_marks:
            return self.key_marks[text].at(text)
        probe: str | None = text
        while probe is not None:
            if probe in self.marks:
                return self.marks[probe].at(text)
            probe = _parent_path(probe)
        # Nothing was written at all (an empty or truncated-to-nothing document): the
        # problem is where the document should start, so a reader is sent to line 1.
        return Location(self.file, 1 if self.file else 0, 1 if self.file else 0, path=text)


def load_yaml(text: str, file: str) -> LoadedYaml:
    """Parse a rule file; raise RulesError carrying every problem found."""
    return _load(text, file, RulesError)


def parse_yaml_data(text: str, file: str) -> LoadedYaml:
    """Parse a shipment facts file; raise FactsError carrying every problem found."""
    return _load(text, file, FactsError)


def _parent_path(path: str) -> str | None:
    """`a.b[2]` -> `a.b` -> `a` -> "" -> None, for paths in engine.errors.json_path form."""
    if not path:
        return None
    if path.endswith('"]'):
        return path[: path.rfind('["')]
    if path.endswith("]"):
        return path[: path.rfind("[")]
    # A bare key holds no dots or brackets, so the last separator before it is its own.
    cut = max(path.rfind("."), path.rfind("]") + 1 if "]" in path else -1)
    return path[:cut] if cut > 0 else ""


def _child_path(path: str, key: str) -> str:
    """`json_path((*parts, key))` from `json_path(parts)`, built once per node rather than
    from the root each time (a test checks the two agree)."""
    if key.replace("_", "a").replace("-", "a").isalnum() and not key[:1].isdigit():
        return f"{path}.{key}" if path else key
    return f'{path}["{key}"]'


def _tag_name(tag: str) -> str:
    return "!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag


class _Resolver(yaml.resolver.BaseResolver):
    """Plain scalars are left for us to resolve (as _PLAIN); the rest get the tag any
    YAML parser gives them. Shared by both composers below, so they tag alike."""

    def resolve(self, kind: type[Node], value: str | None, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            return _PLAIN if implicit[0] else _STR
        return _SEQ if kind is SequenceNode else _MAP


class _Composer(yaml.composer.Composer):
    """PyYAML's Python composer, recording where each alias (`*name`) was written: the
    composed tree shares the anchored node, whose own mark is the anchor's."""

    def __init__(self) -> None:
        super().__init__()
        # (id(parent node), "k" for a key or "v" for a value/item, position) -> mark
        self.alias_marks: dict[tuple[int, str, int], yaml.Mark] = {}

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        parser: Any = self  # the parser half of the loader this is mixed into
        if parent is not None and parser.check_event(AliasEvent):
            role = "k" if isinstance(parent, MappingNode) and index is None else "v"
            mark = parser.peek_event().start_mark
            self.alias_marks[(id(parent), role, len(parent.value))] = mark
        return super().compose_node(parent, index)


class _Loader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, _Composer, _Resolver):
    """PyYAML's pure-Python reader, parser and composer: the one used when libyaml is
    not installed or refuses a document, so errors are worded and placed as always."""

    def __init__(self, text: str) -> None:
        yaml.reader.Reader.__init__(self, text)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        _Composer.__init__(self)


class _TooManyAliases(Exception):
    pass


class _Aliased(Exception):
    """An alias met in a tree whose alias marks are unknown (composed by libyaml)."""


class _EmptyPlain(Exception):
    """An empty plain scalar (`a:` with no value) met in a tree parsed by libyaml, which
    places some of them a character or a line away from where PyYAML does (in flow
    collections, at the end of the text), so the Python parser reads the document."""


# libyaml's parser, when PyYAML was built with it: PyPI's wheels for Linux, macOS and
# Windows bundle it (pyyaml 6.0.4: libyaml 0.2.6), a build from source may not, and
# then the pure-Python parser reads everything, only more slowly.
_CLoader: type[Any] | None = None
_CEventsLoader: type[Any] | None = None
try:
    from yaml._yaml import CParser
except ImportError:
    pass
else:

    class _LibyamlLoader(CParser, _Resolver):
        """libyaml's parser and composer, in C: about ten times the Python one's speed."""

        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            _Resolver.__init__(self)

    class _LibyamlEventsLoader(_Composer, CParser, _Resolver):
        """libyaml's parser under the Python composer, which records alias marks: for
        documents that use aliases, which libyaml's own composer does not place."""

        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            _Composer.__init__(self)

    _CLoader, _CEventsLoader = _LibyamlLoader, _LibyamlEventsLoader

# Whether libyaml composes documents; bench/load_time.py reports it.
WITH_LIBYAML = _CLoader is not None


class _Builder:
    """Walks the composed node tree, building values and marks, collecting problems."""

    def __init__(
        self,
        file: str,
        alias_marks: Mapping[tuple[int, str, int], yaml.Mark] | None,
        *,
        libyaml: bool = False,
    ) -> None:
        """`alias_marks` None: the tree's aliases were not recorded, so meeting one
        raises _Aliased (the caller composes the document again, recording them).
        `libyaml`: the nodes were parsed by libyaml, so an empty plain scalar raises
        _EmptyPlain (the caller has the Python parser read the document)."""
        self.file = file
        self.libyaml = libyaml
        self.alias_marks: Mapping[tuple[int, str, int], yaml.Mark] = alias_marks or {}
        self._aliases_known = alias_marks is not None
        self.marks: dict[str, Location] = {}
        self.key_marks: dict[str, Location] = {}
        self.problems: list[Problem] = []
        self._reported: set[tuple[str, str, int, int]] = set()
        self._open: set[int] = set()  # nodes being built, to catch recursive aliases
        self._built: set[int] = set()
        self._expanded = 0

    def location(self, mark: yaml.Mark, path: str) -> Location:
        return Location(self.file, mark.line + 1, mark.column + 1, path)

    def report(self, code: str, message: str, mark: yaml.Mark, path: str) -> None:
        # An aliased node is built once per use; its problems are reported once.
        seen = (code, message, mark.line, mark.column)
        if seen not in self._reported:
            self._reported.add(seen)
            self.problems.append(Problem(code, message, self.location(mark, path)))

    def child_mark(self, parent: Node, role: str, position: int, child: Node) -> yaml.Mark:
        return self.alias_marks.get((id(parent), role, position), child.start_mark)

    def value(self, node: Node, path: str, mark: yaml.Mark) -> Any:
        if not self._aliases_known and id(node) in self._built:
            raise _Aliased
        if self.libyaml and isinstance(node, ScalarNode) and not node.value and not node.style:
            raise _EmptyPlain
        if path not in self.marks:
            self.marks[path] = self.location(mark, path)
        if id(node) in self._open:
            self.report(
                "yaml.alias",
                "an alias refers to a value that contains it; a value cannot include itself",
                mark,
                path,
            )
            return None
        if id(node) in self._built:
            self._expanded += 1
            if self._expanded > MAX_ALIAS_EXPANSION:
                self.report(
                    "yaml.alias",
                    f"aliases expand to more than {MAX_ALIAS_EXPANSION} "
                    "values; write the data out instead",
                    mark,
                    path,
                )
                raise _TooManyAliases
        self._built.add(id(node))
        if isinstance(node, ScalarNode):
            return self.scalar(node, mark, path)
        self._open.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return self.sequence(node, mark, path)
            if isinstance(node, MappingNode):
                return self.mapping(node, mark, path)
        finally:
            self._open.discard(id(node))
        raise AssertionError(f"unexpected YAML node {node!r}")  # pragma: no cover

    def sequence(self, node: SequenceNode, mark: yaml.Mark, path: str) -> list[Any]:
        if node.tag != _SEQ:
            self.report(
                "yaml.tag",
                f"the tag {_tag_name(node.tag)} is not allowed on a list; remove it",
                mark,
                path,
            )
        return [
            self.value(child, f"{path}[{i}]", self.child_mark(node, "v", i, child))
            for i, child in enumerate(node.value)
        ]

    def mapping(self, node: MappingNode, mark: yaml.Mark, path: str) -> dict[str, Any]:
        if node.tag != _MAP:
            self.report(
                "yaml.tag",
                f"the tag {_tag_name(node.tag)} is not allowed on a mapping; remove it",
                mark,
                path,
            )
        result: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for i, (key_node, value_node) in enumerate(node.value):
            key_mark = self.child_mark(node, "k", i, key_node)
            value_mark = self.child_mark(node, "v", i, value_node)
            key = self.key(key_node, key_mark, path)
            if key is None:
                continue
            child_path = _child_path(path, key)
            if key in first_line:
                self.report(
                    "yaml.duplicate_key",
                    f"duplicate key {key!r} (first at line {first_line[key]}); "
                    "YAML would silently keep only one, so remove or rename one",
                    key_mark,
                    child_path,
                )
                # Still walk it, to report its own problems; the first entry's data stays.
                self.value(value_node, child_path, value_mark)
                continue
            first_line[key] = key_mark.line + 1
            self.key_marks[child_path] = self.location(key_mark, child_path)
            result[key] = self.value(value_node, child_path, value_mark)
        return result

    def key(self, node: Node, mark: yaml.Mark, parent_path: str) -> str | None:
        if not self._aliases_known:  # an aliased key is an alias too
            if id(node) in self._built:
                raise _Aliased
            self._built.add(id(node))
        if self.libyaml and isinstance(node, ScalarNode) and not node.value and not node.style:
            raise _EmptyPlain
        if not isinstance(node, ScalarNode):
            self.report(
                "yaml.key", "a mapping key must be text, not a list or a mapping", mark, parent_path
            )
            return None
        if node.tag not in _SCALAR_TAGS:
            self.report(
                "yaml.tag",
                f"the tag {_tag_name(node.tag)} is not allowed; write the key as plain text",
                mark,
                parent_path,
            )
            return None
        if node.tag == _PLAIN and node.value == "<<":
            self.report(
                "yaml.merge_key",
                "merge keys ('<<') are not supported because they "
                "hide where a value comes from; write the entries out",
                mark,
                parent_path,
            )
            return None
        if node.tag == _PLAIN and node.value == "":
            self.report(
                "yaml.key", "empty mapping key; write a name before the ':'", mark, parent_path
            )
            return None
        return str(node.value)

    def scalar(self, node: ScalarNode, mark: yaml.Mark, path: str) -> Any:
        tag, text = node.tag, str(node.value)
        if tag == _STR:
            return text
        if tag == _PLAIN:
            if text in _NULLS:
                return None
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            return self.number(text, mark, path, default=text)
        if tag == _NULL and text in _NULLS:
            return None
        if tag == _BOOL and text in _TRUE | _FALSE:
            return text in _TRUE
        if tag == _INT and _INTEGER.fullmatch(text):
            return self.number(text, mark, path, default=None)
        if tag == _FLOAT and _DECIMAL.fullmatch(text):
            return Decimal(text)  # `!!float 2` asks for a non-integer type: Decimal("2")
        if tag in (_NULL, _BOOL, _INT, _FLOAT):
            self.report(
                "yaml.tag",
                f"{text!r} is not a valid {_tag_name(tag)} value; remove the tag or fix the value",
                mark,
                path,
            )
            return None
        self.report(
            "yaml.tag",
            f"the tag {_tag_name(tag)} is not allowed; rule and facts "
            "files hold plain data only (text, numbers, true/false, lists, mappings)",
            mark,
            path,
        )
        return None

    def number(self, text: str, mark: yaml.Mark, path: str, default: Any) -> Any:
        """The exact number `text` spells, an error for lossy forms, else `default`."""
        if _LEADING_ZERO.fullmatch(text):
            self.report(
                "yaml.number",
                f"{text!r} has a leading zero, which a number would drop; quote it "
                f'("{text}") if it is a code, or write the number without it',
                mark,
                path,
            )
            return None
        if _INTEGER.fullmatch(text):
            try:
                return int(text)
            except ValueError:  # beyond Python's int-from-text digit limit
                self.report("yaml.number", f"{text[:20]}... has too many digits", mark, path)
                return None
        if _DECIMAL.fullmatch(text):
            return Decimal(text)
        if _NOT_FINITE.fullmatch(text):
            self.report(
                "yaml.number",
                f"{text!r} is not a finite number; write a plain number, or quote it if it is text",
                mark,
                path,
            )
            return None
        if (
            _RADIX.fullmatch(text)
            or _SEXAGESIMAL.fullmatch(text)
            or ("_" in text and _UNDERSCORED.fullmatch(text))
        ):
            self.report(
                "yaml.number",
                f"{text!r} is not a plain number (hex, octal, binary, "
                "underscores and 1:20 forms are not accepted); write a plain number "
                "like 1000, or quote it if it is text",
                mark,
                path,
            )
            return None
        return default


def _syntax_problem(error: yaml.YAMLError, text: str, file: str) -> Problem:
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        message = error.problem or error.context or "invalid YAML"
        if error.problem and error.context:
            where = error.context_mark
            message += f" ({error.context}" + (f" at line {where.line + 1})" if where else ")")
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        return Problem("yaml.syntax", " ".join(message.split()), Location(file, line, col))
    if isinstance(error, yaml.reader.ReaderError):
        # Raised for characters YAML forbids (control characters); it has an offset only.
        offset = min(max(error.position, 0), len(text))
        line = text.count("\n", 0, offset) + 1
        col = offset - (text.rfind("\n", 0, offset) + 1) + 1
        return Problem(
            "yaml.syntax",
            f"character {error.character:#x} is not allowed in YAML text; remove it",
            Location(file, line, col),
        )
    return Problem("yaml.syntax", str(error).replace("\n", " "), Location(file))


def _too_deep(file: str) -> Problem:
    return Problem(
        "yaml.syntax", "the document nests lists and mappings too deeply to read", Location(file)
    )


def _load(text: str, file: str, error_class: type[TivError]) -> LoadedYaml:
    limit = max_input_bytes(error_class)
    if len(text) > limit // 4:  # a character is 1 to 4 bytes: count them only if it matters
        check_input_size(len(text.encode("utf-8", "surrogatepass")), file, error_class)
    loaded = _load_with_libyaml(text, file, error_class) if _CLoader is not None else None
    return loaded if loaded is not None else _load_with_python(text, file, error_class)


def _load_with_libyaml(text: str, file: str, error_class: type[TivError]) -> LoadedYaml | None:
    """The document composed by libyaml, or None to let the Python composer decide.

    libyaml gives the same nodes with the same line and column marks (a test checks
    every shipped file and generated text), but it words syntax errors its own way,
    does not say where an alias was written, and places some empty values elsewhere.
    So a document it refuses or that holds an empty value is read again by the Python
    parser, and one that uses an alias by the Python composer over libyaml's parser:
    either reports exactly as before.
    """
    assert _CLoader is not None
    if "\t" in text or "\ufeff" in text[1:]:
        return None  # libyaml takes tabs and a BOM inside the text where PyYAML refuses them
    if "!" in text and text.count("!") != len(_COMPARISON.findall(text)):
        return None  # a tag, maybe: the two scan some tags in flow collections differently
    loader = _CLoader(text)
    try:
        root = loader.get_single_node()  # a second document is an error here
    except Exception:  # any doubt (syntax, depth, encoding): the Python composer decides
        return None
    finally:
        loader.dispose()
    builder = _Builder(file, None, libyaml=True)
    data = None
    if root is not None:
        try:
            data = builder.value(root, "", root.start_mark)
        except _Aliased:
            try:
                return _load_with_python(text, file, error_class, _CEventsLoader)
            except _EmptyPlain:
                return None
        except (_EmptyPlain, RecursionError):
            return None
    if builder.problems:
        raise error_class(builder.problems)
    return LoadedYaml(
        data, file, MappingProxyType(builder.marks), MappingProxyType(builder.key_marks)
    )


def _load_with_python(
    text: str, file: str, error_class: type[TivError], composer: type[Any] | None = None
) -> LoadedYaml:
    """The document composed by the Python composer, over `composer`'s parser (the
    pure-Python one by default), reporting every problem."""
    loader: Any = None
    try:
        loader = (composer or _Loader)(text)  # reading starts here: it rejects control chars
        loader.get_event()  # STREAM-START
        root = None if loader.check_event(StreamEndEvent) else loader.compose_document()
        alias_marks = loader.alias_marks
        if not loader.check_event(StreamEndEvent):
            mark = loader.peek_event().start_mark
            raise error_class(
                Problem(
                    "yaml.multiple_documents",
                    "a file holds one YAML document, but a second one starts here; "
                    "remove the '---' separator or split the file",
                    Location(file, mark.line + 1, mark.column + 1),
                )
            )
    except yaml.YAMLError as error:
        raise error_class(_syntax_problem(error, text, file)) from None
    except RecursionError:
        raise error_class(_too_deep(file)) from None
    finally:
        if loader is not None:
            loader.dispose()

    builder = _Builder(file, alias_marks, libyaml=composer is not None)
    data = None
    if root is not None:
        try:
            data = builder.value(root, "", root.start_mark)
        except _TooManyAliases:
            data = None  # the problem is reported; the data is discarded below
        except RecursionError:
            raise error_class(_too_deep(file)) from None
    if builder.problems:
        raise error_class(builder.problems)
    return LoadedYaml(
        data, file, MappingProxyType(builder.marks), MappingProxyType(builder.key_marks)
    )
