"""A benchmark engine plugin (prefix `bench_`) whose every cost is scripted, for item 5 (campaign overhead).

Starting a model starts an `OpenAIStandin` in the Jarvis process that loads for `load_s` (the port refuses
connections until then, like `vllm serve`), waited for with `processes.wait_until_ready` and `openai_api.serves`, as
the real plugins do. Every answer has `tokens` tokens: the first `first_token_s` after the request is read, the next
ones `token_s` apart; requests go through `openai_api.chat` on one keep-alive client per model. So the engine spends,
per model, `load_s + requests × (first_token_s + (tokens − 1) × token_s)`, exactly, and everything else in the run
is Jarvis.

Each engine event is appended, stamped with `perf_counter_ns()`, to the JSON-lines file named by
`JARVIS_BENCH_ENGINE_LOG`: `start` (load begins), `ready`, and per request `request` with the server's own received
and done stamps; the parent adds them up. Settings (`engines.bench` in config.yaml): load_s, first_token_s,
token_s, tokens.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

from jarvis_core.api import (
    Availability,
    Detection,
    EngineSpec,
    InferResult,
    StartResult,
    StopResult,
    WarmupResult,
    hookimpl,
)

ENGINE = "bench"
_servers: dict[str, Any] = {}
_clients: dict[str, Any] = {}


@dataclass
class BenchSettings:
    load_s: float = 1.0
    first_token_s: float = 0.05
    token_s: float = 0.01
    tokens: int = 16


def _log(event: dict[str, Any]) -> None:
    path = os.environ.get("JARVIS_BENCH_ENGINE_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(event) + "\n")


@hookimpl
def register_engines(register: Any) -> None:
    register(EngineSpec(ENGINE, ("bench_",), "scripted stand-in engine for benchmarks", settings=BenchSettings))


@hookimpl
def detect(ctx: Any) -> Detection | None:
    if ctx.engine != ENGINE:
        return None
    return Detection(ENGINE, installed=True, reachable=bool(_servers), version="bench", address="in-process")


@hookimpl
def is_available(ctx: Any, model: Any) -> Availability | None:
    if ctx.engine != ENGINE:
        return None
    return Availability(True, detail="scripted")


@hookimpl
def pull(ctx: Any, model: Any) -> Availability | None:
    if ctx.engine != ENGINE:
        return None
    return Availability(True, detail="scripted")


@hookimpl
def start(ctx: Any, model: Any) -> StartResult | None:
    if ctx.engine != ENGINE:
        return None
    from jarvis_core.http import make_client
    from jarvis_core.openai_api import serves
    from jarvis_core.processes import wait_until_ready

    from tests.standins.openai_server import OpenAIStandin

    s: BenchSettings = ctx.settings
    if model.name in _servers:
        return StartResult(address=_servers[model.name].url, started=False)
    server = OpenAIStandin([model.name], ready_after=s.load_s, ready_mode="refuse", role_delay=0.0,
                           first_token_delay=s.first_token_s, token_delay=s.token_s, output_tokens=s.tokens)
    _log({"event": "start", "model": model.name, "t": time.perf_counter_ns(), "load_s": s.load_s})
    server.start()
    client = make_client(server.url)
    _servers[model.name], _clients[model.name] = server, client
    wait_until_ready(lambda: serves(client, model.name), timeout=30, what=f"bench {model.name}")
    _log({"event": "ready", "model": model.name, "t": time.perf_counter_ns()})
    return StartResult(address=server.url, started=True, version="bench")


def _chat(model: Any, request: Any) -> InferResult:
    from jarvis_core.openai_api import chat

    server = _servers[model.name]
    before = len(server.requests)
    result = chat(_clients[model.name], model.name, request)
    ems = {kind: t for kind, t in (server.emissions[before] or [])} if len(server.emissions) > before else {}
    _log({"event": "request", "model": model.name, "received": ems.get("received"), "done": ems.get("done"),
          "t_send": result.t_send, "t_end": result.t_end, "tokens": result.output_tokens, "error": result.error})
    return result


@hookimpl
def warmup(ctx: Any, model: Any) -> WarmupResult | None:
    if ctx.engine != ENGINE:
        return None
    from jarvis_core.engine import ChatRequest, Message

    t0 = time.perf_counter()
    result = _chat(model, ChatRequest([Message("user", "Reply with the single word: ready.")], stream=True,
                                      max_tokens=ctx.settings.tokens))
    return WarmupResult(cold_start_s=time.perf_counter() - t0, detail=result.error or "")


@hookimpl
def infer(ctx: Any, model: Any, request: Any) -> InferResult | None:
    if ctx.engine != ENGINE:
        return None
    return _chat(model, request)


@hookimpl
def stop(ctx: Any) -> StopResult | None:
    if ctx.engine != ENGINE:
        return None
    stopped = []
    for name in list(_servers):
        _clients.pop(name).close()
        _servers.pop(name).stop()
        stopped.append(name)
    _log({"event": "stop", "t": time.perf_counter_ns()})
    return StopResult(stopped=stopped)
