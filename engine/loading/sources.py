"""Where rule files come from: a folder, or texts held in memory.

In: a folder path or a mapping of repository-relative paths to text. Out: a
`RuleSource` that lists rule files and returns their bytes. Insurers who keep rules
in a database or an object store implement the same two methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

from engine.loading.yamlfile import check_input_size

# The folders of a rule repository that hold rule files, relative to its root.
RULE_FOLDERS = ("policies", "rules")


@runtime_checkable
class RuleSource(Protocol):
    """A rule repository. Paths are POSIX, relative to the repository root."""

    @property
    def name(self) -> str: ...

    def paths(self) -> list[str]:
        """Every rule file (`*.yaml`) under policies/ and rules/, sorted."""
        ...

    def read(self, path: str) -> bytes: ...


class FileSystemSource:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    @property
    def name(self) -> str:
        return str(self.root)

    def paths(self) -> list[str]:
        found: list[str] = []
        for folder in RULE_FOLDERS:
            base = self.root / folder
            if base.is_dir():
                found.extend(
                    p.relative_to(self.root).as_posix() for p in base.rglob("*.yaml") if p.is_file()
                )
        return sorted(found)

    def read(self, path: str) -> bytes:
        """The file's bytes; RulesError, before reading, if it is over the size limit."""
        file = self.root / path
        check_input_size(file.stat().st_size, path)
        return file.read_bytes()

    def resolve(self, path: str) -> Path:
        return self.root / path


class MemorySource:
    def __init__(self, files: Mapping[str, str | bytes], name: str = "<memory>") -> None:
        self._files = {
            path: text.encode() if isinstance(text, str) else text for path, text in files.items()
        }
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def paths(self) -> list[str]:
        return sorted(
            p for p in self._files if p.endswith(".yaml") and p.split("/", 1)[0] in RULE_FOLDERS
        )

    def read(self, path: str) -> bytes:
        try:
            data = self._files[path]
        except KeyError:
            raise FileNotFoundError(path) from None
        check_input_size(len(data), path)
        return data


def find_root(start: str | Path) -> Path | None:
    """The nearest folder at or above `start` that has a policies/ folder."""
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / "policies").is_dir():
            return folder
    return None
