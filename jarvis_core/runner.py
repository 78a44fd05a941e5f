"""`jarvis run`: setups one after another on one GPU, every sample appended to results.jsonl as it is measured.

The plan (`plan.build_plan`) has every model resolved once. For each planned model: detect the engine, check availability without downloading (MISSING otherwise,
or pull with --force-download), make room on the GPU, start, warm up, run every test the set number of times, and
tear down what Jarvis started unless the next setup uses the same engine. Ctrl-C or SIGTERM stops cleanly: what
Jarvis started is torn down and what was measured is kept.
"""

from __future__ import annotations

import platform
import signal
import socket
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from . import __version__, lifecycle
from .engine import ChatRequest, Detection, InferResult, Message, StartResult
from .gpu import used_mib, wait_for_release
from .http import close_shared
from .errors import EngineUnavailableError, JarvisError, ModelMissingError
from .load import Level, LevelSummary
from .loadrun import run_profile
from .metrics import figures
from .modelid import ModelRef
from .plan import PlannedModel, PlannedSetup, SampleKey
from .results import (
    RESULTS_SCHEMA,
    BadLines,
    ResultsWriter,
    Sample,
    Status,
    SummaryRow,
    now_iso,
    read_results,
    summarize,
)
from .session import Session
from .setups import Suite, TestCase
from .warmup import warmup_request

@dataclass
class Runner:
    session: Session
    suite: Suite
    out_dir: Path
    say: Callable[[str], None] = print
    done: set[SampleKey] = field(default_factory=set)
    """Samples already in results.jsonl (resume)."""
    done_levels: dict[tuple[Any, ...], LevelSummary] = field(default_factory=dict)
    """Load levels already measured (resume): (setup, model, concurrency, rate) → the level's summary."""
    repeat: int | None = None
    """Recorded in the run record; the plan already applied it."""
    missing_fix: str = "jarvis run --force-download"
    """The command shown next to a MISSING model."""
    interrupted: bool = False

    def __post_init__(self) -> None:
        self.results_path = self.out_dir / "results.jsonl"
        self._writer: ResultsWriter | None = None
        self._detections: dict[str, Detection] = {}
        self._active: set[str] = set()  # engines Jarvis brought up in this run and has not stopped yet
        self._engine_recorded: set[str] = set()
        # Memory used on every GPU Jarvis can see (CUDA_VISIBLE_DEVICES), before anything starts.
        self._gpu_baseline: int | None = used_mib("all")

    # --- the run ---------------------------------------------------------------------------------------------

    def run(self, plan: list[PlannedSetup], argv: list[str] | None = None) -> list[SummaryRow]:
        self._writer = ResultsWriter(self.results_path)
        self._write({"type": "run", "schema": RESULTS_SCHEMA, **environment(self.session, self.suite, argv),
                     "selected_setups": [p.setup.name for p in plan], "repeat": self.repeat,
                     "resumed": bool(self.done)})
        try:
            for index, planned in enumerate(plan):
                for model in planned.models:
                    self._run_model(model)
                following = plan[index + 1] if index + 1 < len(plan) else None
                self._teardown(keep=following.engines if following else frozenset())
        except KeyboardInterrupt:
            self.interrupted = True
            close_shared()  # the interrupted request's connection first: no engine keeps answering into it
            self.say("Interrupted: stopping what Jarvis started and keeping what was measured.")
        finally:
            with shielded_from_interrupts(self.say):
                self._teardown(keep=frozenset())
                self._write({"type": "end", "ended_at": now_iso(), "interrupted": self.interrupted})
                self._writer.close()
        return summarize(read_results(self.results_path))

    def _run_model(self, model: PlannedModel) -> None:
        todo = model.todo(self.done)
        levels_done = {(c, r): summary for (s, m, c, r), summary in self.done_levels.items()
                       if (s, m) == (model.setup, model.label)}
        load_todo = model.load is not None and (model.load.sweep or any(
            (level.concurrency, level.rate) not in levels_done for level in model.load.levels()))
        if model.ref is None:
            self._cells(model, todo, Status.UNAVAILABLE, model.unresolved)
            self._load_cells(model, load_todo, Status.UNAVAILABLE, model.unresolved)
            return
        if not todo and not load_todo:
            return
        ref = model.ref
        self.say(f"[{model.setup}] {model.label}")
        detection = self._detect(ref.engine)
        try:
            verdict = lifecycle.check(self.session, ref, detection, fix=self.missing_fix)
            if verdict.status in ("missing", "unavailable"):
                status = Status(verdict.status)
                if status is Status.MISSING:
                    self.say(f"  {status.shown}: {verdict.detail}")
                self._cells(model, todo, status, verdict.detail)
                self._load_cells(model, load_todo, status, verdict.detail)
                return
            # Active before it starts: a start that fails half-way is still torn down (stop works from the records).
            self._active.add(ref.engine)
            started, warm = lifecycle.bring_up(self.session, ref, verdict, warm=model.warmups > 0, say=self.say,
                                               before_start=lambda: self._make_room(ref.engine))
            # What exactly was measured (a digest, a commit, a file's sha256): `jarvis compare` shows when it changed.
            revision = verdict.availability.revision if verdict.availability is not None else None
            if revision is None and verdict.status == "to_pull":
                revision = self.session.is_available(ref).revision
            if ref.engine not in self._engine_recorded:
                self._engine_recorded.add(ref.engine)
                self._write({"type": "engine", "engine": ref.engine, "version": started.version or detection.version,
                             "address": started.address, "started_by_jarvis": started.started})
            if warm is not None:
                for _ in range(model.warmups - 1):
                    self.session.infer(ref, warmup_request(self.session.context(ref.engine), stream=ref.flags.stream))
                self.say(f"  cold start {warm.cold_start_s:.2f} s" +
                         (f" (engine load {warm.load_s:.2f} s)" if warm.load_s is not None else ""))
                self._write({"type": "warmup", **model.identity(), "cold_start_s": warm.cold_start_s,
                             "load_s": warm.load_s, "detail": warm.detail, "revision": revision})
        except JarvisError as exc:
            status = Status.UNAVAILABLE if isinstance(exc, EngineUnavailableError) else \
                Status.MISSING if isinstance(exc, ModelMissingError) else Status.ERROR
            if status is Status.ERROR:
                self.say(f"  error: {exc}")
            self._cells(model, todo, status, str(exc))
            self._load_cells(model, load_todo, status, str(exc))
            return
        availability = verdict.availability
        cold_pending = model.warmups == 0
        capabilities = model.entry.capabilities if model.entry.capabilities is not None else \
            (availability.capabilities if availability is not None else None)
        runnable = []
        for test in todo:
            missing_caps = [c for c in test.requires if capabilities is not None and c not in capabilities]
            if missing_caps or (test.requires and capabilities is None):
                reason = (f"{model.label} lacks {', '.join(missing_caps)}" if missing_caps else
                          f"the engine does not say whether {model.label} supports {', '.join(test.requires)}; "
                          f"declare it in the setup: {{id: {model.entry.id}, capabilities: [{', '.join(test.requires)}]}}")
                self._cells(model, [test], Status.SKIPPED, reason)
            else:
                runnable.append(test)
        # Repetitions go round the tests, so no prompt follows itself: engines reuse the cached prefix of the
        # previous prompt (llama.cpp always does), which would make every repetition after the first look faster.
        for rep in range(1, model.repetitions + 1):
            for test in runnable:
                if model.key(test, rep) in self.done:
                    continue
                result = self.session.infer(ref, self._request(test, ref))
                self._sample(model, test, rep, result, cold=cold_pending)
                cold_pending = False
                if result.error and not self._detect(ref.engine, fresh=True).reachable:
                    reason = f"engine stopped responding: {result.error}"
                    self.say(f"  {reason}")
                    self._cells(model, runnable, Status.ERROR, reason)
                    self._load_cells(model, load_todo, Status.ERROR, reason)
                    self._stop(ref.engine)  # what is left of it (orphaned runners, records) goes too
                    return
        if load_todo:
            self._run_load(model, started, levels_done)

    def _run_load(self, model: PlannedModel, started: StartResult,
                  levels_done: dict[tuple[Any, Any], LevelSummary]) -> None:
        assert model.ref is not None and model.load is not None and self._writer is not None
        ref = model.ref
        d = self.suite.defaults
        with self._writer.grouped():
            run_profile(model.load, send=lambda request: self.session.infer(ref, request),
                        send_async=self.session.async_infer(ref),
                        prompts=[list(t.messages) for t in model.tests], max_tokens=d.max_tokens,
                        timeout=d.timeout or self.session.config.timeouts.request, address=started.address,
                        engine=ref.engine, parallelism=started.parallelism, write=self._write,
                        identity=model.identity(),
                        done=levels_done, say=self.say)

    # --- requests and samples ----------------------------------------------------------------------------------

    def _request(self, test: TestCase, ref: ModelRef) -> ChatRequest:
        d, f = self.suite.defaults, ref.flags
        images = tuple(p.read_bytes() for p in test.images)
        messages = [Message(role, content) for role, content in test.messages]  # type: ignore[arg-type]
        if images:
            messages[-1] = Message(messages[-1].role, messages[-1].content, images)

        def pick(*values: Any) -> Any:
            return next((v for v in values if v is not None), None)

        return ChatRequest(
            messages=messages, stream=f.stream,
            max_tokens=pick(f.max_tokens, test.max_tokens, d.max_tokens),
            temperature=pick(f.temperature, test.temperature, d.temperature),
            seed=pick(f.seed, test.seed, d.seed),
            timeout=pick(f.timeout, d.timeout, self.session.config.timeouts.request))

    def _sample(self, model: PlannedModel, test: TestCase, rep: int, result: InferResult, cold: bool) -> None:
        assert model.ref is not None
        if result.error:
            status, reason = Status.ERROR, result.error
        else:
            status, reason = Status.OK, ""
            for check in test.checks:
                passed, why = check.passes(result.text)
                if not passed:
                    status, reason = Status.FAILED, why
                    break
        sample = Sample(setup=model.setup, model=model.label, engine=model.engine, label=model.compare_label,
                        test=test.id, repetition=rep, status=status, reason=reason, cold=cold,
                        engine_model=model.ref.name, stream=result.stream, answer=result.text,
                        finish_reason=result.finish_reason, figures=figures(result), server=result.server)
        self._write(sample.to_record())
        shown = sample.figures["ttft_s"] if result.stream else sample.figures["e2e_s"]
        timing = f" {'TTFT' if result.stream else 'E2E'} {shown:.3f} s" if shown is not None else ""
        self.say(f"  {test.id} {rep}: {status.shown}{timing}" + (f" ({reason})" if reason else "") +
                 (" [cold]" if cold else ""))

    def _cells(self, model: PlannedModel, tests: list[TestCase], status: Status, reason: str) -> None:
        for test in tests:
            if model.key(test, None) in self.done:
                continue
            self._write(Sample(setup=model.setup, model=model.label, engine=model.engine, label=model.compare_label,
                               test=test.id, repetition=None, status=status, reason=reason).to_record())

    def _load_cells(self, model: PlannedModel, pending: bool, status: Status, reason: str) -> None:
        """A model whose load levels cannot run gets one row per level with the reason, as its tests get cells."""
        if not pending or model.load is None:
            return
        for level in model.load.levels() or [Level(concurrency=1)]:
            self._write({"type": "load_level", **model.identity(), **level.to_json(), "status": status.value,
                         "reason": reason, "time": now_iso()})

    def _write(self, record: dict[str, Any]) -> None:
        assert self._writer is not None
        self._writer.write(record)

    # --- engines ------------------------------------------------------------------------------------------------

    def _detect(self, engine: str, fresh: bool = False) -> Detection:
        if fresh or engine not in self._detections:
            self._detections[engine] = self.session.detect(engine)
        return self._detections[engine]

    def _make_room(self, engine: str) -> None:
        """One GPU: before an engine starts, stop the others we started if either of the two is GPU-heavy, and where
        a GPU is present wait until its memory is back near where it was when the run began."""
        specs = self.session.registry.engines
        stopped = False
        for other in list(self._active):
            if other != engine and (specs[engine].gpu_heavy or specs[other].gpu_heavy):
                self._stop(other)
                stopped = True
        if stopped and self._gpu_baseline is not None:
            back = wait_for_release(self._gpu_baseline, gpus="all", timeout=self.session.config.timeouts.stop)
            if back is False:
                self.say(f"  GPU memory is not back near {self._gpu_baseline} MiB after "
                         f"{self.session.config.timeouts.stop:g} s; starting {engine} anyway")

    def _teardown(self, keep: frozenset[str]) -> None:
        for engine in list(self._active):
            if engine not in keep:
                self._stop(engine)

    def _stop(self, engine: str) -> None:
        # The engine stays active until its stop has returned: an interrupt in the middle of stopping leaves it for
        # the final (shielded) teardown to stop again.
        self.say(f"  stopping {engine} (up to {self.session.config.timeouts.stop:g} s) ...")
        try:
            result = self.session.stop(engine)
        except (JarvisError, OSError) as exc:
            self._active.discard(engine)
            self.say(f"  could not stop {engine}: {exc}; `jarvis cleanup` will try again")
            return
        self._active.discard(engine)
        if result.stopped:
            memory = {True: "; memory confirmed back", False: "; memory NOT back yet", None: ""}[
                result.memory_released]
            self.say(f"  stopped {engine}: {', '.join(result.stopped)}{memory}")
        if result.left_running:
            self.say(f"  left running (not started by Jarvis): {', '.join(result.left_running)}")


@contextmanager
def shielded_from_interrupts(say: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM off while tearing down, so a second Ctrl-C cannot leave an engine running; each one
    is answered with a line saying why Jarvis is still busy."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def still_busy(signum: int, frame: Any) -> None:
        if say is not None:
            say("  still stopping what Jarvis started; it ends by itself (engines left running would hold the GPU)")

    signals = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGBREAK] if hasattr(signal, "SIGBREAK") else [])
    previous = {sig: signal.signal(sig, still_busy) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def environment(session: Session, suite: Suite, argv: list[str] | None) -> dict[str, Any]:
    from .gpu import driver_version, gpu_memory
    from .plugins import plugin_info

    gpus = gpu_memory()
    return {
        "run_id": session.run_id, "started_at": now_iso(), "jarvis_version": __version__,
        "plugins": {i.name: f"{i.distribution or i.name} {i.version or ''}".strip() for i, _ in plugin_info()},
        "python": sys.version.split()[0], "os": platform.platform(), "host": socket.gethostname(),
        "cpu": _cpu_name(), "gpu": ", ".join(f"{g.name} ({g.total_mib} MiB)" for g in gpus) if gpus else "none",
        "gpu_driver": driver_version() if gpus else None,
        "setups_file": suite.source, "config_file": session.config.source or "(defaults)",
        "force_download": session.force_download, "argv": " ".join(argv or []),
        "defaults": vars(suite.defaults) if hasattr(suite.defaults, "__dict__") else {},
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def done_levels(results_path: Path) -> dict[tuple[Any, ...], LevelSummary]:
    """Load levels already measured in a results file, for --resume: (setup, model, concurrency, rate) → summary.
    Levels that could not run or whose every request failed (a `status`) are measured again."""
    return {(r.get("setup"), r.get("model"), r.get("concurrency"), r.get("rate")): LevelSummary.from_json(r)
            for r in read_results(results_path) if r.get("type") == "load_level" and "status" not in r}


def done_keys(results_path: Path, bad: BadLines | None = None) -> set[SampleKey]:
    """Samples already measured in a results file, for --resume (unreadable lines noted in `bad`)."""
    return {SampleKey(r.get("setup"), r.get("model"), r.get("test"), r.get("repetition"))
            for r in read_results(results_path, bad) if r.get("type") == "sample"}


def exit_code(rows: list[SummaryRow], strict: bool, results_path: Path | None = None) -> int:
    """1 when a test cell failed or errored, or a load level had no successful request (--strict: also missing or
    unavailable), else 0."""
    bad = {Status.FAILED, Status.ERROR} | ({Status.MISSING, Status.UNAVAILABLE} if strict else set())
    if any(r.status in bad for r in rows):
        return 1
    for record in read_results(results_path) if results_path is not None and results_path.is_file() else ():
        if record.get("type") != "load_level":
            continue
        status = record.get("status")
        if status in bad or (status is None and not record.get("requests_ok") and record.get("requests_error")):
            return 1
    return 0


def summary_table(rows: list[SummaryRow], results_path: Path | None = None) -> str:
    """The console's summary: one line per cell, then models sharing a `label:` side by side (their load levels
    too when `results_path` is given)."""
    from .console import table
    from .report_tables import console_text, pairs_from

    def fmt(row: SummaryRow, figure: str) -> str:
        s = row.stats.get(figure)
        return "-" if s is None else f"{s.p50:.3f}" if figure.endswith("_s") else f"{s.p50:.1f}"

    levels = [r for r in read_results(results_path) if r.get("type") == "load_level" and "label" in r] \
        if results_path is not None and results_path.is_file() else []
    side = console_text(pairs_from(rows, levels))
    return table(
        ["setup", "model", "test", "status", "ok", "ttft p50 s", "e2e p50 s", "decode tok/s", "reason"],
        [[r.setup, r.model, r.test, Status(r.status).shown,
          f"{r.ok}/{r.ok + r.failed + r.error}" if r.ok + r.failed + r.error else "-", fmt(r, "ttft_s"),
          fmt(r, "e2e_s"), fmt(r, "decode_tps"), (r.reason[:70] + "…") if len(r.reason) > 70 else r.reason]
         for r in rows]) + (f"\n\n{side}" if side else "")

