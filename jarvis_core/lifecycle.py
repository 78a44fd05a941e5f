"""Bringing one model up, the way both `jarvis run` and `jarvis loadout up` do it.

`check` decides, without downloading or starting anything, whether a model can be brought up: its engine usable,
the model present (or downloads forced). `bring_up` then pulls it if needed, starts the engine and warms the model.
Stopping is the engine's `stop` hook, called through the Session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from .engine import Availability, Detection, StartResult, WarmupResult
from .errors import ModelMissingError
from .modelid import ModelRef
from .session import Session


@dataclass
class Verdict:
    status: Literal["present", "to_pull", "missing", "unavailable"]
    detail: str = ""
    availability: Availability | None = None


def check(session: Session, ref: ModelRef, detection: Detection, *, fix: str) -> Verdict:
    """Can `ref` be brought up? Never downloads or starts anything. `fix` is the command shown for a missing model
    when the engine suggests none."""
    if not detection.usable:
        return Verdict("unavailable", detection.detail or f"{ref.engine} is not installed")
    availability = session.is_available(ref)
    if availability.present:
        return Verdict("present", availability=availability)
    if session.force_download:
        return Verdict("to_pull", availability=availability)
    # The caller's command (it knows whether this is a run or a loadout) first, the engine's own way after it.
    how = fix if not availability.fix or availability.fix == fix else f"{fix}, or {availability.fix}"
    return Verdict("missing", f"{availability.detail or 'not present locally'}; fix: {how}", availability)


def bring_up(session: Session, ref: ModelRef, verdict: Verdict, *, warm: bool = True,
             before_start: Callable[[], None] | None = None,
             say: Callable[[str], None] = lambda message: None) -> tuple[StartResult, WarmupResult | None]:
    """Pull the model if the verdict says so, start its engine, and warm it up (unless `warm` is False)."""
    if verdict.status == "to_pull":
        say(f"  pulling {ref.name}")
        pulled = session.pull(ref)
        if not pulled.present:
            raise ModelMissingError(pulled.detail or f"{ref.name} could not be downloaded", engine=ref.engine)
    if before_start is not None:
        before_start()
    started = session.start(ref)
    return started, session.warmup(ref) if warm else None
