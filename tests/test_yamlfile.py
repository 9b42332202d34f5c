"""engine.loading.yamlfile: exact, safe YAML with the file:line:col of every value and key."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import FactsError, Location, Problem, RulesError, TivError, json_path
from engine.loading import yamlfile
from engine.loading.yamlfile import LoadedYaml, load_yaml, parse_yaml_data
from engine.money import plain
from tests.conftest import run_cli


def problems(text: str) -> list[Problem]:
    with pytest.raises(RulesError) as caught:
        load_yaml(text, "rules/x.yaml")
    return list(caught.value.problems)


def test_duplicate_key_is_reported_at_the_second_naming_the_first() -> None:
    [found] = problems("rate: 1\nname: x\nrate: 2\n")
    assert found.code == "yaml.duplicate_key"
    assert found.location == Location("rules/x.yaml", 3, 1, "rate")
    assert "first at line 1" in found.message


def test_nested_duplicate_key() -> None:
    [found] = problems("a:\n  b: 1\n  c: 2\n  b: 3\n")
    assert (found.code, found.location.line, found.location.path) == (
        "yaml.duplicate_key",
        4,
        "a.b",
    )
    assert "line 2" in found.message


def test_keys_that_read_alike_are_duplicates() -> None:
    # 8471 and "8471" are both the key "8471".
    [found] = problems('8471: a\n"8471": b\n')
    assert found.code == "yaml.duplicate_key"
    assert found.location.line == 2


@pytest.mark.parametrize(
    "text",
    [
        "x: !!python/object/apply:os.system ['echo hi']\n",
        "x: !!python/name:os.system\n",
        "x: !!binary aGVsbG8=\n",
        "x: !!timestamp 2020-01-01\n",
        "x: !custom 1\n",
        "x: !!set {a, b}\n",
    ],
)
def test_tags_beyond_the_core_ones_are_rejected(text: str) -> None:
    [found] = problems(text)
    assert found.code == "yaml.tag"
    assert found.location == Location("rules/x.yaml", 1, 4, "x")


def test_core_tags_are_honoured() -> None:
    data = load_yaml(
        "a: !!str 12\nb: !!float 2\nc: !!int 7\nd: !!bool true\ne: !!null ~\n", "f"
    ).data
    assert data == {"a": "12", "b": Decimal("2"), "c": 7, "d": True, "e": None}
    assert isinstance(data["b"], Decimal)


def test_yaml_1_2_booleans_only() -> None:
    data = load_yaml(
        "country: NO\nflags: [yes, no, on, off, y, n, Yes]\nt: [true, True, TRUE]\nf: false\n", "f"
    ).data
    assert data["country"] == "NO"
    assert data["flags"] == ["yes", "no", "on", "off", "y", "n", "Yes"]
    assert data["t"] == [True, True, True]
    assert data["f"] is False


def test_nulls() -> None:
    assert load_yaml("a: null\nb: ~\nc:\nd: Null\n", "f").data == {
        "a": None,
        "b": None,
        "c": None,
        "d": None,
    }


def test_decimals_come_from_the_source_text() -> None:
    data = load_yaml("a: 1.10\nb: -0.5\nc: .5\nd: 1e3\ne: 0.1\nf: 12\n", "f").data
    assert isinstance(data["a"], Decimal) and str(data["a"]) == "1.10"  # trailing zero kept
    assert data["b"] == Decimal("-0.5")
    assert data["c"] == Decimal("0.5")
    assert data["d"] == Decimal("1000") and isinstance(data["d"], Decimal)
    assert data["e"] == Decimal("0.1")  # a float would be 0.1000000000000000055511151231257827
    assert data["f"] == 12 and type(data["f"]) is int


def test_quoted_scalars_and_dates_stay_text() -> None:
    data = load_yaml("a: '1.10'\nb: \"12\"\nc: 2020-01-01\nd: 12:30:00Z\n", "f").data
    assert data == {"a": "1.10", "b": "12", "c": "2020-01-01", "d": "12:30:00Z"}


@pytest.mark.parametrize(
    "value",
    [
        "0x10",
        "0o17",
        "0b101",
        "1_000",
        "1_000.5",
        "1:20",
        "190:20:30.15",
        ".inf",
        "-.inf",
        "+.Inf",
        ".nan",
        ".NaN",
        "0101",
        "-007",
    ],
)
def test_lossy_or_surprising_numbers_are_rejected(value: str) -> None:
    [found] = problems(f"figure: {value}\n")
    assert found.code == "yaml.number"
    assert found.location == Location("rules/x.yaml", 1, 9, "figure")
    assert "quote it" in found.message


def test_keys_are_their_source_text() -> None:
    data = load_yaml("0101: a\n8471: b\nNO: c\ntrue: d\n1.10: e\n~: f\n", "f").data
    assert list(data) == ["0101", "8471", "NO", "true", "1.10", "~"]


def test_merge_key_is_rejected() -> None:
    [found] = problems("base: &b {x: 1}\nuse:\n  <<: *b\n  y: 2\n")
    assert (found.code, found.location.line, found.location.col) == ("yaml.merge_key", 3, 3)


def test_aliases_resolve_and_mark_where_they_are_used() -> None:
    text = (
        "base: &b\n"  # 1
        "  x: 1\n"  # 2
        "use: *b\n"  # 3
        "list:\n"  # 4
        "  - *b\n"  # 5
    )
    loaded = load_yaml(text, "f")
    assert loaded.data["use"] == {"x": 1} and loaded.data["list"] == [{"x": 1}]
    loaded.data["use"]["x"] = 2  # each use is its own value, not a shared object
    assert loaded.data["base"] == {"x": 1}
    assert loaded.marks["use"].line == 3 and loaded.marks["list[0]"].line == 5
    assert loaded.marks["use.x"].line == 2  # the value itself is written in the anchor


def test_recursive_alias_is_an_error() -> None:
    [found] = problems("a: &a [1, *a]\n")
    assert found.code == "yaml.alias" and found.location.path == "a[1]"


def test_alias_bombs_are_bounded() -> None:
    lines = ['l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, 7):  # 10**6 values once expanded
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 10) + "]")
    found = problems("\n".join(lines) + "\n")
    assert [p.code for p in found] == ["yaml.alias"]


def test_non_scalar_key_is_rejected() -> None:
    [found] = problems("? [a, b]\n: 1\n")
    assert found.code == "yaml.key" and found.location.line == 1


def test_syntax_error_has_line_and_column() -> None:
    [found] = problems("key: value\n  bad: indent\n")
    assert found.code == "yaml.syntax"
    # Line 2 is "  bad: indent"; the ':' that cannot start a value here is column 6.
    assert (found.location.line, found.location.col) == (2, 6)


def test_control_character_is_a_syntax_error_with_its_line() -> None:
    [found] = problems("a: 1\nb: x\x01y\n")
    assert found.code == "yaml.syntax"
    assert (found.location.line, found.location.col) == (2, 5)


def test_more_than_one_document_is_rejected() -> None:
    [found] = problems("a: 1\n---\nb: 2\n")
    assert found.code == "yaml.multiple_documents"
    assert found.location.line == 2


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_document_is_none(text: str) -> None:
    loaded = load_yaml(text, "f")
    assert loaded.data is None
    # Nothing was written: a problem about it points at where the document should start,
    # so a truncated rule file is reported with a line (issue 12).
    assert loaded.locate("anything") == Location("f", 1, 1, "anything")


def test_all_problems_are_collected() -> None:
    found = problems("a: 0x1\nb: !!python/none x\nc: 1\nc: 2\nd: .nan\n")
    assert [(p.code, p.location.line) for p in found] == [
        ("yaml.number", 1),
        ("yaml.tag", 2),
        ("yaml.duplicate_key", 4),
        ("yaml.number", 5),
    ]


NESTED = (
    "pack: standard\n"  # 1
    "charges:\n"  # 2
    "  - type: freight\n"  # 3
    "    amount: 12.50\n"  # 4
    "  - type: handling\n"  # 5
    "    rates:\n"  # 6
    "      EUR: 1.08\n"  # 7
    '      "odd key": 2\n'  # 8
)


def test_marks_and_key_marks_of_nested_paths() -> None:
    loaded = load_yaml(NESTED, "rules/p.yaml")
    assert loaded.marks[""] == Location("rules/p.yaml", 1, 1, "")
    assert loaded.key_marks["charges"] == Location("rules/p.yaml", 2, 1, "charges")
    assert loaded.marks["charges"] == Location("rules/p.yaml", 3, 3, "charges")
    assert loaded.marks["charges[0]"] == Location("rules/p.yaml", 3, 5, "charges[0]")
    assert loaded.key_marks["charges[0].amount"] == Location(
        "rules/p.yaml", 4, 5, "charges[0].amount"
    )
    assert loaded.marks["charges[0].amount"] == Location("rules/p.yaml", 4, 13, "charges[0].amount")
    assert loaded.marks["charges[1].rates.EUR"].line == 7
    assert loaded.marks['charges[1].rates["odd key"]'].line == 8
    assert "charges[1]" not in loaded.key_marks  # list items have no key


def test_locate_exact_key_and_nearest_ancestor() -> None:
    loaded = load_yaml(NESTED, "rules/p.yaml")
    assert loaded.locate("charges[0].amount") == Location(
        "rules/p.yaml", 4, 13, "charges[0].amount"
    )
    assert loaded.locate(["charges", 0, "amount"], key=True) == Location(
        "rules/p.yaml", 4, 5, "charges[0].amount"
    )
    # Absent paths fall back to the nearest ancestor that was written, keeping the path.
    assert loaded.locate("charges[1].currency") == Location(
        "rules/p.yaml", 5, 5, "charges[1].currency"
    )
    assert loaded.locate('charges[1].rates["odd key"].x').line == 8
    assert loaded.locate("charges[7].amount").line == 3
    assert loaded.locate("nowhere.at.all") == Location("rules/p.yaml", 1, 1, "nowhere.at.all")
    # A list item has no key: key=True falls back to its value.
    assert loaded.locate("charges[1]", key=True).line == 5


def test_facts_flavour_raises_facts_error() -> None:
    with pytest.raises(FactsError) as caught:
        parse_yaml_data("a: 1\na: 2\n", "shipment.yaml")
    assert caught.value.problems[0].code == "yaml.duplicate_key"
    assert isinstance(parse_yaml_data("a: 1\n", "s.yaml"), LoadedYaml)


def test_marks_are_read_only() -> None:
    loaded = load_yaml("a: 1\n", "f")
    with pytest.raises(TypeError):
        loaded.marks["b"] = Location()  # type: ignore[index]


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_any_decimal_written_plainly_reads_back_exactly(number: Decimal) -> None:
    text = plain(number)
    value = load_yaml(f"figure: {text}\n", "f").data["figure"]
    if "." in text:
        assert isinstance(value, Decimal) and plain(value) == text  # same digits, same scale
    else:
        assert value == int(text) and type(value) is int


# Excluded: surrogates, control characters and unassigned code points (YAML forbids them
# in a document) and line/paragraph separators (YAML folds line breaks in quoted text).
PRINTABLE = st.characters(codec="utf-8", exclude_categories=["Cs", "Cc", "Cn", "Zl", "Zp"])


@given(st.text(alphabet=PRINTABLE, max_size=30))
def test_any_quoted_text_reads_back_as_that_text(text: str) -> None:
    quoted = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    assert load_yaml(f"k: {quoted}\n", "f").data == {"k": text}


# --- libyaml and the Python composer agree ------------------------------------------
# Documents are composed by libyaml when PyYAML has it (PyPI's wheels do); what libyaml
# refuses, and documents with aliases, go to the Python composer. Both must give the
# very same nodes, marks, data and problems.

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(
    str(path.relative_to(ROOT))
    for folder in ("policies", "rules", "examples")
    for path in (ROOT / folder).rglob("*.y*ml")
)
needs_libyaml = pytest.mark.skipif(not yamlfile.WITH_LIBYAML, reason="PyYAML without libyaml")


def outcome(load: Any, text: str) -> Any:
    """What a loader makes of `text`: data (with each Decimal's digits), marks and key
    marks; or the problems it raises."""
    try:
        loaded = load(text, "rules/x.yaml", RulesError)
    except RulesError as error:
        return ("problems", list(error.problems))
    return ("loaded", exact(loaded.data), dict(loaded.marks), dict(loaded.key_marks))


def exact(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: exact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [exact(item) for item in value]
    return (type(value).__name__, repr(value))


def python_only(text: str, file: str, error_class: type[TivError]) -> LoadedYaml:
    return yamlfile._load_with_python(text, file, error_class)


def node_tree(node: Any) -> Any:
    """A node as plain data: kind, tag, value, and where it starts and ends."""
    marks = (node.start_mark.line, node.start_mark.column, node.end_mark.line, node.end_mark.column)
    if isinstance(node.value, str):
        # libyaml writes a plain scalar's style as "", PyYAML as None; both mean plain.
        return ("scalar", node.tag, node.value, node.style or None, marks)
    if isinstance(node.value[0] if node.value else None, tuple) or node.id == "mapping":
        children = [(node_tree(key), node_tree(value)) for key, value in node.value]
        return ("mapping", node.tag, children, node.flow_style, marks)
    return ("sequence", node.tag, [node_tree(item) for item in node.value], node.flow_style, marks)


@needs_libyaml
@pytest.mark.parametrize("file", SHIPPED)
def test_libyaml_composes_every_shipped_file_as_the_python_composer_does(file: str) -> None:
    text = (ROOT / file).read_text(encoding="utf-8")
    assert yamlfile._CLoader is not None
    c_loader, py_loader = yamlfile._CLoader(text), yamlfile._Loader(text)
    try:
        assert node_tree(c_loader.get_single_node()) == node_tree(py_loader.get_single_node())
    finally:
        c_loader.dispose()
        py_loader.dispose()
    assert outcome(yamlfile._load, text) == outcome(python_only, text)


@needs_libyaml
def test_aliases_are_placed_where_written_on_the_libyaml_road() -> None:
    text = "base: &b\n  x: 1\nuse: *b\nlist:\n  - *b\n"
    assert outcome(yamlfile._load, text) == outcome(python_only, text)
    assert load_yaml(text, "f").marks["list[0]"].line == 5


FRAGMENTS = st.sampled_from(
    [
        "a",
        "b",
        "NO",
        "yes",
        "~",
        "null",
        "true",
        "False",
        "1.10",
        "0101",
        "12",
        "-3",
        "1e3",
        ".inf",
        "0x1F",
        "1_000",
        "1:20",
        "2025-01-01",
        "'q'",
        '"d\\n"',
        "!!str 5",
        "!!int 7",
        "!!float 2",
        "!custom x",
        "<<",
        "&a 1",
        "*a",
        "&m {k: v}",
        "*m",
        "[1, 2]",
        "{x: 1, x: 2}",
        "[a, [b, [c]]]",
        "|\n  block\n",
        ">-\n  f\n",
        "é😀",
        "a: b",
        "- x",
        "? k",
        "%",
        "@",
        "`",
        "\t",
        "x\x01",
        "\ufeff",
        "#c",
        "{a: }",
        "{a, b: }",
        "[a, ]",
        "{? x}",
        "!!str",
        "''",
        "- ",
        "x\ufffe",
        "\xa0y",
        "z\u3000",
        "\x0b",
        "\x0c",
        "w\x7f",
        "\x85v",
        "a # c",
        "'it''s'",
        '"\\t"',
        "x:y",
        "x :y",
        "x\\",
        "%YAML 1.1",
        "!<tag:yaml.org,2002:str> s",
        "!!map {}",
        "!!seq []",
        "&x [*x]",
        "k" * 1030,
        "a != b",
        "!= b",
        "x !=y",
        "[a != b, !c]",
    ]
)


@st.composite
def yaml_texts(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        indent = " " * draw(st.sampled_from([0, 0, 2, 4]))
        form = draw(st.sampled_from(["{k}: {v}", "- {v}", "{k}:", "{v}", "---", "{k}: [{v}, {v}]"]))
        key = draw(st.sampled_from(["a", "b", "a", "8471", '"8471"', "<<", "? [x]", "&k c", "*k"]))
        line = form.replace("{k}", key)
        while "{v}" in line:
            line = line.replace("{v}", draw(FRAGMENTS), 1)
        lines.append(indent + line)
    newline = draw(st.sampled_from(["\n", "\n", "\r\n", "\r", "\x85", "\u2028"]))
    return newline.join(lines) + draw(st.sampled_from([newline, "", "\n\n"]))


@needs_libyaml
@settings(max_examples=500, deadline=None)
@given(yaml_texts())
def test_libyaml_and_python_give_the_same_result_on_any_text(text: str) -> None:
    assert outcome(yamlfile._load, text) == outcome(python_only, text)


@given(st.lists(st.integers(0, 99) | st.text(max_size=6), max_size=6))
def test_paths_built_step_by_step_are_json_paths(parts: list[str | int]) -> None:
    path = ""
    for part in parts:
        path = f"{path}[{part}]" if isinstance(part, int) else yamlfile._child_path(path, part)
    assert path == json_path(parts)


# --- the size limit (issue 12): refused before parsing, naming the file and the limit -----

FIFTY_MB_OF_ITEMS = "items:\n" + "  - a\n" * (50 * 1024 * 1024 // 6)  # parsed: 90 s, 1.2 GB


@pytest.mark.parametrize(
    "load, error_class, what",
    [(load_yaml, RulesError, "rule file"), (parse_yaml_data, FactsError, "facts document")],
)
def test_a_50_mb_yaml_of_list_items_is_refused_before_parsing(
    load: Any, error_class: type[TivError], what: str
) -> None:
    with pytest.raises(error_class) as caught:
        load(FIFTY_MB_OF_ITEMS, "big.yaml")
    (problem,) = caught.value.problems
    assert problem.code == "input.too_large" and problem.location.file == "big.yaml"
    # 7 + 8,738,133 x 6 bytes = 52,428,805; the default limit is 2 MiB = 2,097,152.
    assert f"the {what} is 52,428,805 bytes, over the limit of 2,097,152 bytes" in str(problem)
    assert "\n" not in str(problem)


def test_the_limit_counts_bytes_and_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIV_MAX_INPUT_BYTES", "64")
    text = "a: " + "é" * 31 + "\n"  # 35 characters, 66 bytes (é is 2 bytes in UTF-8)
    with pytest.raises(RulesError, match="66 bytes, over the limit of 64 bytes"):
        load_yaml(text, "f.yaml")
    assert load_yaml("a: " + "e" * 31 + "\n", "f.yaml").data == {"a": "e" * 31}  # 35 bytes
    monkeypatch.setenv("TIV_MAX_INPUT_BYTES", "lots")
    with pytest.raises(RulesError, match="TIV_MAX_INPUT_BYTES='lots' is not a whole number"):
        load_yaml("a: 1\n", "f.yaml")


# --- the input size limit (issue 12) ----------------------------------------------------


def test_oversized_rule_files_and_facts_are_refused_before_parsing(tmp_path: Path) -> None:
    for folder in ("policies", "rules"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    big = "x:\n" + "  - a\n" * 500_000  # 3,000,003 bytes, over the 2 MiB default
    (tmp_path / "policies/standard/9.9.9.yaml").write_text(big, encoding="utf-8")
    ran = run_cli("--rules", tmp_path, "validate")
    assert ran.returncode == 3 and "Traceback" not in ran.stderr
    assert (
        "policies/standard/9.9.9.yaml: the rule file is 3,000,003 bytes, over the limit of "
        "2,097,152 bytes" in ran.stderr
    )
    facts = tmp_path / "facts.yaml"
    facts.write_text(big, encoding="utf-8")
    ran = run_cli("value", facts, "--policy", "standard")
    assert ran.returncode == 2 and "facts.yaml: the facts document is 3,000,003 bytes" in ran.stderr
    ran = run_cli("value", "-", "--policy", "standard", stdin=big)
    assert ran.returncode == 2 and "<stdin>: the facts document is over the limit" in ran.stderr
    # A smaller limit on the command line refuses the shipped 8 KiB pack itself.
    ran = run_cli("--max-input", "1000", "--rules", ROOT, "validate")
    assert ran.returncode == 3 and "over the limit of 1,000 bytes" in ran.stderr
