"""What every versioned rule file shares: its reference, and the window it is in effect."""

from __future__ import annotations

import datetime


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
        end = self.effective_to.isoformat() if self.effective_to else "open-ended"
        return f"{self.effective_from.isoformat()} to {end}"
