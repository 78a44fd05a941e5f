"""Jarvis engine plugin for vLLM: the `vllm/vllm-openai` container (runtime `docker`) or `vllm serve` (`process`).

Model IDs: `vllm:Org/Name` (canonical) or `vl_Org/Name`; a local model folder works too (`vllm:/models/my-model`).
Heavy dependencies (docker, huggingface_hub, httpx) are imported inside the functions that use them, so that
`jarvis --help` stays fast.
"""

from __future__ import annotations

import functools
from contextlib import closing
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from jarvis_core.api import (
    Availability,
    ChatRequest,
    Detection,
    EngineError,
    EngineSpec,
    EngineUnavailableError,
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

__version__ = "0.2.1"

__all__ = ["ModelSettings", "VllmSettings", "PREFIXES", "__version__"]

PREFIXES = ("vllm:", "vl_")


def _fix(name: str, revision: str | None = None) -> str:
    return f"rerun with --force-download, or `hf download {name}{f' --revision {revision}' if revision else ''}`"


_Hook = TypeVar("_Hook", bound=Callable[..., Any])


def _redacted(hook: _Hook) -> _Hook:
    """Every text a hook hands back (its result's words, the message of what it raises) goes through the core's
    `redact` with this engine's secrets (HF token, secret-named environment values, `--api-key` values in
    extra_args, user information in url and docker_host), whatever its source: Docker's errors, the log, httpx."""

    @functools.wraps(hook)
    def wrapper(*args: Any, **kwargs: Any) -> Any:  # pluggy passes the arguments by position, callers here by name
        ctx = args[0] if args else kwargs["ctx"]
        try:
            secrets = _settings(ctx).secrets()
        except Exception:  # settings that cannot even be built: the hook says why
            return hook(*args, **kwargs)
        try:
            result = hook(*args, **kwargs)
        except Exception as exc:
            common.redact_exception(exc, secrets)
            raise
        return common.redact_result(result, secrets)

    return wrapper  # type: ignore[return-value]


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
@_redacted
def detect(ctx: EngineContext) -> Detection:
    settings = _settings(ctx)
    if settings.url:
        info = common.server_info(settings.base_url, settings.auth_headers())
        if info is None:
            return Detection(engine=ENGINE, installed=False, reachable=False, address=settings.base_url,
                             detail=_remote_down(settings))
        return Detection(engine=ENGINE, installed=True, reachable=True, version=info.version, address=settings.base_url,
                         loaded_models=info.loaded_models(),
                         detail=f"remote server at {settings.base_url} serves {', '.join(info.names) or 'no model'}")
    return _runtime(settings).detect(ctx, settings)


def _check(settings: VllmSettings, model: ModelRef) -> CacheCheck:
    from . import hfcache

    return hfcache.check_model(model.name, settings.resolved_hub_cache(), revision=settings.revision(model.name))


def _remote_down(settings: VllmSettings) -> str:
    """One line for a remote server (engines.vllm.url) that does not answer as vLLM: nothing there, or something
    else there."""
    why = common.not_vllm(settings.base_url, settings.auth_headers())
    if why is None:
        return f"no vLLM server answers at {settings.base_url} (engines.vllm.url)"
    return (f"something answers at {settings.base_url} (engines.vllm.url), but not as a vLLM server: {why}; check "
            f"engines.vllm.url")


@hookimpl
@_redacted
def is_available(ctx: EngineContext, model: ModelRef) -> Availability:
    settings = _settings(ctx)
    if settings.url:
        info = common.server_info(settings.base_url, settings.auth_headers())
        served = settings.launch(model.name).served_name
        if info is None:  # nothing (or something that is not vLLM) answers: the engine, not the model, is missing
            raise EngineUnavailableError(_remote_down(settings), engine=ENGINE)
        if served in info.names:
            return Availability(present=True, detail=f"served by {settings.base_url}")
        return Availability(present=False, detail=f"the server at {settings.base_url} does not serve {served}")
    check = _check(settings, model)
    if not check.present:
        taken = common.holder(ctx, settings)
        if taken is not None:  # not MISSING: what is wrong first is the program on vLLM's port
            raise EngineError(taken, engine=ENGINE)
    memory, setting = _reserved_memory(settings, model.name)
    return Availability(present=check.present, detail=check.detail, revision=check.revision,
                        fix=None if check.present or check.local_folder else
                        _fix(model.name, settings.revision(model.name)),
                        memory_bytes=memory, memory_setting=setting)


def _reserved_memory(settings: VllmSettings, name: str) -> tuple[int | None, str]:
    """vLLM reserves `gpu_memory_utilization` x the GPU's total memory up front, whatever the model's size: on the
    first GPU the engine is given (`gpus`, in the order CUDA_VISIBLE_DEVICES means), where it loads the model."""
    from jarvis_core.api import engine_gpus

    per = settings.models.get(name)
    setting = (f"engines.vllm.models.{name}.gpu_memory_utilization"
               if per is not None and per.gpu_memory_utilization is not None else "engines.vllm.gpu_memory_utilization")
    if settings.gpus == "none" or settings.url or _remote_docker(settings):
        return None, setting
    gpus = engine_gpus(settings.gpus)
    if not gpus:
        return None, setting
    return int(settings.launch(name).gpu_memory_utilization * gpus[0].total_mib * 2**20), setting


@hookimpl
@_redacted
def pull(ctx: EngineContext, model: ModelRef) -> Availability:
    from . import hfcache

    settings = _settings(ctx)
    if settings.url:
        return is_available(ctx=ctx, model=model)
    if settings.runtime == "docker":
        from . import docker_runtime

        client = docker_runtime.connect(settings.docker_host, settings.secrets())
        with closing(client):
            if not docker_runtime.image_present(client, settings.image_ref):
                docker_runtime.pull_image(client, settings.image_ref, ctx.progress)
    check = _check(settings, model)
    if check.present:
        return Availability(present=True, detail=check.detail, revision=check.revision)
    if check.local_folder or not hfcache.is_repo_id(model.name):
        raise ModelMissingError(f"{check.detail}; a local model folder cannot be downloaded.", engine=ENGINE)
    revision = settings.revision(model.name)
    if settings.hf_offline:
        raise EngineError(f"Cannot download {model.name}: HF_HUB_OFFLINE is set in the environment; unset it to "
                          f"download.", engine=ENGINE)
    ctx.progress.note(f"vllm: downloading {model.name}{f' (revision {revision})' if revision else ''} into "
                      f"{settings.resolved_hub_cache()}")
    from jarvis_core.api import hub_download

    hub_download(model.name, None, cache_dir=settings.resolved_hub_cache(), progress=ctx.progress, engine=ENGINE,
                 revision=revision, token=settings.hf_token, endpoint=settings.hf_endpoint,
                 label=f"vllm: {model.name}{f'@{revision}' if revision else ''}",
                 revision_hint="check the `revision` set for it in config.yaml")
    check = _check(settings, model)
    if not check.present:
        raise ModelMissingError(f"After downloading, {check.detail}.", engine=ENGINE)
    return Availability(present=True, detail=check.detail, revision=check.revision)


@hookimpl
@_redacted
def start(ctx: EngineContext, model: ModelRef) -> StartResult:
    settings = _settings(ctx)
    launch = settings.launch(model.name)
    info = common.server_info(settings.base_url, settings.auth_headers(launch))
    if info is not None and launch.served_name in info.names:
        ours = common.started_by_jarvis(ctx, settings) and not settings.url
        return StartResult(address=settings.base_url, started=False, version=info.version,
                           detail=f"{'the server Jarvis started' if ours else 'a running server'} at "
                                  f"{settings.base_url} already serves {launch.served_name}",
                           parallelism=common.reused_parallelism(ctx, settings, launch))
    if settings.url:
        if info is None:
            raise EngineUnavailableError(f"{_remote_down(settings)}; Jarvis does not start or change remote servers.",
                                         engine=ENGINE)
        what = f"serves {', '.join(info.names) or 'no model'}"
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
            raise ModelMissingError(f"{check.detail}; {_fix(model.name, settings.revision(model.name))}.",
                                    engine=ENGINE)
    return _runtime(settings).start(ctx, settings, launch, check)


def _remote_docker(settings: VllmSettings) -> bool:
    """With a remote Docker daemon the cache that matters is on the daemon's machine: it cannot be checked here."""
    return settings.remote_docker


@hookimpl
@_redacted
def warmup(ctx: EngineContext, model: ModelRef) -> WarmupResult:
    from jarvis_core.api import warm

    return warm(ctx, model, send=lambda request: infer(ctx=ctx, model=model, request=request))


@hookimpl
def infer(ctx: EngineContext, model: ModelRef, request: ChatRequest) -> InferResult:
    from jarvis_core.api import openai_chat

    settings = _settings(ctx)
    launch = settings.launch(model.name)
    return openai_chat(common.client(settings, launch), launch.served_name, request,
                       extra=exact_tokens_fields(request))


@hookimpl
async def infer_async(ctx: EngineContext, model: ModelRef, request: ChatRequest) -> InferResult:
    from jarvis_core.api import openai_chat_async

    settings = _settings(ctx)
    launch = settings.launch(model.name)
    return await openai_chat_async(settings.base_url, launch.served_name, request, extra=exact_tokens_fields(request),
                                   headers=settings.auth_headers(launch) or None)


def exact_tokens_fields(request: ChatRequest) -> dict[str, object] | None:
    """With `exact_tokens`, vLLM generates exactly max_tokens: past the end-of-sequence token (`ignore_eos`) and past
    the model's other stop tokens (`min_tokens`)."""
    if not request.exact_tokens or request.max_tokens is None:
        return None
    return {"ignore_eos": True, "min_tokens": request.max_tokens}


@hookimpl
@_redacted
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
            stopped, left, note = docker_runtime.stop_record(ctx, record, settings)
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
            # The GPUs the servers were given (recorded with them), else those of the settings now.
            given = next((r.data["gpus"] for r in records if r.data.get("gpus") is not None), settings.gpus)
            result.memory_released = wait_for_release(min(baselines), gpus=given, timeout=ctx.config.timeouts.stop)
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
