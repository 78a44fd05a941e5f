"""Jarvis engine plugin for vLLM: the `vllm/vllm-openai` container (runtime `docker`) or `vllm serve` (`process`).

Model IDs: `vllm:Org/Name` (canonical) or `vl_Org/Name`; a local model folder works too (`vllm:/models/my-model`).
Heavy dependencies (docker, huggingface_hub, httpx) are imported inside the functions that use them, so that
`jarvis --help` stays fast.
"""

from __future__ import annotations

from contextlib import closing
from typing import TYPE_CHECKING, Callable

from jarvis_core.api import (
    Availability,
    ChatRequest,
    Detection,
    EngineError,
    EngineSpec,
    InferResult,
    ModelMissingError,
    StartResult,
    StopResult,
    WarmupResult,
    hookimpl,
)

from . import common
from .common import ENGINE
from .settings import ModelSettings, VllmSettings

if TYPE_CHECKING:
    from jarvis_core.api import EngineContext, ModelRef

    from .hfcache import CacheCheck

__all__ = ["ModelSettings", "VllmSettings", "PREFIXES"]

PREFIXES = ("vllm:", "vl_")


def _fix(name: str) -> str:
    return f"rerun with --force-download, or `hf download {name}`"


@hookimpl
def register_engines(register: Callable[[EngineSpec], None]) -> None:
    register(EngineSpec(name=ENGINE, prefixes=PREFIXES, settings=VllmSettings, gpu_heavy=True,
                        one_model_at_a_time=True,  # one vLLM server serves one model: the next one replaces it
                        description="vLLM OpenAI-compatible server: the vllm/vllm-openai container or `vllm serve`"))


def _settings(ctx: EngineContext) -> VllmSettings:
    settings = ctx.settings
    if not isinstance(settings, VllmSettings):  # a dict when the core built no dataclass (plugin used bare)
        from jarvis_core.api import build_settings

        settings = build_settings(VllmSettings, settings or {}, source=None, path="engines.vllm")
    if settings.hub_cache is None:
        import os

        settings.apply_environment(os.environ)
    return settings


def _runtime(settings: VllmSettings):  # type: ignore[no-untyped-def]
    if settings.runtime == "process":
        from . import process_runtime

        return process_runtime
    from . import docker_runtime

    return docker_runtime


@hookimpl
def detect(ctx: EngineContext) -> Detection:
    settings = _settings(ctx)
    if settings.url:
        info = common.server_info(settings.base_url)
        if info is None:
            return Detection(engine=ENGINE, installed=False, reachable=False, address=settings.base_url,
                             detail=f"no vLLM server answers at {settings.base_url} (engines.vllm.url)")
        return Detection(engine=ENGINE, installed=True, reachable=True, version=info.version, address=settings.base_url,
                         loaded_models=info.loaded_models(),
                         detail=f"remote server at {settings.base_url} serves {', '.join(info.names) or 'no model'}")
    return _runtime(settings).detect(ctx, settings)


def _check(settings: VllmSettings, model: ModelRef) -> CacheCheck:
    from . import hfcache

    return hfcache.check_model(model.name, settings.resolved_hub_cache())


@hookimpl
def is_available(ctx: EngineContext, model: ModelRef) -> Availability:
    settings = _settings(ctx)
    if settings.url:
        info = common.server_info(settings.base_url)
        served = settings.launch(model.name).served_name
        if info is not None and served in info.names:
            return Availability(present=True, detail=f"served by {settings.base_url}")
        return Availability(present=False, detail=f"the server at {settings.base_url} does not serve {served}"
                            if info is not None else f"no server answers at {settings.base_url}")
    check = _check(settings, model)
    memory, setting = _reserved_memory(settings, model.name)
    return Availability(present=check.present, detail=check.detail, revision=check.revision,
                        fix=None if check.present or check.local_folder else _fix(model.name),
                        memory_bytes=memory, memory_setting=setting)


def _reserved_memory(settings: VllmSettings, name: str) -> tuple[int | None, str]:
    """vLLM reserves `gpu_memory_utilization` x the GPU's total memory up front, whatever the model's size."""
    from jarvis_core.api import gpu_memory

    per = settings.models.get(name)
    setting = (f"engines.vllm.models.{name}.gpu_memory_utilization"
               if per is not None and per.gpu_memory_utilization is not None else "engines.vllm.gpu_memory_utilization")
    if settings.gpus == "none" or settings.url:
        return None, setting
    gpus = gpu_memory()
    if not gpus:
        return None, setting
    return int(settings.launch(name).gpu_memory_utilization * gpus[0].total_mib * 2**20), setting


@hookimpl
def pull(ctx: EngineContext, model: ModelRef) -> Availability:
    from . import hfcache

    settings = _settings(ctx)
    if settings.url:
        return is_available(ctx=ctx, model=model)
    if settings.runtime == "docker":
        from . import docker_runtime

        client = docker_runtime.connect(settings.docker_host)
        with closing(client):
            if not docker_runtime.image_present(client, settings.image_ref):
                docker_runtime.pull_image(client, settings.image_ref, ctx.progress)
    check = _check(settings, model)
    if check.present:
        return Availability(present=True, detail=check.detail, revision=check.revision)
    if check.local_folder or not hfcache.is_repo_id(model.name):
        raise ModelMissingError(f"{check.detail}; a local model folder cannot be downloaded.", engine=ENGINE)
    ctx.progress.note(f"vllm: downloading {model.name} into {settings.resolved_hub_cache()}")
    hfcache.download(model.name, settings.resolved_hub_cache(), progress=ctx.progress, token=settings.hf_token)
    check = _check(settings, model)
    if not check.present:
        raise ModelMissingError(f"After downloading, {check.detail}.", engine=ENGINE)
    return Availability(present=True, detail=check.detail, revision=check.revision)


@hookimpl
def start(ctx: EngineContext, model: ModelRef) -> StartResult:
    settings = _settings(ctx)
    launch = settings.launch(model.name)
    info = common.server_info(settings.base_url)
    if info is not None and launch.served_name in info.names:
        ours = common.started_by_jarvis(ctx, settings) and not settings.url
        return StartResult(address=settings.base_url, started=False, version=info.version,
                           detail=f"{'the server Jarvis started' if ours else 'a running server'} at "
                                  f"{settings.base_url} already serves {launch.served_name}",
                           parallelism=common.reused_parallelism(ctx, settings, launch))
    if settings.url:
        what = f"serves {', '.join(info.names) or 'no model'}" if info is not None else "does not answer"
        raise EngineError(f"The vLLM server at {settings.base_url} (engines.vllm.url) {what}, not "
                          f"{launch.served_name}; Jarvis does not start or change remote servers.", engine=ENGINE)
    if ctx.state.records(ENGINE):
        # One vLLM serves one model: end the one Jarvis started for another model first, and let the GPU's memory
        # come back before the next one reserves its share.
        previous = stop(ctx=ctx)
        if previous.stopped:
            ctx.progress.note(f"vllm: {'; '.join(previous.stopped)} to make room for {launch.served_name}")
    check = None
    if not _remote_docker(settings):
        check = _check(settings, model)
        if not check.present and not ctx.force_download:
            raise ModelMissingError(f"{check.detail}; {_fix(model.name)}.", engine=ENGINE)
    return _runtime(settings).start(ctx, settings, launch, check)


def _remote_docker(settings: VllmSettings) -> bool:
    """With a remote Docker daemon the cache that matters is on the daemon's machine: it cannot be checked here."""
    host = settings.docker_host or ""
    return settings.runtime == "docker" and host.startswith(("tcp://", "ssh://", "http://", "https://"))


@hookimpl
def warmup(ctx: EngineContext, model: ModelRef) -> WarmupResult:
    from jarvis_core.api import warm

    return warm(ctx, model, send=lambda request: infer(ctx=ctx, model=model, request=request))


@hookimpl
def infer(ctx: EngineContext, model: ModelRef, request: ChatRequest) -> InferResult:
    from jarvis_core.api import openai_chat, shared_client

    settings = _settings(ctx)
    return openai_chat(shared_client(settings.base_url), settings.launch(model.name).served_name, request,
                       extra=exact_tokens_fields(request))


def exact_tokens_fields(request: ChatRequest) -> dict[str, object] | None:
    """With `exact_tokens`, vLLM generates exactly max_tokens: past the end-of-sequence token (`ignore_eos`) and past
    the model's other stop tokens (`min_tokens`)."""
    if not request.exact_tokens or request.max_tokens is None:
        return None
    return {"ignore_eos": True, "min_tokens": request.max_tokens}


@hookimpl
def stop(ctx: EngineContext) -> StopResult:
    from jarvis_core.api import close_shared, gpu_memory, wait_for_release, wait_port_closed

    from . import docker_runtime, process_runtime

    settings = _settings(ctx)
    result = StopResult()
    notes: list[str] = []
    records = ctx.state.records(ENGINE)
    baselines = [r.data["gpu_baseline_mib"] for r in records if isinstance(r.data.get("gpu_baseline_mib"), int)]
    ports: set[tuple[str, int]] = set()
    for record in records:
        left: list[str] = []
        if record.kind == "container":
            stopped, left, note = docker_runtime.stop_record(ctx, record, settings.stop_timeout)
        elif record.kind == "process":
            stopped, note = process_runtime.stop_record(ctx, record, settings.stop_timeout)
        else:
            continue
        result.stopped += stopped
        result.left_running += left
        if note:
            notes.append(note)
        endpoint = common.endpoint(record)
        if endpoint is not None and not left:
            ports.add(endpoint)
    close_shared(settings.base_url)  # a server Jarvis only used (remote, or already running) keeps running
    for host, port in sorted(ports):
        if not wait_port_closed(host, port, timeout=min(10.0, ctx.config.timeouts.stop)):
            notes.append(f"port {port} on {host} is still open (something else answers there)")
    if records and not result.left_running:
        if baselines:
            result.memory_released = wait_for_release(min(baselines), timeout=ctx.config.timeouts.stop)
            if result.memory_released is True:
                notes.append("GPU memory came back")
            elif result.memory_released is False:
                notes.append(f"GPU memory did not come back within {ctx.config.timeouts.stop:.0f} s")
        elif gpu_memory() is None:
            notes.append("no GPU to check")
    if not records:
        notes.append("nothing Jarvis started for vllm")
    result.detail = "; ".join(notes)
    return result
