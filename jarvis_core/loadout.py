"""`jarvis loadout`: bring a named set of models up and keep it resident, show the state, bring it down.

A loadout is recorded in the state file under the run ID `loadout:<name>`, so `down` (also after a crash of `up`)
stops exactly what `up` started, and `jarvis run`'s clean-up of crashed runs leaves a loadout alone. Starting,
waiting and stopping are the same hooks `jarvis run` uses, through a Session.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import lifecycle
from .config import Config
from .engine import Availability
from .errors import EngineNotInstalledError, JarvisError, UsageError
from .gpu import engine_gpus, gpu_memory, wait_for_release
from .modelid import ModelRef
from .results import Status
from .session import Session
from .state import LOADOUT_RUN_PREFIX, StateStore

PREFIX = LOADOUT_RUN_PREFIX


def run_id(name: str) -> str:
    return PREFIX + name


def loadout_models(config: Config, name: str, setups_file: Path | None = None) -> list[str]:
    """The model IDs of loadout `name`: from config.yaml `loadouts`, else a setup of test_setups.yaml."""
    if name in config.loadouts:
        return list(config.loadouts[name])
    path = setups_file or Path.cwd() / "test_setups.yaml"
    known = sorted(config.loadouts)
    if path.is_file():
        from .setups import load_suite

        suite = load_suite(path)
        for setup in suite.setups:
            if setup.name == name:
                return [m.id for m in setup.models]
        known += [s.name for s in suite.setups]
    raise UsageError(f"No loadout named '{name}'. Define it under 'loadouts:' in config.yaml"
                     + (f"; known: {', '.join(known)}" if known else "") + ".")


@dataclass
class ModelState:
    id: str
    engine: str = ""
    present: bool | None = None
    loaded: bool | None = None
    memory_bytes: int | None = None
    status: str = ""
    detail: str = ""


@dataclass
class EngineState:
    engine: str
    running: bool
    started_by_jarvis: bool
    address: str | None
    version: str | None
    detail: str = ""


@dataclass
class LoadoutState:
    name: str | None
    models: list[ModelState] = field(default_factory=list)
    engines: list[EngineState] = field(default_factory=list)
    gpu: list[dict[str, Any]] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"loadout": self.name, "models": [asdict(m) for m in self.models],
                "engines": [asdict(e) for e in self.engines], "gpu": self.gpu}


def _gpu_json() -> list[dict[str, Any]] | None:
    gpus = gpu_memory()
    return [{"index": g.index, "name": g.name, "used_mib": g.used_mib, "total_mib": g.total_mib}
            for g in gpus] if gpus else None


def status(session: Session, name: str | None, model_ids: list[str]) -> LoadoutState:
    """What is there now; starts nothing."""
    state = LoadoutState(name)
    refs: list[ModelRef | None] = []
    for model_id in model_ids:
        try:
            refs.append(session.resolve(model_id))
        except EngineNotInstalledError as exc:
            refs.append(None)
            state.models.append(ModelState(model_id, status="unavailable", detail=str(exc)))
    engines = sorted({r.engine for r in refs if r} | ({e for e in session.registry.engines} if name is None else set()))
    detections = {e: session.detect(e) for e in engines}
    for engine, d in detections.items():
        state.engines.append(EngineState(engine, d.reachable, d.started_by_jarvis, d.address, d.version, d.detail))
    for model_id, ref in zip(model_ids, refs):
        if ref is None:
            continue
        d = detections[ref.engine]
        item = ModelState(ref.canonical, ref.engine)
        try:
            availability = session.is_available(ref)
            item.present = availability.present
            item.detail = availability.detail if not availability.present else ""
        except JarvisError as exc:
            item.detail = str(exc)
        if d.loaded_models is not None:
            key = next((k for k in d.loaded_models if same_model(session, ref.engine, k, ref.name)), None)
            item.loaded = key is not None
            item.memory_bytes = d.loaded_models.get(key) if key else None
        item.status = (Status.MISSING.shown if item.present is False else "loaded" if item.loaded else
                       "not loaded" if item.loaded is False else "unknown")
        if not d.usable:
            item.status, item.detail = "unavailable", d.detail
        state.models.append(item)
    state.gpu = _gpu_json()
    return state


def same_model(session: Session, engine: str, a: str, b: str) -> bool:
    """Whether two of the engine's model names mean the same model, as the engine declared (`EngineSpec.same_model`)."""
    compare = session.registry.engines[engine].same_model
    return compare(a, b) if compare is not None else a == b


def check_fit(availabilities: list[tuple[ModelRef, Availability]],
              gpus_of: Callable[[str], Any] = lambda engine: "all") -> None:
    """Refuse, before starting anything, a loadout whose memory cannot fit on the GPUs (where there are any). Each
    model counts on the first GPU its engine is given (`gpus_of(engine)`: the engine's `gpus` setting)."""
    on_gpu: dict[int, list[tuple[ModelRef, Availability]]] = {}
    gpus: dict[int, Any] = {}
    for ref, availability in availabilities:
        found = engine_gpus(gpus_of(ref.engine))
        if found:
            gpus[found[0].index] = found[0]
            on_gpu.setdefault(found[0].index, []).append((ref, availability))
    for index, models in on_gpu.items():
        gpu = gpus[index]
        total, used = gpu.total_mib * 2**20, gpu.used_mib * 2**20
        need = sum(a.memory_bytes or 0 for _, a in models)
        if need and used + need > total:
            parts = ", ".join(f"{r.canonical} {a.memory_bytes / 2**30:.1f} GiB" for r, a in models if a.memory_bytes)
            settings = sorted({a.memory_setting for _, a in models if a.memory_setting})
            raise UsageError(
                f"The loadout needs {need / 2**30:.1f} GiB of GPU memory ({parts}) but {gpu.name} (GPU {index}) has "
                f"{(total - used) / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB; nothing was started. "
                f"Lower {', '.join(settings) if settings else 'the models’ memory use'} in config.yaml, or drop a "
                f"model.")


def up(session: Session, name: str, model_ids: list[str], say: Callable[[str], None]) -> LoadoutState:
    """Start the engines, load and warm every model, keep them resident; MISSING models are reported, not pulled
    (unless the session forces downloads)."""
    result = LoadoutState(name)
    refs = []
    for model_id in model_ids:
        try:
            refs.append(session.resolve(model_id))
        except EngineNotInstalledError as exc:
            result.models.append(ModelState(model_id, status="unavailable", detail=str(exc)))
    ready: list[tuple[ModelRef, lifecycle.Verdict]] = []
    resident: set[str] = set()
    for ref in refs:
        detection = session.detect(ref.engine)
        verdict = lifecycle.check(session, ref, detection, fix=f"jarvis loadout up {name} --force-download")
        if verdict.status in ("missing", "unavailable"):
            missing = verdict.status == "missing"
            result.models.append(ModelState(ref.canonical, ref.engine, present=False if missing else None,
                                            status=Status.MISSING.shown if missing else "unavailable", detail=verdict.detail))
            continue
        if any(same_model(session, ref.engine, k, ref.name) for k in detection.loaded_models or ()):
            resident.add(ref.canonical)  # already counted in the GPU's used memory: not needed again
        ready.append((ref, verdict))
    check_fit([(r, v.availability) for r, v in ready if r.canonical not in resident and v.availability],
              gpus_of=lambda engine: getattr(session.context(engine).settings, "gpus", "all"))
    gpus = gpu_memory()
    if gpus:
        session.state.set_baseline(session.run_id, gpus[0].used_mib)  # kept from the first `up` of this loadout
    for ref, verdict in ready:
        item = ModelState(ref.canonical, ref.engine, present=True)
        try:
            started, warm = lifecycle.bring_up(session, ref, verdict, say=say)
            item.loaded, item.status = True, "loaded"
            item.detail = f"at {started.address}" + (f", cold start {warm.cold_start_s:.2f} s" if warm else "")
        except JarvisError as exc:
            item.status, item.detail = "error", str(exc)
        say(f"{ref.canonical}: {item.status} {item.detail}".rstrip())
        result.models.append(item)
    _confirm_resident(session, result, {r.canonical: r for r, _ in ready}, say)
    result.gpu = _gpu_json()
    return result


def _confirm_resident(session: Session, result: LoadoutState, refs: dict[str, ModelRef],
                      say: Callable[[str], None]) -> None:
    """An engine that serves one model at a time (vLLM) replaces a model with the next one it starts: say so rather
    than report both as loaded."""
    for engine in sorted({m.engine for m in result.models if m.status == "loaded"}):
        if not session.registry.engines[engine].one_model_at_a_time:
            continue
        loaded = session.detect(engine).loaded_models
        if loaded is None:
            continue
        for item in result.models:
            if item.engine == engine and item.status == "loaded" and \
                    not any(same_model(session, engine, k, refs[item.id].name) for k in loaded):
                item.loaded, item.status = False, "error"
                item.detail = (f"not resident once the loadout was up: {engine} serves one model at a time here, "
                               f"and a later model of the loadout replaced it")
                say(f"{item.id}: {item.status} {item.detail}")


def down(session_for: Callable[[str], Session], names: list[str] | None, state_dir: Path,
         say: Callable[[str], None]) -> dict[str, Any]:
    """Unload and stop what `up` started for these loadouts (all when None), and confirm the memory came back."""
    store = StateStore(state_dir)
    run_ids = {r.run_id for r in store.records() if r.run_id.startswith(PREFIX)}
    if names is not None:
        run_ids &= {run_id(n) for n in names}
    report: dict[str, Any] = {"loadouts": sorted(r[len(PREFIX):] for r in run_ids), "stopped": [],
                              "left_running": [], "memory_released": None}
    baselines = []
    for rid in sorted(run_ids):
        session = session_for(rid)
        baseline = store.baseline(rid)
        baselines += [baseline] if baseline is not None else []
        for engine in sorted({r.engine for r in session.state.records()}):
            if engine not in session.registry.engines:
                say(f"{engine}: its plugin is not installed; its records are kept")
                continue
            try:
                stopped = session.stop(engine)
            except (JarvisError, OSError) as exc:  # the other engines still come down
                report["left_running"].append(f"{engine}: could not stop: {exc}")
                report["memory_released"] = False
                say(f"{engine}: could not stop: {exc}")
                continue
            report["stopped"] += [f"{engine}: {s}" for s in stopped.stopped]
            report["left_running"] += [f"{engine}: {s}" for s in stopped.left_running]
            if stopped.memory_released is False:
                report["memory_released"] = False
            say(f"{engine}: stopped {', '.join(stopped.stopped) or 'nothing'}"
                + (f"; left alone: {', '.join(stopped.left_running)}" if stopped.left_running else ""))
        store.clear_baseline(rid)
    if baselines and report["memory_released"] is not False:
        report["memory_released"] = wait_for_release(min(baselines))
    return report
