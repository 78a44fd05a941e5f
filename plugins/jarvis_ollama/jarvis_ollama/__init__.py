"""Jarvis engine plugin for Ollama: engine `ollama`, model-ID prefix `ol_` (`ol_qwen2.5:0.5b#stream`).

The hooks live here and stay thin; the work is in `server` (the `ollama serve` process), `client` (the REST API),
`loading` (warmup and unload), `store` (models on disk) and `settings` (config.yaml and OLLAMA_* variables).
Everything from Jarvis comes from `jarvis_core.api`; httpx is imported only when a hook runs, so `jarvis --help`
stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from jarvis_core.api import EngineSpec, hookimpl

from .names import same_model
from .settings import OllamaSettings

if TYPE_CHECKING:
    from jarvis_core.api import (
        Availability,
        ChatRequest,
        Detection,
        EngineContext,
        InferResult,
        ModelRef,
        StartResult,
        StopResult,
        WarmupResult,
    )

__version__ = "0.2.1"

ENGINE = "ollama"
PREFIXES = ("ol_",)

__all__ = ["ENGINE", "PREFIXES", "OllamaSettings", "__version__"]


@hookimpl
def register_engines(register: Callable[[EngineSpec], None]) -> None:
    register(EngineSpec(name=ENGINE, prefixes=PREFIXES, description="Ollama, the native server (ollama serve)",
                        settings=OllamaSettings, same_model=same_model))


@hookimpl
def detect(ctx: EngineContext) -> Detection:
    from jarvis_core.api import Detection

    from . import server

    settings: OllamaSettings = ctx.settings
    exe = server.find_executable(settings)
    found = server.server_version(settings.url)
    ours = found is not None and bool(server.running_records(ctx, settings.url, any_run=True))
    loaded = server.loaded_models(settings.url) if found is not None else None
    program = None
    if found is not None:
        detail = f"Ollama {found} answers at {settings.url}" + ("; started by Jarvis" if ours else "")
        detail += f"; program: {exe}" if exe else "; no ollama program on this machine (a remote server?)"
    else:
        holder = server.port_holder(settings)
        if holder is not None:
            detail = server.port_taken_message(settings, holder)
        elif exe:
            program = server.program_version(exe, settings)
            detail = (f"installed at {exe}" + (f" (version {program})" if program else "") +
                      f"; no server at {settings.url} yet (Jarvis starts one when needed)")
        else:
            detail = server.not_installed_message(settings)
    return Detection(engine=ENGINE, installed=exe is not None, reachable=found is not None, version=found or program,
                     address=settings.url, detail=detail, started_by_jarvis=ours, loaded_models=loaded)


@hookimpl
def is_available(ctx: EngineContext, model: ModelRef) -> Availability:
    import httpx
    from jarvis_core.api import Availability, EngineError

    from . import client, server, store

    settings: OllamaSettings = ctx.settings
    fix = f"ollama pull {model.name}"
    if server.server_version(settings.url) is not None:
        with client.client_for(settings.url, timeout=30.0) as http:
            try:
                entry = client.find(client.tags(http), model.name)
            except (httpx.HTTPError, client.OllamaAPIError) as exc:
                raise EngineError(f"Ollama at {settings.url} could not list its models: {exc}", engine=ENGINE) \
                    from None
            caps = client.capabilities(http, model.name) if entry is not None else None
        if entry is None:
            return Availability(present=False, fix=fix,
                                detail=f"not among the models of the Ollama server at {settings.url}")
        digest = entry.get("digest") if isinstance(entry.get("digest"), str) else None
        size = entry.get("size") if isinstance(entry.get("size"), int) and entry["size"] > 0 else None
        return Availability(present=True, detail=f"on the Ollama server at {settings.url}", revision=digest,
                            capabilities=caps, memory_bytes=size)
    dirs = store.candidate_dirs(settings.models_dir)
    found = store.locate(dirs, model.name)
    if found is not None:
        return Availability(present=True, revision=found.digest, capabilities=found.capabilities(),
                            memory_bytes=found.size or None,
                            detail=f"on disk in {found.models_dir} (Ollama is not running)")
    holder = server.port_holder(settings)
    if holder is not None:  # not MISSING: what is wrong is the program on Ollama's port, not the model
        raise EngineError(server.port_taken_message(settings, holder), engine=ENGINE)
    where = ", ".join(str(d) for d in dirs)
    return Availability(present=False, fix=fix, detail=f"not on disk in {where} (Ollama is not running; set "
                                                       f"OLLAMA_MODELS or engines.ollama.models_dir if it is elsewhere)")


@hookimpl
def pull(ctx: EngineContext, model: ModelRef) -> Availability:
    import httpx
    from jarvis_core.api import Availability, EngineError

    from . import client, server

    settings: OllamaSettings = ctx.settings
    server.ensure_running(ctx)  # Ollama downloads through its server
    # One display: bytes summed over the layers, Ollama's own status lines ("pulling manifest", "pulling <digest>",
    # "verifying sha256 digest", "writing manifest", ...) as its phases.
    task = ctx.progress.task(f"ollama: {model.name}", total=None, unit="B")
    with client.client_for(settings.url, timeout=ctx.config.timeouts.request) as http:
        try:
            client.pull(http, model.name, on_progress=task.update, on_status=task.phase,
                        timeout=ctx.config.timeouts.request)
        except client.PullBrokeOff as exc:
            task.close(f"ollama: the download of {model.name} broke off")
            raise EngineError(f"The download of '{model.name}' broke off ({exc.message}); run again to resume it.",
                              engine=ENGINE) from None
        except client.OllamaAPIError as exc:
            if client.is_digest_mismatch(exc.message):
                task.close(f"ollama: {model.name}: the download was corrupted")
                raise EngineError(f"The download of '{model.name}' was corrupted: a file failed Ollama's sha256 "
                                  f"check ({exc.message}). Ollama deleted it; run again to download it anew.",
                                  engine=ENGINE) from None
            task.close(f"ollama: pulling {model.name} failed")
            return Availability(present=False, detail=f"Ollama could not pull '{model.name}': {exc.message}",
                                fix=f"check the name at https://ollama.com/search, then: ollama pull {model.name}")
        except httpx.HTTPError as exc:
            task.close(f"ollama: the download of {model.name} broke off")
            raise EngineError(f"The download of '{model.name}' broke off ({type(exc).__name__}: {exc}); run again "
                              f"to resume it.", engine=ENGINE) from None
        except BaseException:
            task.close(f"ollama: the download of {model.name} was interrupted; run again to resume it")
            raise
        task.close()  # the core's final line: how much, in how long
        try:
            entry = client.find(client.tags(http), model.name)
        except (httpx.HTTPError, client.OllamaAPIError):
            entry = None
    digest = entry.get("digest") if entry is not None and isinstance(entry.get("digest"), str) else None
    return Availability(present=True, detail=f"pulled into the Ollama server at {settings.url}", revision=digest)


@hookimpl
def start(ctx: EngineContext, model: ModelRef) -> StartResult:
    from . import server

    return server.ensure_running(ctx)


@hookimpl
def warmup(ctx: EngineContext, model: ModelRef) -> WarmupResult:
    from . import loading

    return loading.warmup(ctx, model)


@hookimpl
def infer(ctx: EngineContext, model: ModelRef, request: ChatRequest) -> InferResult:
    from . import client, loading

    settings: OllamaSettings = ctx.settings
    http = client.shared(settings.url)  # a warm connection: no TTFT pays for a new client or a connect
    try:
        loading.note_first_use(ctx, http, model.name)
    except OSError:  # the state file could not be written: measuring goes on, and stop cannot unload it
        pass
    return client.chat(http, model.name, request, keep_alive=loading.keep_alive_for(ctx), num_ctx=settings.num_ctx)


@hookimpl
async def infer_async(ctx: EngineContext, model: ModelRef, request: ChatRequest) -> InferResult:
    from . import client, loading

    settings: OllamaSettings = ctx.settings
    try:
        loading.note_first_use(ctx, client.shared(settings.url), model.name)  # a set lookup after the first time
    except OSError:
        pass
    return await client.chat_async(settings.url, model.name, request, keep_alive=loading.keep_alive_for(ctx),
                                   num_ctx=settings.num_ctx)


@hookimpl
def stop(ctx: EngineContext) -> StopResult:
    from jarvis_core.api import StopResult, close_shared

    from . import loading, server

    settings: OllamaSettings = ctx.settings
    done, left, released = loading.unload_recorded(ctx)
    records = ctx.state.records(ENGINE, "process")
    for url in {settings.url, *(r.address for r in records if r.address)}:
        close_shared(url)
    for record in records:
        if server.end_recorded(ctx, record):
            address = record.address
            done.append(f"ollama serve (pid {record.pid}) at {address}, started by Jarvis")
            # Models that would not unload went with the server (its runners are part of its tree): their
            # records are stale and their memory is back.
            for model in loading.model_records(ctx):
                if (model.address or settings.url) == address:
                    ctx.state.remove(model.id)
            left = [entry for entry in left if f" at {address}" not in entry]
            released = True if not left else released
    if settings.url not in {r.address for r in records}:
        found = server.server_version(settings.url)
        others = server.running_records(ctx, settings.url, any_run=True) if found is not None else []
        if others:  # started by another Jarvis run or a loadout: theirs to stop, whatever stop_foreign_server says
            left.append(f"Ollama {found} at {settings.url}, started by another Jarvis run or loadout "
                        f"({others[0].run_id or 'unknown run'}): `jarvis loadout down` or `jarvis cleanup` "
                        f"stops it")
        elif found is not None and settings.stop_foreign_server:
            ended, kept = server.stop_foreign(ctx)
            done += ended
            left += kept
        elif found is not None:
            left.append(f"Ollama {found} at {settings.url}, not started by Jarvis (set "
                        f"engines.ollama.stop_foreign_server: true to stop it too)")
    detail = "; ".join(done) if done else "nothing of Jarvis's was running"
    return StopResult(stopped=done, left_running=left, memory_released=released, detail=detail)
