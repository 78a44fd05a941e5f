"""A Session ties the config, the engine registry, the state file and console progress together, and is the one
place the core calls the lifecycle hooks: each call goes to the plugin that registered the engine (and only to it,
through `plugins.engine_hook`), and its answer comes back. Whatever that plugin raises is blamed on it.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Awaitable, Callable

from .config import Config, load_config
from .engine import (
    Availability,
    ChatRequest,
    Detection,
    EngineContext,
    InferResult,
    StartResult,
    StopResult,
    WarmupResult,
)
from .errors import EngineError, JarvisError, PluginError, UsageError
from .modelid import ModelRef, resolve
from .plugins import engine_hook, get_registry, own_impls
from .progress import Progress
from .registry import EngineRegistry
from .state import StateStore

log = logging.getLogger("jarvis")


class Session:
    def __init__(self, config: Config | None = None, *, state: StateStore | None = None,
                 progress: Progress | None = None, force_download: bool = False, run_id: str | None = None,
                 registry: EngineRegistry | None = None, keep_loaded: bool = False) -> None:
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.config = config if config is not None else load_config()
        self.registry = registry if registry is not None else get_registry()
        self.state = state if state is not None else StateStore(run_ids={self.run_id})
        self.progress = progress if progress is not None else Progress()
        self.force_download = force_download
        self.keep_loaded = keep_loaded
        self._contexts: dict[str, EngineContext] = {}

    def resolve(self, model_id: str) -> ModelRef:
        return resolve(model_id, self.registry, self.config.default_engine)

    def context(self, engine: str) -> EngineContext:
        """The context handed to the engine's hooks; its settings are validated on first use."""
        if engine not in self.registry.engines:
            raise UsageError(f"Unknown engine '{engine}'; installed engines: "
                             f"{', '.join(sorted(self.registry.engines)) or 'none'}.")
        if engine not in self._contexts:
            spec = self.registry.engines[engine]
            settings = self.config.engine_settings(engine, spec.settings)
            self._contexts[engine] = EngineContext(
                engine=engine, settings=settings, config=self.config, state=self.state, progress=self.progress,
                run_id=self.run_id, force_download=self.force_download,
                keep_loaded=self.keep_loaded)
        return self._contexts[engine]

    def validate_settings(self) -> None:
        """Check the engines config.yaml names and build every installed engine's settings now, so a wrong
        config.yaml fails before anything starts."""
        self.config.check_engines(self.registry.engines)
        for engine in self.registry.engines:
            self.context(engine)

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def detect(self, engine: str) -> Detection:
        """Detect one engine. A plugin failing inside `detect` is reported in the result, not raised."""
        ctx = self.context(engine)
        try:
            return self._call("detect", ctx)
        except JarvisError as exc:
            return Detection(engine=engine, installed=False, reachable=False, detail=str(exc))
        except Exception as exc:  # a third-party plugin's bug must not take `jarvis engines` down
            log.debug("detect failed", exc_info=True)
            plugin = self.registry.engines[engine].plugin
            return Detection(engine=engine, installed=False, reachable=False,
                             detail=f"plugin '{plugin}' failed in detect: {type(exc).__name__}: {exc}")

    def is_available(self, model: ModelRef) -> Availability:
        return self._call("is_available", self.context(model.engine), model=model)

    def pull(self, model: ModelRef) -> Availability:
        return self._call("pull", self.context(model.engine), model=model)

    def start(self, model: ModelRef) -> StartResult:
        return self._call("start", self.context(model.engine), model=model)

    def warmup(self, model: ModelRef) -> WarmupResult:
        return self._call("warmup", self.context(model.engine), model=model)

    def infer(self, model: ModelRef, request: ChatRequest) -> InferResult:
        return self._call("infer", self.context(model.engine), model=model, request=request)

    def async_infer(self, model: ModelRef) -> Callable[[ChatRequest], Awaitable[InferResult]] | None:
        """The engine's `infer_async` as a sender for load levels, or None when its plugin has none (load levels then
        send from threads through `infer`)."""
        ctx = self.context(model.engine)
        plugin = self.registry.engines[model.engine].plugin
        if not own_impls("infer_async", plugin):
            return None

        async def send(request: ChatRequest) -> InferResult:
            pending = self._call("infer_async", ctx, model=model, request=request)
            try:
                result = await pending
            except JarvisError:
                raise
            except Exception as exc:  # raised inside the coroutine, past `_call`: blamed the same way
                log.debug("infer_async failed", exc_info=True)
                raise EngineError(f"{ctx.engine}: infer_async failed in plugin '{plugin}': {type(exc).__name__}: "
                                  f"{exc}", engine=ctx.engine) from exc
            if not isinstance(result, InferResult):
                raise PluginError(f"Plugin '{plugin}' returned {type(result).__name__} from 'infer_async' for engine "
                                  f"'{ctx.engine}', not an InferResult.")
            return result

        return send

    def stop(self, engine: str) -> StopResult:
        return self._call("stop", self.context(engine))

    def _call(self, hook: str, ctx: EngineContext, **kwargs: Any) -> Any:
        plugin = self.registry.engines[ctx.engine].plugin
        try:
            result = engine_hook(hook, plugin)(ctx=ctx, **kwargs)
        except JarvisError:
            raise
        except Exception as exc:
            # A plugin's bug, or a library error it let through (a Docker hiccup): one engine's failure, reported as
            # such, must not end a whole campaign. JARVIS_DEBUG=1 keeps the traceback.
            log.debug("%s failed", hook, exc_info=True)
            raise EngineError(f"{ctx.engine}: {hook} failed in plugin '{plugin}': {type(exc).__name__}: {exc}",
                              engine=ctx.engine) from exc
        if result is None:
            raise PluginError(f"Plugin '{plugin}' returned nothing from '{hook}' for engine '{ctx.engine}'.")
        return result
