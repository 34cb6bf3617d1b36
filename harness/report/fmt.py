"""How the reports write numbers: one place, so the Markdown, the HTML page and the nightly leaderboard agree."""

from __future__ import annotations

import math


def fmt(value) -> str:
    """4 significant digits for a float, "-" for nothing (None, "", NaN), anything else as it prints."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def interval(low, high) -> str:
    return f"[{fmt(low)}, {fmt(high)}]"
