"""The cells and columns every report table shares: the `Column` type, Excel's number formats, and the conversion of a
recorded value into what a cell holds.

The workbook (report.py, report_load.py), the CSV files (report_csv.py), the page (report_html.py) and the
side-by-side tables (report_tables.py) all build their rows through these, so a value reads the same everywhere. This
module imports nothing from the other report modules and nothing heavy (no openpyxl; only results.py's `Status`), so
any of them can import it at module level without a cycle.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from .results import Status

SEC3 = "0.000"
"""Number format of seconds: three decimals."""
SEC4 = "0.0000"
"""Number format of short seconds (ITL, standard deviations): four decimals."""
RATE = "0.0"
"""Number format of rates (tokens/s, req/s): one decimal."""
TOKENS = "0.0"
"""Number format of token counts that are statistics (means, percentiles): one decimal."""
COUNT = None
"""Number format of counts: none, as integers read well in Excel's General format and an unstyled cell is cheaper to
write."""


@dataclass(frozen=True)
class Column:
    """One column of a report table: its name, unit and definition (the Definitions sheet, the page's tooltips, the
    CSV files' definitions.csv), Excel number format and width."""

    name: str
    unit: str
    definition: str
    fmt: str | None = None
    width: float = 10.0


def number(value: Any) -> float | int | None:
    """A number a cell can hold: an int or a finite float as it is; None for anything else (booleans, NaN, text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def yes_no(value: Any) -> str | None:
    """A recorded flag as yes or no; None when it was not recorded."""
    if value is None:
        return None
    return "yes" if value else "no"


def cut(value: str, limit: int) -> str:
    """The text cut to `limit` characters, … marking the cut."""
    return value[: limit - 1] + "…" if len(value) > limit else value


def status_shown(status: Any) -> str:
    """A status as the page and the console show it (`results.Status.shown`: MISSING); another value as text."""
    try:
        return Status(status).shown
    except ValueError:
        return str(status or "")


def plain(value: Any) -> Any:
    """A value Excel can hold: numbers and text as they are, anything else as text."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return yes_no(value)
    if isinstance(value, (int, float)):
        return number(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
        return " ".join(str(v) for v in value) if all(isinstance(v, str) for v in value) else \
            ", ".join(str(v) for v in value)
    return json.dumps(value, ensure_ascii=False, default=str)
