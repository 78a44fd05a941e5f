"""The plan of a `jarvis run`, built once before anything starts: each chosen setup, each model resolved (or why it
cannot be), its repetitions and warmups, and the tests it runs. The runner iterates the plan; nothing resolves a
model ID a second time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .errors import EngineNotInstalledError, ModelIdError
from .load import LoadProfile
from .modelid import ModelRef
from .session import Session
from .setups import ModelEntry, Setup, Suite, TestCase


class SampleKey(NamedTuple):
    """Identifies a sample in results.jsonl, for --resume: a cell that did not run has repetition None."""

    setup: str
    model: str
    test: str
    repetition: int | None


@dataclass(frozen=True)
class PlannedModel:
    setup: str
    entry: ModelEntry
    ref: ModelRef | None
    """None when the model's engine is not installed (`unresolved` says why)."""
    unresolved: str
    label: str
    """The model's name in results: the canonical ID, or the ID as written when it could not be resolved."""
    repetitions: int
    warmups: int
    tests: tuple[TestCase, ...]
    load: LoadProfile | None = None
    """The setup's load levels, run after the tests on the same warmed engine."""

    @property
    def engine(self) -> str:
        return self.ref.engine if self.ref is not None else ""

    @property
    def compare_label(self) -> str | None:
        """The entry's `label:` in the setups file (models sharing one are compared side by side), or None. Not to be
        confused with `label`, the model's name in results."""
        return self.entry.label

    def identity(self) -> dict[str, str]:
        """The keys naming this model in every record written for it: setup, model, engine, and `label` when the
        entry has one (records of models without a label have no `label` key)."""
        keys = {"setup": self.setup, "model": self.label, "engine": self.engine}
        if self.entry.label is not None:
            keys["label"] = self.entry.label
        return keys

    def key(self, test: TestCase, repetition: int | None) -> SampleKey:
        return SampleKey(self.setup, self.label, test.id, repetition)

    def todo(self, done: set[SampleKey]) -> list[TestCase]:
        """The tests with a repetition still to measure, unless the whole cell was already recorded as not run."""
        return [t for t in self.tests if self.key(t, None) not in done
                and any(self.key(t, r) not in done for r in range(1, self.repetitions + 1))]


@dataclass(frozen=True)
class PlannedSetup:
    setup: Setup
    models: tuple[PlannedModel, ...]

    @property
    def engines(self) -> frozenset[str]:
        return frozenset(m.engine for m in self.models if m.ref is not None)


def build_plan(session: Session, suite: Suite, setups: list[Setup], *, repeat: int | None = None) -> list[PlannedSetup]:
    """Resolve every model ID of the chosen setups once. A malformed ID is a ModelIdError naming the setup; an ID
    whose engine is not installed is planned as unresolved (its cells become `unavailable`)."""
    plan = []
    for setup in setups:
        models = []
        for entry in setup.models:
            try:
                ref: ModelRef | None = session.resolve(entry.id)
                unresolved = ""
            except EngineNotInstalledError as exc:
                ref, unresolved = None, str(exc)
            except ModelIdError as exc:
                raise ModelIdError(f"{suite.source}, setup '{setup.name}': {exc}") from None
            flags = ref.flags if ref is not None else None
            repetitions = repeat or (flags.repeat if flags else None) or suite.defaults.repetitions
            warmups = flags.warmup if flags is not None and flags.warmup is not None else suite.defaults.warmup
            models.append(PlannedModel(setup=setup.name, entry=entry, ref=ref, unresolved=unresolved,
                                       label=ref.canonical if ref is not None else entry.id,
                                       repetitions=repetitions, warmups=warmups,
                                       tests=tuple(suite.tests_for(setup)), load=setup.load))
        plan.append(PlannedSetup(setup, tuple(models)))
    return plan
