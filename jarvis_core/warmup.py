"""The warmup every engine does the same way: one short request whose prompt shares nothing with the tests' prompts
(so no test hits a prompt cache the warmup filled), timed from the first byte sent until its answer is complete."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from .engine import ChatRequest, InferResult, Message, WarmupResult
from .errors import EngineError

if TYPE_CHECKING:
    from .engine import EngineContext
    from .modelid import ModelRef

WARMUP_PROMPT = "Warm-up ping 4417 from Jarvis; answer with the single word ready."
WARMUP_TOKENS = 8


def warmup_request(ctx: EngineContext, *, stream: bool = False) -> ChatRequest:
    """The warmup request. Its timeout is `timeouts.start`: a lazily loading engine loads the model while answering."""
    return ChatRequest(messages=[Message("user", WARMUP_PROMPT)], stream=stream, max_tokens=WARMUP_TOKENS,
                       temperature=0.0, timeout=ctx.config.timeouts.start)


def warm(ctx: EngineContext, model: ModelRef, send: Callable[[ChatRequest], InferResult], *, stream: bool = False,
         since: float | None = None) -> WarmupResult:
    """Send the warmup request through `send` (the plugin's own infer) and time the cold start from `since`
    (`time.perf_counter()`, default now: a plugin that loads the model first passes when it began)."""
    began = since if since is not None else time.perf_counter()
    result = send(warmup_request(ctx, stream=stream))
    elapsed = time.perf_counter() - began
    if not result.ok:
        raise EngineError(f"{ctx.engine}: the warmup request for {model.name} failed: {result.error}",
                          engine=ctx.engine)
    tokens = f"{result.output_tokens} tokens" if result.output_tokens is not None else f"{len(result.text)} characters"
    return WarmupResult(cold_start_s=elapsed, detail=f"warmup answered {tokens}")
