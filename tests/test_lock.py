"""rules.lock: published versions are immutable, drafts are free, and validate says which file."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from engine import RulesError, load_rules, value
from engine.compliance.lock import LOCK_FILE, check_lock, read_lock, write_lock
from tests.conftest import ROOT, Ran, mini, repo, run_cli, shipment

PACK = "policies/standard/1.0.0.yaml"
DRAFT = "policies/standard/1.1.0.yaml"


def make_repo(tmp_path: Path, *, draft: bool = True) -> Path:
    """A copy of the shipped rule repository with only the standard pack (others may
    extend it), and a draft 1.1.0 of it."""
    root = tmp_path / "repo"
    for folder in ("policies", "rules", "examples"):
        shutil.copytree(ROOT / folder, root / folder)
    for pack in (root / "policies").iterdir():
        if pack.name != "standard":
            shutil.rmtree(pack)
    for version in (root / "policies" / "standard").iterdir():
        if version.name != "1.0.0.yaml":
            version.unlink()
    (root / PACK).write_text(_open_ended())
    (root / LOCK_FILE).unlink(missing_ok=True)
    if draft:
        (root / DRAFT).write_text(_draft_text())
    return root


def _open_ended() -> str:
    """standard 1.0.0 as first published, before 1.1.0 closed its window."""
    text = (ROOT / PACK).read_text()
    return text.replace("effective_to: 2027-01-01\n", "", 1)


def _draft_text() -> str:
    text = _open_ended()
    for old, new in (
        ("version: 1.0.0", "version: 1.1.0"),
        ("status: published", "status: draft"),
    ):
        assert old in text
        text = text.replace(old, new, 1)
    return text


def tiv(root: Path, *args: str) -> Ran:
    return run_cli("--rules", root, *args, cwd=root)


def codes(problems: list) -> list[tuple[str, str]]:
    return [(p.code, p.location.file) for p in problems]


def test_lock_lists_published_and_reference_files_in_sha256sum_form(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    rules = load_rules(root)
    changes = write_lock(root, rules)
    text = (root / LOCK_FILE).read_text()
    entries = [line.split("  ") for line in text.splitlines() if not line.startswith("#")]
    paths = [path for _, path in entries]
    # Every published file and every reference file, sorted by path; the draft is not there.
    expected = sorted(
        f.path
        for f in rules.files
        if f.status == "published" or f.path.startswith("rules/reference/")
    )
    assert paths == expected and DRAFT not in paths and PACK in paths
    assert "rules/reference/currencies.yaml" in paths
    assert list(changes.added) == expected
    for digest, path in entries:
        assert digest == hashlib.sha256((root / path).read_bytes()).hexdigest()
    assert text.endswith("\n")
    # Writing again changes nothing, byte for byte: the format is stable.
    assert not write_lock(root, rules).changed
    assert (root / LOCK_FILE).read_text() == text
    assert check_lock(root, rules) == []
    # The file is what sha256sum writes, so a reviewer can check it without tiv.
    if shutil.which("sha256sum"):
        check = subprocess.run(["sha256sum", "-c", LOCK_FILE], cwd=root, capture_output=True)
        assert check.returncode == 0, check.stdout


def test_a_changed_published_file_fails_validate_naming_it(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    write_lock(root, load_rules(root))
    pack = root / PACK
    pack.write_text(pack.read_text().replace("value: 0.10", "value: 0.11"))
    problems = check_lock(root, load_rules(root))
    assert codes(problems) == [("lock.immutable", PACK)]
    assert "published versions are immutable: copy to a new version" in problems[0].message

    proc = tiv(root, "validate")
    assert proc.returncode == 3
    assert f"{PACK}: published versions are immutable: copy to a new version" in proc.stderr
    assert "Traceback" not in proc.stderr
    # `tiv lock` refuses to bless the change and leaves the lock as it was.
    before = (root / LOCK_FILE).read_text()
    proc = tiv(root, "lock")
    assert proc.returncode == 3 and PACK in proc.stderr and "immutable" in proc.stderr
    assert (root / LOCK_FILE).read_text() == before
    with pytest.raises(RulesError):
        write_lock(root, load_rules(root))


def test_a_new_published_file_is_reported_until_locked(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    write_lock(root, load_rules(root))
    pack = root / PACK
    other = root / "policies/other/1.0.0.yaml"
    other.parent.mkdir()
    other.write_text(pack.read_text().replace("id: standard", "id: other"))
    problems = check_lock(root, load_rules(root))
    assert codes(problems) == [("lock.unlocked", "policies/other/1.0.0.yaml")]
    assert "run tiv lock" in problems[0].message

    proc = tiv(root, "validate")
    assert proc.returncode == 3 and "policies/other/1.0.0.yaml: this published version" in (
        proc.stderr
    )
    proc = tiv(root, "lock")
    assert proc.returncode == 0 and "1 added (policies/other/1.0.0.yaml)" in proc.stdout
    assert tiv(root, "validate").returncode == 0


def test_drafts_are_free_to_change(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    write_lock(root, load_rules(root))
    draft = root / DRAFT
    draft.write_text(draft.read_text().replace("value: 0.10", "value: 0.12"))
    assert check_lock(root, load_rules(root)) == []
    assert DRAFT not in (read_lock(root)[0] or {})


def test_unpublishing_a_published_version_is_a_change_too(tmp_path: Path) -> None:
    root = make_repo(tmp_path, draft=False)
    write_lock(root, load_rules(root))
    pack = root / PACK
    pack.write_text(pack.read_text().replace("status: published", "status: draft"))
    problems = check_lock(root, load_rules(root))
    assert codes(problems) == [("lock.immutable", PACK)]
    assert "now a draft" in problems[0].message


def test_a_deleted_published_file_is_reported(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    write_lock(root, load_rules(root))
    country = next(p for p in (root / "rules/countries").rglob("*.yaml"))
    relative = country.relative_to(root).as_posix()
    locked = read_lock(root)[0] or {}
    assert relative in locked
    country.unlink()
    try:
        rules = load_rules(root)
    except RulesError:
        pytest.skip("the remaining country files need the one removed")
    problems = check_lock(root, rules)
    assert ("lock.deleted", relative) in codes(problems)
    # Forcing drops it from the lock, and says so.
    changes = write_lock(root, rules, force=True)
    assert relative in changes.removed and relative in changes.forced


def test_reference_data_changes_are_reported_then_recorded_by_tiv_lock(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    write_lock(root, load_rules(root))
    currencies = root / "rules/reference/currencies.yaml"
    currencies.write_text(currencies.read_text() + "# checked again\n")
    problems = check_lock(root, load_rules(root))
    assert codes(problems) == [("lock.reference_changed", "rules/reference/currencies.yaml")]
    changes = write_lock(root, load_rules(root))  # no force needed: reference data evolves
    assert changes.updated == ("rules/reference/currencies.yaml",)
    assert check_lock(root, load_rules(root)) == []


def test_no_lock_and_a_malformed_lock_are_reported_with_their_line(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    rules = load_rules(root)
    assert codes(check_lock(root, rules)) == [("lock.missing", LOCK_FILE)]
    write_lock(root, rules)
    lock = root / LOCK_FILE
    lines = lock.read_text().splitlines()
    lines[4] = "not a sha  " + lines[4].split("  ")[1]
    lock.write_text("\n".join(lines) + "\n")
    problems = check_lock(root, rules)
    assert problems[0].code == "lock.syntax" and problems[0].location.line == 5
    # The file whose line is unreadable is then unlocked: both are said.
    assert problems[1].code == "lock.unlocked"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_closing_an_open_window_is_the_one_change_tiv_lock_records(tmp_path: Path) -> None:
    root = make_repo(tmp_path, draft=False)
    write_lock(root, load_rules(root))
    env = {
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org",
        "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
    }  # fmt: skip
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "published"]):
        subprocess.run(["git", *args], cwd=root, check=True, env=env, capture_output=True)
    pack = root / PACK
    published = pack.read_text()
    assert "effective_to" not in published
    # 1.0.0 ends where a published 1.1.0 starts: its window closes, nothing else changes.
    closed = "effective_from: 2020-01-01\neffective_to: 2027-01-01"
    pack.write_text(published.replace("effective_from: 2020-01-01", closed))
    successor = _draft_text().replace("status: draft", "status: published")
    (root / DRAFT).write_text(
        successor.replace("effective_from: 2020-01-01", "effective_from: 2027-01-01")
    )
    problems = check_lock(root, load_rules(root))
    assert codes(problems) == [("lock.window_closed", PACK), ("lock.unlocked", DRAFT)]
    assert "effective_to: 2027-01-01" in problems[0].message
    changes = write_lock(root, load_rules(root))  # no force needed
    assert changes.updated == (PACK,) and changes.added == (DRAFT,) and not changes.forced
    assert check_lock(root, load_rules(root)) == []

    # Closing the window and changing a figure is not allowed.
    subprocess.run(["git", "commit", "-qam", "closed"], cwd=root, check=True, env=env)
    pack.write_text(pack.read_text().replace("value: 0.10", "value: 0.11"))
    assert codes(check_lock(root, load_rules(root))) == [("lock.immutable", PACK)]


# Exact `extends`: a published pack keeps the base it took effect with; a draft follows
# its range. Hand-made in-memory repositories: `mini` (margin 10%) and a child of it.
CHILD = """\
kind: policy
schema_version: 1
id: child
version: 1.0.0
status: published
effective_from: 2021-01-01
title: Child
description: Extends mini and changes no figure.
provenance: {author: a, approver: b, approved_on: 2021-01-01, changelog: c}
extends: mini@^1
"""
EFFECTIVE_TO_2023 = "effective_from: 2020-01-01\neffective_to: 2023-01-01"
EARLY_CLOSE = "effective_from: 2020-01-01\neffective_to: 2020-06-01"
# mini 1.0.0's window closes where 1.1.0 (margin 20%) starts: the project's lock flow.
MINI_CLOSED = mini(replace={"effective_from: 2020-01-01": EFFECTIVE_TO_2023})
MINI_NEXT = mini(
    replace={
        "version: 1.0.0": "version: 1.1.0",
        "effective_from: 2020-01-01": "effective_from: 2023-01-01",
        "margin_rate: 0.10": "margin_rate: 0.20",
    }
)


def _files_of(result: object) -> list[tuple[str, str]]:
    return [(f.id, f.version) for f in result.policy.files]  # type: ignore[attr-defined]


def test_a_new_base_version_leaves_a_published_pack_on_its_base() -> None:
    before = value(load_rules(files=repo(mini(), CHILD)), shipment(), policy="child")
    rules = load_rules(files=repo(MINI_CLOSED, MINI_NEXT, CHILD))
    after = value(rules, shipment(), policy="child")
    # T-1 is dated 2024-01-15, inside mini 1.1.0's window, yet child 1.0.0 (from 2021-01-01)
    # keeps mini 1.0.0: 1,000.00 + 1,000.00 × 0.10 = 1,100.00, before and after.
    assert before.total_insured_value == after.total_insured_value == Decimal("1100.00")
    assert _files_of(after) == [("mini", "1.0.0"), ("child", "1.0.0")]
    # mini itself moved on: 1,000.00 + 1,000.00 × 0.20 = 1,200.00.
    assert value(rules, shipment(), policy="mini").total_insured_value == Decimal("1200.00")


def test_a_draft_pack_follows_its_range() -> None:
    draft = CHILD.replace("version: 1.0.0", "version: 1.1.0").replace(
        "status: published", "status: draft"
    )
    rules = load_rules(files=repo(MINI_CLOSED, MINI_NEXT, CHILD, draft))
    result = value(rules, shipment(), policy="child@1.1.0", allow_draft=True)
    # ^1 -> the highest 1.x, mini 1.1.0: 1,000.00 + 1,000.00 × 0.20 = 1,200.00.
    assert result.total_insured_value == Decimal("1200.00")
    assert _files_of(result) == [("mini", "1.1.0"), ("child", "1.1.0")]


def test_a_published_pack_cannot_extend_a_base_that_starts_after_it() -> None:
    early = CHILD.replace("mini@^1", "mini@1.1.0")
    with pytest.raises(RulesError) as info:
        load_rules(files=repo(MINI_CLOSED, MINI_NEXT, early))
    assert info.value.problems[0].code == "pack.missing_base"
    assert "matches 1.1.0 taking effect by 2021-01-01" in info.value.problems[0].message
    assert str(info.value.problems[0].location).startswith("policies/child/1.0.0.yaml:10:")


def _write_repo(root: Path, files: dict[str, str]) -> Path:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def test_tiv_lock_pins_the_base_and_validate_names_the_extends_line_when_it_moves(
    tmp_path: Path,
) -> None:
    root = _write_repo(tmp_path, repo(mini(), CHILD))
    changes = write_lock(root, load_rules(root))
    assert changes.pinned == ("policies/child/1.0.0.yaml -> mini@1.0.0",)
    assert "# extends policies/child/1.0.0.yaml -> mini@1.0.0\n" in (root / LOCK_FILE).read_text()
    assert check_lock(root, load_rules(root)) == []
    assert write_lock(root, load_rules(root)).pinned == ()  # recorded once

    # A new mini published with a window that starts before the child's: the child's
    # extends would now resolve to it. validate names the child's extends line; tiv lock
    # refuses to re-pin it.
    _write_repo(
        root,
        {
            "policies/mini/1.0.0.yaml": mini(replace={"effective_from: 2020-01-01": EARLY_CLOSE}),
            "policies/mini/1.1.0.yaml": MINI_NEXT.replace("2023-01-01", "2020-06-01"),
        },
    )
    problems = [p for p in check_lock(root, load_rules(root)) if p.code.startswith("lock.base")]
    assert [(p.code, str(p.location)) for p in problems] == [
        ("lock.base_changed", "policies/child/1.0.0.yaml:10:10")
    ]
    assert "now resolves to mini@1.1.0, but rules.lock pins mini@1.0.0" in problems[0].message
    with pytest.raises(RulesError, match=r"pins mini@1\.0\.0"):
        write_lock(root, load_rules(root))
    ran = tiv(root, "validate")
    assert ran.returncode == 3
    assert (
        "policies/child/1.0.0.yaml:10:10: extends: mini@^1 now resolves to mini@1.1.0" in ran.stderr
    )


def test_a_published_pack_not_yet_pinned_is_reported(tmp_path: Path) -> None:
    root = _write_repo(tmp_path, repo(mini()))
    write_lock(root, load_rules(root))
    _write_repo(root, {"policies/child/1.0.0.yaml": CHILD})
    problems = check_lock(root, load_rules(root))
    assert [p.code for p in problems] == ["lock.unlocked", "lock.unpinned"]
    assert "run tiv lock to pin it" in problems[1].message
    write_lock(root, load_rules(root))
    assert check_lock(root, load_rules(root)) == []
