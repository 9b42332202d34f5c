"""What every versioned rule file shares: its reference, its window, and its examples."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from engine.errors import Location

E = TypeVar("E")


@dataclass(frozen=True)
class ExampleCase(Generic[E]):
    """An example kept beside the rules: what it expects, where it is, and its facts.

    `facts` is the inline mapping, or, when the example names a file, that file's text
    (read once, at load); `facts_name` says where they came from, for messages.
    """

    example: E
    where: Location
    facts: Mapping[str, Any] | str
    facts_name: str


class EffectiveWindow:
    """Mixin for compiled packs and country rules: `id@version`, in effect from..to."""

    id: str
    version: str
    effective_from: datetime.date
    effective_to: datetime.date | None

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"

    def in_effect(self, day: datetime.date) -> bool:
        """effective_to is the first day it no longer applies."""
        return self.effective_from <= day and (self.effective_to is None or day < self.effective_to)

    def window(self) -> str:
        # effective_to is the first day the version no longer applies: say so.
        start = self.effective_from.isoformat()
        if self.effective_to is None:
            return f"{start} onward"
        return f"{start} until {self.effective_to.isoformat()} (exclusive)"
