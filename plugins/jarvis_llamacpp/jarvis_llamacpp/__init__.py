"""Jarvis engine plugin for llama.cpp: GGUF models served by llama-cpp-python's OpenAI-compatible server.

Model IDs: `lc_NAME` or `llamacpp:NAME`, where NAME is a path to a .gguf file, a name looked up in the models
folder (`NAME.gguf`, or a known alias such as `smollm2-135m`), or a GGUF of a Hugging Face repo
(`hf.co/OWNER/REPO:QUANT`, `hf.co/OWNER/REPO/FILE.gguf`, see hub.py), kept in the Hugging Face cache. Only
`jarvis_core.api`, the core's interface for plugins, is used here; docs/writing-a-plugin.md walks through this
package as the worked example of a third-party engine plugin.
"""

from __future__ import annotations

import time
from typing import Callable

from jarvis_core.api import (
    Availability,
    ChatRequest,
    Detection,
    EngineContext,
    EngineSpec,
    InferResult,
    ModelMissingError,
    ModelRef,
    StartResult,
    StopResult,
    WarmupResult,
    hookimpl,
    openai_chat,
    openai_chat_async,
    warm,
)

from .hub import is_hub_name
from .models import known_model, model_file
from .settings import ENGINE, LlamaCppSettings

__version__ = "0.2.1"

PREFIXES = ("lc_", "llamacpp:")


@hookimpl
def register_engines(register: Callable[[EngineSpec], None]) -> None:
    # A server Jarvis starts serves one model; the next model replaces it.
    register(EngineSpec(name=ENGINE, prefixes=PREFIXES, settings=LlamaCppSettings, one_model_at_a_time=True,
                        description="llama.cpp via llama-cpp-python's server; GGUF files"))


@hookimpl
def detect(ctx: EngineContext) -> Detection:
    from . import server
    from .runtime import not_installed_message, probe

    runtime = probe(ctx.settings.python)
    found = Detection(engine=ctx.engine, installed=runtime.installed, reachable=False, version=runtime.version,
                      detail=f"llama-cpp-python {runtime.version} for {runtime.python}" if runtime.installed
                      else not_installed_message(runtime.python, runtime.problem))
    found.loaded_models = {}  # llama.cpp serves one model per server; only the servers Jarvis started are known
    for record in server.running_records(ctx):
        alias = record.data.get("alias")
        if server.answers(record.address, alias, ctx.settings):
            found.loaded_models[str(alias)] = None
            found.reachable = found.started_by_jarvis = True
            found.address = record.address
            found.version = found.version or record.data.get("version")
            found.detail += f"; serving {alias} (pid {record.pid}, started by Jarvis)"
            break
    return found


@hookimpl
def is_available(ctx: EngineContext, model: ModelRef) -> Availability:
    from . import server
    from .models import looks_like_gguf, sha256_of

    if is_hub_name(model.name):
        return _hub_availability(model.name)
    file = model_file(ctx.settings, model.name)
    if not file.is_file():
        what, fix = server.missing_message(ctx.settings, model.name, file)
        return Availability(present=False, detail=what, fix=fix)
    detail = str(file)
    if not looks_like_gguf(file):
        detail += " (does not start with the GGUF magic bytes: llama.cpp will probably refuse it)"
    return Availability(present=True, detail=detail, revision=f"sha256:{sha256_of(file)}")


def _hub_availability(name: str) -> Availability:
    """Is an `hf.co/...` model in the Hugging Face cache? Never downloads. A malformed ID raises (no download
    could fix it)."""
    from .hub import HubIdError, hub_cache_dir, lookup, parse
    from .models import looks_like_gguf

    try:
        ref = parse(name)
    except HubIdError as exc:
        raise ModelMissingError(str(exc), engine=ENGINE) from None
    found = lookup(ref, hub_cache_dir())
    if found.path is None:
        return Availability(present=False, detail=found.detail, fix=found.fix)
    detail = found.detail
    if not looks_like_gguf(found.path):
        detail += " (does not start with the GGUF magic bytes: llama.cpp will probably refuse it)"
    return Availability(present=True, detail=detail, revision=found.revision)


@hookimpl
def pull(ctx: EngineContext, model: ModelRef) -> Availability:
    if is_hub_name(model.name):
        from .hub import HubIdError, parse
        from .hub import pull as pull_from_hub

        try:
            ref = parse(model.name)
        except HubIdError as exc:
            raise ModelMissingError(str(exc), engine=ENGINE) from None
        return pull_from_hub(ref, ctx.progress)
    known = known_model(model.name)
    if known is None:
        file = model_file(ctx.settings, model.name)
        return Availability(
            present=file.is_file(),
            detail=f"Jarvis downloads smollm2-135m and Hugging Face GGUFs (lc_hf.co/OWNER/REPO:QUANT) for llama.cpp; "
                   f"'{model.name}' is a GGUF file you provide"
                   + (f" (found at {file})" if file.is_file() else f" (expected at {file})"),
            fix=None if file.is_file() else f"copy the .gguf file to {file}, or name it by path: "
                                            f"lc_/path/to/model.gguf")
    from .download import fetch

    return fetch(known, model_file(ctx.settings, model.name), python=ctx.settings.python, progress=ctx.progress)


@hookimpl
def start(ctx: EngineContext, model: ModelRef) -> StartResult:
    from . import server

    _targets.clear()
    return server.start(ctx, model.name)


@hookimpl
def warmup(ctx: EngineContext, model: ModelRef) -> WarmupResult:
    # The core's warmup prompt shares nothing with the tests' prompts: llama.cpp caches prompt prefixes, and a
    # warmup must not pre-answer a test.
    return warm(ctx, model, send=lambda request: _send(ctx, model, request))


@hookimpl
def infer(ctx: EngineContext, model: ModelRef, request: ChatRequest) -> InferResult:
    return _send(ctx, model, request)


@hookimpl
async def infer_async(ctx: EngineContext, model: ModelRef, request: ChatRequest) -> InferResult:
    # Load levels send hundreds of these a second from one event loop: the serving server is looked up once (the
    # state file is read then), not per request; start and stop forget it.
    target = _targets.get((id(ctx), model.name))
    if target is None:
        from . import server

        record = server.serving_record(ctx, model.name)
        if record is None or not record.address:
            return _not_serving(ctx, model, request)
        target = _targets[(id(ctx), model.name)] = (str(record.address), str(record.data.get("alias")))
    key = ctx.settings.api_key()
    return await openai_chat_async(target[0], target[1], request, include_usage=True,
                                   extra=exact_tokens_fields(request),
                                   headers={"Authorization": f"Bearer {key}"} if key else None)


_targets: dict[tuple[int, str], tuple[str, str]] = {}


@hookimpl
def stop(ctx: EngineContext) -> StopResult:
    from . import server

    _targets.clear()
    return server.stop(ctx)


def _send(ctx: EngineContext, model: ModelRef, request: ChatRequest) -> InferResult:
    from . import server

    record = server.serving_record(ctx, model.name)
    if record is None or not record.address:
        return _not_serving(ctx, model, request)
    # The server ignores stream_options.include_usage today; asking costs nothing, and a later version that
    # honours it turns the chunk-count estimate into the server's own count.
    return openai_chat(server.client(record.address, ctx.settings), str(record.data.get("alias")), request,
                       include_usage=True, extra=exact_tokens_fields(request))


def _not_serving(ctx: EngineContext, model: ModelRef, request: ChatRequest) -> InferResult:
    now = time.perf_counter_ns()
    return InferResult(stream=request.stream, t_send=now, t_end=now,
                       error=f"llama.cpp is not serving {model.name}: no server started by Jarvis has "
                             f"{model_file(ctx.settings, model.name).name} loaded (start it first)")


def exact_tokens_fields(request: ChatRequest) -> dict[str, object] | None:
    """With `exact_tokens`, llama-cpp-python's `min_tokens` keeps the end-of-sequence token from being picked before
    max_tokens (it has no `ignore_eos`)."""
    if not request.exact_tokens or request.max_tokens is None:
        return None
    return {"min_tokens": request.max_tokens}
