"""What Jarvis prints: plain-text tables (no dependency, readable in any terminal and in CI logs), and `safe`, which
every line shown on the terminal passes through."""

from __future__ import annotations

import re
from typing import Sequence

from .redact import redact

# Everything that could move the cursor, ring, rewrite a line or reorder text: C0 controls but newline and tab, DEL,
# C1 controls, bidirectional controls, the Unicode line and paragraph separators, unpaired surrogates.
_TERMINAL_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                              "\u2066-\u2069\ud800-\udfff]")


def safe(text: str) -> str:
    """`text` ready for the terminal: no credential (redact), and no control character left raw (ESC, BEL, CR, bidi
    controls are written as escapes), so nothing a user or an engine wrote can change the terminal or forge a line.
    Newlines stay: Jarvis's own tables and log tails have them, and values are quoted with repr where it matters."""
    return _TERMINAL_UNSAFE.sub(lambda m: f"\\x{ord(m.group(0)):02x}" if ord(m.group(0)) < 0x100
                                else f"\\u{ord(m.group(0)):04x}", redact(text))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "") -> str:
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(indent + line for line in lines)
