"""Score: what a judger says about one trajectory (or one call), as a row of the store's scores table.

Here, not in judge/, because the judgers astuner.compat builds for peers' judges return it too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Score:
    value: float | None
    label: str | None = None
    explanation: str | None = None
    error: str | None = None
