"""An in-process engine plugin for core tests: it implements every hook, answers from memory, starts nothing real."""

from __future__ import annotations

import time
from dataclasses import dataclass

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


@dataclass
class EchoSettings:
    url: str = "http://127.0.0.1:1"
    models: list[str] | None = None
    token: str | None = None

    def apply_environment(self, environ):
        if environ.get("ECHO_URL"):
            self.url = environ["ECHO_URL"]
        return self


class EchoPlugin:
    """Engine `echo`, prefixes `echo_` and `ec:`; every call is recorded in `calls`."""

    def __init__(self, name: str = "echo", prefixes: tuple[str, ...] = ("echo_", "ec:")) -> None:
        self.name = name
        self.prefixes = prefixes
        self.calls: list[tuple[str, str]] = []

    @hookimpl
    def register_engines(self, register):
        register(EngineSpec(self.name, self.prefixes, "in-memory test engine", settings=EchoSettings))

    @hookimpl
    def detect(self, ctx):
        self.calls.append(("detect", ""))
        return Detection(self.name, installed=True, reachable=False, version="1.0", address=ctx.settings.url)

    @hookimpl
    def is_available(self, ctx, model):
        self.calls.append(("is_available", model.name))
        present = model.name in (ctx.settings.models or [])
        return Availability(present, "in memory" if present else "not in the list", fix="add it to models")

    @hookimpl
    def pull(self, ctx, model):
        self.calls.append(("pull", model.name))
        ctx.settings.models = [*(ctx.settings.models or []), model.name]
        return Availability(True, "pulled")

    @hookimpl
    def start(self, ctx, model):
        self.calls.append(("start", model.name))
        ctx.state.add(self.name, "model", run_id=ctx.run_id, model=model.name)
        return StartResult(ctx.settings.url, started=True)

    @hookimpl
    def warmup(self, ctx, model):
        self.calls.append(("warmup", model.name))
        return WarmupResult(cold_start_s=0.5, load_s=0.4)

    @hookimpl
    def infer(self, ctx, model, request):
        self.calls.append(("infer", model.name))
        t = time.perf_counter_ns()
        text = request.messages[-1].content[::-1]
        return InferResult(stream=request.stream, t_send=t, text=text, t_first_byte=t + 1_000_000,
                           t_first_token=t + 2_000_000 if request.stream else None, t_last_token=t + 4_000_000,
                           t_end=t + 4_000_000, output_tokens=3, chunk_times=[t + 2_000_000, t + 3_000_000, t + 4_000_000])

    @hookimpl
    def stop(self, ctx):
        self.calls.append(("stop", ""))
        records = ctx.state.records(engine=self.name)
        for record in records:
            ctx.state.remove(record.id)
        return StopResult(stopped=[r.data["model"] for r in records], memory_released=True)
