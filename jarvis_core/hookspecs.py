"""The hooks a Jarvis plugin can implement. See docs/plugins.md for the contract and a complete example.

Lifecycle hooks are `firstresult`: the core calls them with `ctx.engine` set to one engine, and exactly one
plugin answers. An implementation returns None when `ctx.engine` is not one of its engines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Awaitable, Callable

import pluggy

if TYPE_CHECKING:
    import click

    from .engine import (
        Availability,
        ChatRequest,
        Detection,
        EngineContext,
        EngineSpec,
        InferResult,
        StartResult,
        StopResult,
        WarmupResult,
    )
    from .modelid import ModelRef

hookspec = pluggy.HookspecMarker("jarvis")
hookimpl = pluggy.HookimplMarker("jarvis")


@hookspec
def register_engines(register: Callable[[EngineSpec], None]) -> None:
    """Declare the engines this plugin provides, and the model-ID prefixes each claims, by calling `register`."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands or command groups to the `jarvis` command line."""


@hookspec(firstresult=True)
def detect(ctx: EngineContext) -> Detection | None:
    """Tell whether the engine is installed and a server answers (version, address), starting nothing."""


@hookspec(firstresult=True)
def is_available(ctx: EngineContext, model: ModelRef) -> Availability | None:
    """Tell whether the model is present locally, never downloading anything."""


@hookspec(firstresult=True)
def pull(ctx: EngineContext, model: ModelRef) -> Availability | None:
    """Download the model (and what the engine needs to run it) with progress; called only when downloads are forced."""


@hookspec(firstresult=True)
def start(ctx: EngineContext, model: ModelRef) -> StartResult | None:
    """Make the engine serve the model, starting it only if nothing answers, and record what was started."""


@hookspec(firstresult=True)
def warmup(ctx: EngineContext, model: ModelRef) -> WarmupResult | None:
    """Load the model and absorb the cold start with a request whose prompt differs from the tests'."""


@hookspec(firstresult=True)
def infer(ctx: EngineContext, model: ModelRef, request: ChatRequest) -> InferResult | None:
    """Send one chat request and return the answer with its stamps; a failed request is an error result, not a raise."""


@hookspec(firstresult=True)
def infer_async(ctx: EngineContext, model: ModelRef, request: ChatRequest) -> Awaitable[InferResult] | None:
    """Optional: `infer` as a coroutine, so that load levels drive every request in flight from one event loop."""


@hookspec(firstresult=True)
def stop(ctx: EngineContext) -> StopResult | None:
    """Unload the models Jarvis loaded and end what Jarvis started for the engine, as recorded in `ctx.state`."""
