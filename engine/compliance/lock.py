"""Published versions never change: `rules.lock` records the bytes of every file that values.

In: the rule repository's root and its loaded `RuleSet`. Out: `check_lock` lists every
`Problem` between the lock and the files (a published file whose bytes changed, a
published file not yet locked, a locked file that is gone); `write_lock` records the
current files, refusing to re-record a changed or deleted published file unless forced.

Locked: every rule file whose status is `published` (policy packs, country rule files)
and the reference data under `rules/reference/`, which has no status but changes figures
(minor units decide rounding). Drafts are free to change and are never locked.

The format is the one `sha256sum` writes, so a reviewer can check it with no tiv at all
(`sha256sum -c rules.lock` from the repository root): comment lines start with `#`; every
other line is the lowercase hex sha256 of the file's bytes, two spaces, and its
POSIX path relative to the root. Lines are sorted by path, one per file, with a final
newline, so the file is stable and its diffs read line by line.

A published file that changed is reported on every `tiv validate` until its bytes are
restored: the fix is a new version (copy the file to the next version number), because
audit records cite the sha256 of the bytes that valued. One change is allowed, because a
new version could otherwise never follow an open-ended one: adding `effective_to` to a
published version that had none, with nothing else changed in meaning (checked against
the locked bytes, found in git history); `tiv lock` records it, and replays of older
records read the old bytes from git. Reference data may change (ISO lists do); `tiv lock`
records it too. Both are deliberate, reviewed steps.

A published pack's `extends` resolves to one exact base version (the highest published
match that had taken effect when the pack took effect, see `ruleset._resolve`), and the
lock records it on a comment line that `sha256sum -c` skips:
`# extends policies/acme-marine/1.0.0.yaml -> standard@1.0.0`. `tiv validate` fails at the
pack's `extends` line when the resolution differs from that record, so a new base
version changes no published pack silently. Drafts follow their range and are not pinned.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from engine.atomic import write_atomic
from engine.errors import Location, Problem, RulesError
from engine.loading.yamlfile import load_yaml
from engine.ruleset import RuleFile, RuleSet

LOCK_FILE = "rules.lock"
REFERENCE_FOLDER = "rules/reference/"

_LINE = re.compile(r"([0-9a-f]{64})  (\S(?:.*\S)?)")
_PIN = re.compile(r"# extends (\S+) -> (\S+@\S+)")
_PINS_HEADER = (
    "# The exact base of every published pack that extends another (`extends` resolves to it;\n"
    "# tiv validate fails at the pack's extends line if that ever changes):\n"
)
_HEADER = """\
# rules.lock: the sha256 of every published rule file and of the reference data.
# Written by `tiv lock`, checked by `tiv validate`. Published versions are immutable:
# to change one, copy it to a new version. Check by hand with `sha256sum -c rules.lock`.
"""


@dataclass(frozen=True)
class LockChanges:
    """What `write_lock` did: paths added, re-recorded and dropped."""

    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    forced: tuple[str, ...] = field(default=())  # published files re-recorded by force
    pinned: tuple[str, ...] = field(default=())  # `path -> base@version`, newly recorded

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed or self.pinned)


def lockable(file: RuleFile) -> bool:
    """A file whose bytes decide figures for good: published, or reference data."""
    return file.status == "published" or (
        file.status is None and file.path.startswith(REFERENCE_FOLDER)
    )


def read_lock(root: Path) -> tuple[dict[str, str] | None, list[Problem]]:
    """`path -> sha256` from root/rules.lock; None when there is no lock file."""
    path = Path(root) / LOCK_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, []
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        return {}, [Problem("lock.unreadable", f"cannot read {LOCK_FILE}: {reason}", _at(0))]
    entries: dict[str, str] = {}
    problems: list[Problem] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            problems.append(
                Problem(
                    "lock.syntax",
                    "expected `<sha256>  <path>` (64 hex digits, two spaces, a path); "
                    "run tiv lock to rewrite the file",
                    _at(number),
                )
            )
            continue
        digest, name = match.groups()
        if name in entries:
            problems.append(
                Problem("lock.duplicate", f"{name} is listed twice; keep one line", _at(number))
            )
            continue
        entries[name] = digest
    return entries, problems


def read_pins(root: Path) -> dict[str, str]:
    """`pack path -> base@version` from the `# extends` lines of root/rules.lock."""
    try:
        text = (Path(root) / LOCK_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    return {m[1]: m[2] for line in text.splitlines() if (m := _PIN.fullmatch(line))}


def resolved_bases(rules: RuleSet) -> dict[str, str]:
    """`pack path -> base@version` for every published pack that extends another."""
    found: dict[str, str] = {}
    for versions in rules.packs.values():
        for pack in versions:
            if pack.status == "published" and len(pack.files) > 1:
                base = pack.files[-2]  # files run base first; the pack's own file is last
                found[pack.source] = f"{base.id}@{base.version}"
    return found


def _check_pins(root: Path, rules: RuleSet) -> list[Problem]:
    pins = read_pins(root)
    problems: list[Problem] = []
    for path, base in sorted(resolved_bases(rules).items()):
        pinned = pins.get(path)
        if pinned == base:
            continue
        where, spec = _extends_of(Path(root), path)
        if pinned is None:
            problems.append(
                Problem(
                    "lock.unpinned",
                    f"{spec} resolves to {base}, which {LOCK_FILE} does not record; "
                    "run tiv lock to pin it",
                    where,
                )
            )
        else:
            problems.append(
                Problem(
                    "lock.base_changed",
                    f"{spec} now resolves to {base}, but {LOCK_FILE} pins {pinned}: "
                    "a published pack's base never changes. Give the new base version an "
                    "effective_from after this pack's, or publish a new version of this pack "
                    "that extends it",
                    where,
                )
            )
    return problems


def _extends_of(root: Path, path: str) -> tuple[Location, str]:
    """The `extends` line of a pack file, and what it says."""
    try:
        loaded = load_yaml((root / path).read_text(encoding="utf-8"), path)
    except (RulesError, OSError, UnicodeDecodeError):
        return Location(path), "?"
    spec = loaded.data.get("extends") if isinstance(loaded.data, dict) else None
    return loaded.locate("extends"), str(spec)


def check_lock(root: Path, rules: RuleSet) -> list[Problem]:
    """Every disagreement between rules.lock and the repository's files, located by file."""
    locked, problems = read_lock(root)
    if locked is None:
        if any(lockable(f) for f in rules.files):
            return [
                Problem(
                    "lock.missing",
                    "the file is missing, so published rule files are not locked; "
                    "run tiv lock and commit it",
                    _at(0),
                )
            ]
        return []
    current = {f.path: f for f in rules.files}
    for path, digest in sorted(locked.items()):
        file = current.get(path)
        if file is None:
            problems.append(
                Problem(
                    "lock.deleted",
                    "a locked rule file is gone: published versions are never deleted, "
                    "since audit records cite them; restore it from version control",
                    Location(path),
                )
            )
        elif file.sha256 != digest:
            problems.append(_changed(file, digest, Path(root)))
    for file in rules.files:
        if lockable(file) and file.path not in locked:
            what = "published version" if file.status == "published" else "reference file"
            problems.append(
                Problem(
                    "lock.unlocked",
                    f"this {what} is not in {LOCK_FILE}; run tiv lock to record it",
                    Location(file.path),
                )
            )
    problems.extend(_check_pins(root, rules))
    return problems


def _changed(file: RuleFile, digest: str, root: Path) -> Problem:
    shas = f"sha256 {file.sha256[:12]}…, locked {digest[:12]}…"
    closed = _window_closed(root, file, digest)
    if closed is not None:
        return Problem(
            "lock.window_closed",
            f"the only change since it was locked is effective_to: {closed}, which ends an "
            "open-ended window so a new version can follow; run tiv lock to record it",
            Location(file.path),
        )
    if file.path.startswith(REFERENCE_FOLDER) and file.status is None:
        return Problem(
            "lock.reference_changed",
            f"reference data changed since it was locked ({shas}); figures may change: "
            "review the change, then run tiv lock to record it",
            Location(file.path),
        )
    now = "now a draft, " if file.status == "draft" else ""
    return Problem(
        "lock.immutable",
        f"published versions are immutable: copy to a new version ({now}{shas}); "
        "restore this file from version control",
        Location(file.path),
    )


def _window_closed(root: Path, file: RuleFile, digest: str) -> str | None:
    """The new effective_to, when the locked bytes (from git history) differ from the
    file's only by an effective_to added to an open-ended published version."""
    if file.status != "published":
        return None
    found = from_git(root, file.path, digest)
    if found is None:
        return None
    try:
        old = load_yaml(found[0].decode("utf-8"), file.path).data
        new = load_yaml((root / file.path).read_text(encoding="utf-8"), file.path).data
    except (RulesError, OSError, UnicodeDecodeError):
        return None
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return None
    if old.get("effective_to") is not None or new.get("effective_to") is None:
        return None
    rest = {k: v for k, v in new.items() if k != "effective_to"}
    return str(new["effective_to"]) if rest == old else None


def from_git(root: Path, path: str, sha256: str) -> tuple[bytes, str] | None:
    """The bytes of `path` whose sha256 is `sha256`, from any commit of the repository
    that holds `root`, and that commit; None without git, a repository or such a version."""

    def git(*args: str) -> subprocess.CompletedProcess[bytes] | None:
        try:
            return subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None

    log = git("log", "--all", "--format=%H", "--", path)
    if log is None or log.returncode != 0:
        return None
    for commit in log.stdout.decode().split():
        blob = git("cat-file", "blob", f"{commit}:./{path}")
        if blob is None or blob.returncode != 0:
            continue
        if hashlib.sha256(blob.stdout).hexdigest() == sha256:
            return blob.stdout, f"git {commit[:12]}"
    return None


def write_lock(root: Path, rules: RuleSet, *, force: bool = False) -> LockChanges:
    """Record every lockable file of `rules` in root/rules.lock, atomically.

    Raises RulesError, writing nothing, when a locked published file changed or is gone
    (the lock exists to stop that), unless `force`; the forced paths are then reported.
    """
    locked, _ = read_lock(root)
    locked = locked or {}
    # Includes a locked published file turned back into a draft: its bytes changed too.
    # A published pack whose base changed is refused too: re-pinning would change its figures.
    stuck = ("lock.immutable", "lock.deleted", "lock.base_changed")
    refused = [p for p in check_lock(root, rules) if p.code in stuck]
    if refused and not force:
        raise RulesError(refused)
    forced = tuple(p.location.file for p in refused)
    entries = {f.path: f.sha256 for f in rules.files if lockable(f)}
    added = tuple(sorted(p for p in entries if p not in locked))
    updated = tuple(sorted(p for p in entries if p in locked and locked[p] != entries[p]))
    removed = tuple(sorted(p for p in locked if p not in entries))
    bases = resolved_bases(rules)
    old_pins = read_pins(root)
    pinned = tuple(f"{p} -> {b}" for p, b in sorted(bases.items()) if old_pins.get(p) != b)
    _write(Path(root) / LOCK_FILE, entries.items(), bases.items())
    return LockChanges(added, updated, removed, forced, pinned)


def render_lock(entries: Iterable[tuple[str, str]], bases: Iterable[tuple[str, str]] = ()) -> str:
    lines = [f"{digest}  {path}" for path, digest in sorted(entries)]
    pins = [f"# extends {path} -> {base}" for path, base in sorted(bases)]
    text = _HEADER + "".join(line + "\n" for line in lines)
    return text + (_PINS_HEADER + "".join(pin + "\n" for pin in pins) if pins else "")


def _write(
    target: Path, entries: Iterable[tuple[str, str]], bases: Iterable[tuple[str, str]] = ()
) -> None:
    write_atomic(target, render_lock(entries, bases))


def _at(line: int) -> Location:
    return Location(LOCK_FILE, line)
