"""Loading models into Ollama (warmup) and unloading the ones Jarvis loaded (stop).

Ollama loads a model on its first request, so warmup loads it explicitly (a chat with no messages, keep_alive from
the settings), then warms it with the core's `warm` (one short request with the shared WARMUP_PROMPT, which shares
nothing with the tests' prompts) and keeps Ollama's own load time in the result. Each model Jarvis loads is recorded
in the state file (kind `model`, the name in `record.data["model"]`) before the load is sent, so `stop` -- or
`jarvis cleanup` after a crash -- can unload it. A model that was already loaded before Jarvis asked is the user's:
it is not recorded, and never unloaded.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import defaultdict
from typing import TYPE_CHECKING

from jarvis_core.api import (
    EngineError,
    EngineTimeoutError,
    EngineUnavailableError,
    ModelMissingError,
    warm,
)

from .client import OllamaAPIError, chat, client_for, find, load, options_for, ps, shared, unload, version
from .names import canonical, same_model
from .settings import normalize_keep_alive

if TYPE_CHECKING:
    import httpx
    from jarvis_core.api import ChatRequest, EngineContext, InferResult, ModelRef, Record, WarmupResult

    from .settings import OllamaSettings

ENGINE = "ollama"


def keep_alive_for(ctx: EngineContext) -> int | str:
    """Pinned (-1) for `jarvis loadout up`; the configured idle timer for test runs."""
    settings: OllamaSettings = ctx.settings
    return -1 if ctx.keep_loaded else normalize_keep_alive(settings.keep_alive)


def model_records(ctx: EngineContext) -> list[Record]:
    """The models Jarvis loaded (kind `model`; the name is `record.data["model"]`, the server `record.address`)."""
    return [r for r in ctx.state.records(ENGINE, "model") if isinstance(r.data.get("model"), str)]


def model_name(record: Record) -> str:
    return str(record.data["model"])


def _recorded(ctx: EngineContext, name: str, url: str) -> bool:
    return any(r.address == url and same_model(model_name(r), name) for r in model_records(ctx))


# (state file, run, address, model) already checked by `note_first_use`: one /api/ps per model, not per request.
# `infer` runs on many threads at once (load runs): the check of a model runs once, under `_checks_lock`, and the
# other threads wait for it, so none can load the model before its record is written.
_checked: set[tuple[str, str, str, str]] = set()
_checks_lock = threading.Lock()


def _check_key(ctx: EngineContext, url: str, name: str) -> tuple[str, str, str, str]:
    return (str(ctx.state.path), ctx.run_id, url, canonical(name))


def note_first_use(ctx: EngineContext, client: httpx.Client, name: str) -> None:
    """Before the first request for a model that was not warmed up: if Ollama has not loaded it yet, this request
    loads it, so record it (as warmup would), for `stop` to unload it. Done before the clock starts, once per model:
    every later request costs one set lookup. Safe from many threads at once."""
    import httpx

    url = ctx.settings.url
    key = _check_key(ctx, url, name)
    if key in _checked:
        return
    with _checks_lock:
        if key in _checked:  # another thread checked it while this one waited
            return
        try:
            if _recorded(ctx, name, url):
                return
            try:
                if find(ps(client), name) is not None:
                    return
            except (httpx.HTTPError, OllamaAPIError):
                return
            ctx.state.add(ENGINE, "model", run_id=ctx.run_id, address=url, model=name)
        finally:
            _checked.add(key)  # also after a failed state write: measuring goes on, as before


def mark_checked(ctx: EngineContext, url: str, name: str) -> None:
    with _checks_lock:
        _checked.add(_check_key(ctx, url, name))


def forget_checks(url: str) -> None:
    with _checks_lock:
        _checked.difference_update({k for k in _checked if k[2] == url})


def warmup(ctx: EngineContext, model: ModelRef) -> WarmupResult:
    import httpx

    settings: OllamaSettings = ctx.settings
    url, name = settings.url, model.name
    timeout = ctx.config.timeouts.start
    keep_alive = keep_alive_for(ctx)
    client = shared(url)  # the connection the test requests will reuse; every call sets its own timeout
    if version(client) is None:
        raise EngineUnavailableError(f"No Ollama server answers at {url}, so '{name}' cannot be loaded; start "
                                     f"Ollama (ollama serve) or check engines.ollama.url / OLLAMA_HOST.",
                                     engine=ENGINE)
    try:
        loaded_before = find(ps(client), name) is not None
    except (httpx.HTTPError, OllamaAPIError):
        loaded_before = False
    record = None
    if not loaded_before and not _recorded(ctx, name, url):
        record = ctx.state.add(ENGINE, "model", run_id=ctx.run_id, address=url, model=name)
    mark_checked(ctx, url, name)
    t0 = time.perf_counter()
    try:
        reply = load(client, name, keep_alive=keep_alive, options=options_for(None, settings.num_ctx),
                     timeout=timeout)
    except httpx.TimeoutException:
        raise EngineTimeoutError(f"Ollama did not load '{name}' within {timeout:g} s (timeouts.start in "
                                 f"config.yaml); raise it if the model needs longer to load.",
                                 engine=ENGINE) from None
    except OllamaAPIError as exc:
        if record is not None:
            ctx.state.remove(record.id)
        if exc.status == 404:
            raise ModelMissingError(f"Model '{name}' is not on the Ollama server at {url}: pull it with "
                                    f"'ollama pull {name}', or run Jarvis with --force-download.",
                                    engine=ENGINE) from None
        raise EngineError(f"Ollama could not load '{name}': {exc.message}", engine=ENGINE) from None
    except httpx.HTTPError as exc:
        raise EngineError(f"Ollama stopped answering while loading '{name}' ({type(exc).__name__}: {exc}); "
                          f"see its log.", engine=ENGINE) from None
    t_loaded = time.perf_counter()

    def send(request: ChatRequest) -> InferResult:
        return chat(client, name, request, keep_alive=keep_alive, num_ctx=settings.num_ctx)

    warmed = warm(ctx, model, send, stream=True, since=t0)
    reported = reply.get("load_duration")
    if isinstance(reported, int) and reported > 0:
        load_s, source = reported / 1e9, "Ollama's load_duration"
    else:
        # Ollama's load-only reply carries no figures, and the warmup answer's load_duration covers only its own
        # scheduling (the model is loaded by then): the load request's wall time is the closest measure.
        load_s, source = t_loaded - t0, "wall time of the load request"
    detail = f"'{name}' loaded in {load_s:.2f} s ({source}); cold start {warmed.cold_start_s:.2f} s; {warmed.detail}"
    if loaded_before:
        detail += "; it was already loaded, so this was not a cold start (and Jarvis will not unload it)"
    if ctx.keep_loaded:
        detail += "; kept loaded (keep_alive -1)"
    return dataclasses.replace(warmed, load_s=load_s, detail=detail)


def unload_recorded(ctx: EngineContext) -> tuple[list[str], list[str], bool | None]:
    """Unload every model Jarvis recorded as loaded and confirm with `/api/ps`. Returns (done, left, released)."""
    import httpx

    done: list[str] = []
    left: list[str] = []
    released: bool | None = None
    by_address: dict[str, list[Record]] = defaultdict(list)
    for record in model_records(ctx):
        by_address[record.address or ctx.settings.url].append(record)
    deadline_s = ctx.config.timeouts.stop
    forget_checks(ctx.settings.url)
    for url, records in by_address.items():
        forget_checks(url)
        with client_for(url, timeout=min(deadline_s, 30.0)) as client:
            if version(client) is None:  # the server is gone, and its models with it
                for record in records:
                    ctx.state.remove(record.id)
                done.extend(f"{model_name(r)} (its server at {url} is no longer running)" for r in records)
                continue
            pending = []
            for record in records:
                try:
                    unload(client, model_name(record))
                    pending.append(record)
                except OllamaAPIError as exc:
                    if exc.status == 404:  # deleted meanwhile: nothing left to unload
                        ctx.state.remove(record.id)
                        continue
                    left.append(f"{model_name(record)} at {url}: unload failed: {exc.message}")
                except httpx.HTTPError as exc:
                    left.append(f"{model_name(record)} at {url}: unload failed: {type(exc).__name__}: {exc}")
            deadline = time.monotonic() + deadline_s
            still = pending
            while still:
                try:
                    loaded = ps(client)
                except (httpx.HTTPError, OllamaAPIError):
                    loaded = []
                still = [r for r in pending if find(loaded, model_name(r)) is not None]
                if not still or time.monotonic() >= deadline:
                    break
                time.sleep(0.1)
            for record in pending:
                if record in still:
                    left.append(f"{model_name(record)} is still loaded at {url} after {deadline_s:g} s")
                else:
                    ctx.state.remove(record.id)
                    done.append(f"unloaded {model_name(record)} at {url}")
            if pending:
                released = (released is not False) and not still
    if left:
        released = False
    return done, left, released
