"""The values that flow through the engine hooks: what a plugin declares, receives and returns.

Everything here is plain data. Plugins build these objects; the core reads them. Times are nanoseconds on
one monotonic clock, `time.perf_counter_ns()`, as docs/metrics.md defines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

if TYPE_CHECKING:
    from .config import Config
    from .progress import Progress
    from .state import StateStore


@dataclass(frozen=True)
class EngineSpec:
    """An engine a plugin provides, declared through the `register_engines` hook."""

    name: str
    """Engine name, lower case (`ollama`, `vllm`); the key of its section under `engines:` in config.yaml."""
    prefixes: tuple[str, ...]
    """Model-ID prefixes this engine claims (`ol_`, `vllm:`); matched case-insensitively. The first is canonical."""
    description: str = ""
    settings: type | None = None
    """A dataclass describing the engine's config section; the core builds and type-checks it from the YAML."""
    gpu_heavy: bool = False
    """True when a running engine holds most of the GPU's memory (vLLM): stopped before another engine starts."""
    one_model_at_a_time: bool = False
    """True when a server of this engine serves one model at a time (vLLM, llama.cpp): starting the next model
    replaces the previous one, so a loadout cannot keep two resident."""
    same_model: Callable[[str, str], bool] | None = None
    """Whether two model names the engine uses mean the same model (Ollama: `qwen2.5` is `qwen2.5:latest`);
    None compares them as written."""
    plugin: str = ""
    """Set by the core: the name of the plugin that registered the engine."""


@dataclass
class EngineContext:
    """What a lifecycle hook gets besides the model: which engine is asked, its settings, and the run's services."""

    engine: str
    """The engine this call is for: one of those the plugin registered (the core calls only the owner's hooks)."""
    settings: Any
    """The engine's settings: an instance of `EngineSpec.settings`, built from config.yaml and the environment."""
    config: Config
    state: StateStore
    """Where a plugin records what it starts (processes, containers, loaded models), so it can be cleaned up."""
    progress: Progress
    run_id: str = ""
    force_download: bool = False
    """Downloads were forced (`--force-download`); `pull` is only ever called then."""
    keep_loaded: bool = False
    """Keep models resident with no idle unload (`jarvis loadout up`); a test run lets the engine's timer apply."""


# --- results of the lifecycle hooks -------------------------------------------------------------------------------


@dataclass
class Detection:
    """What `detect` found; it starts nothing."""

    engine: str
    installed: bool
    """The engine's program or runtime is there (executable on PATH, Docker daemon and image, ...)."""
    reachable: bool
    """A server answers at `address`."""
    version: str | None = None
    address: str | None = None
    detail: str = ""
    """One line for the user: where it was found, or what is missing and how to fix it."""
    started_by_jarvis: bool = False
    loaded_models: dict[str, int | None] | None = None
    """Models resident right now, with the memory each holds in bytes where the engine tells; None when unknown."""

    @property
    def usable(self) -> bool:
        return self.installed or self.reachable


@dataclass
class Availability:
    """Whether a model is present locally (`is_available`), or the outcome of `pull`."""

    present: bool
    detail: str = ""
    """Where it was found, or why it is missing."""
    fix: str | None = None
    """The command that makes it present, shown next to MISSING."""
    revision: str | None = None
    """Digest or revision of what is present, recorded in the report."""
    capabilities: tuple[str, ...] | None = None
    """What the model can do where the engine tells (`("vision",)`); None when unknown."""
    memory_bytes: int | None = None
    """GPU memory the model will hold once loaded, where the plugin can estimate it (vLLM: its reserved share)."""
    memory_setting: str | None = None
    """The config key that changes `memory_bytes` (`engines.vllm.gpu_memory_utilization`), for fit errors."""


@dataclass(frozen=True)
class Parallelism:
    """How many requests the engine serves at once, and the setting that changes it: what explains where throughput
    stops growing under load."""

    setting: str
    """The engine's own name for it and Jarvis's config key: `OLLAMA_NUM_PARALLEL (engines.ollama.num_parallel)`."""
    value: int | None
    """Requests served at once; None when the engine does not tell (a server Jarvis did not start)."""
    detail: str = ""
    adjustable: bool = True
    """False when no setting changes it (llama-cpp-python's server has one slot): then raising it is no advice."""


@dataclass
class StartResult:
    """The engine serves the model at `address` (`start`)."""

    address: str
    started: bool
    """True when Jarvis launched something (and recorded it); False when a running server was reused."""
    detail: str = ""
    version: str | None = None
    parallelism: Parallelism | None = None
    """How many requests the server serves at once, where the plugin knows."""


@dataclass
class WarmupResult:
    """The cold load, absorbed by `warmup` with a prompt unlike the tests'."""

    cold_start_s: float
    """Wall clock from sending the first request until the warmup answer completed."""
    load_s: float | None = None
    """The engine's own load time where it reports one (Ollama `load_duration`)."""
    detail: str = ""


@dataclass
class StopResult:
    """What `stop` did."""

    stopped: list[str] = field(default_factory=list)
    """Human-readable list of what was unloaded or ended."""
    left_running: list[str] = field(default_factory=list)
    """What was found running but not started by Jarvis, and so left alone."""
    memory_released: bool | None = None
    """True when the engine (or the GPU) confirmed the memory came back, None when it cannot be checked."""
    detail: str = ""


# --- inference ----------------------------------------------------------------------------------------------------


@dataclass
class Message:
    role: Literal["system", "user", "assistant"]
    content: str
    images: tuple[bytes, ...] = ()
    """Raw image bytes (PNG/JPEG); each engine encodes them the way its API wants."""


@dataclass
class ChatRequest:
    """One chat request. `None` settings are left to the engine's defaults."""

    messages: list[Message]
    stream: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    exact_tokens: bool = False
    """Generate exactly `max_tokens` tokens where the engine allows it (vLLM `ignore_eos`, llama.cpp `min_tokens`), for
    load runs with a pinned output length; an engine that cannot stops where it stops (`finish_reason` says so)."""
    timeout: float = 300.0
    """Seconds allowed for the whole request. Engine-specific options (Ollama's keep_alive and num_ctx) live in the
    engine's settings, not here."""


TokenSource = Literal["server", "estimated"]


@dataclass
class InferResult:
    """One answer and its client-side stamps (`time.perf_counter_ns()`), taken as bytes arrive, before parsing."""

    stream: bool
    t_send: int
    """Request written."""
    text: str = ""
    error: str | None = None
    """Set when the request or the engine failed, also when the error arrived inside a stream."""
    t_first_byte: int | None = None
    t_first_token: int | None = None
    """Arrival of the first chunk with non-empty content or reasoning text (streaming only)."""
    t_last_token: int | None = None
    """Arrival of the last content chunk (streaming) or of the complete response (non-streaming)."""
    t_end: int | None = None
    """Stream closed."""
    chunk_times: list[int] = field(default_factory=list)
    """Arrival stamp of every content chunk (streaming)."""
    output_tokens: int | None = None
    token_source: TokenSource = "server"
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    server: dict[str, Any] = field(default_factory=dict)
    """The engine's own figures, as it reported them (Ollama: load_duration, eval_count, ... in ns)."""

    @property
    def ok(self) -> bool:
        return self.error is None
