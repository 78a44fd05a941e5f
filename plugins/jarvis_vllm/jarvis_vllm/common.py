"""What both runtimes share: talking to a vLLM server, waiting for eager readiness, and turning failures into one line
that says how to fix them."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from jarvis_core.errors import EngineError

if TYPE_CHECKING:
    import httpx

    from jarvis_core.engine import EngineContext

    from .settings import VllmSettings

ENGINE = "vllm"
NOTE_EVERY_S = 10.0

_clients: dict[str, Any] = {}


def client_for(base_url: str) -> httpx.Client:
    """One client per server for inference, so every request reuses a warm connection (fair timings)."""
    from jarvis_core.http import make_client

    client = _clients.get(base_url)
    if client is None or client.is_closed:
        client = _clients[base_url] = make_client(base_url)
    return client


def close_client(base_url: str) -> None:
    client = _clients.pop(base_url, None)
    if client is not None:
        client.close()


def probe_client(base_url: str, timeout: float = 5.0) -> httpx.Client:
    """Short timeouts for readiness polls: a loading server refuses, resets or hangs (engines.md §2.1)."""
    from jarvis_core.http import make_client

    return make_client(base_url, timeout=timeout, connect_timeout=2.0)


class ServerInfo(NamedTuple):
    names: list[str]
    """Served names (`data[].id`): what clients send as `model`."""
    version: str | None
    roots: list[str]
    """The models behind them (`data[].root`: repo ID or path)."""

    def loaded_models(self) -> dict[str, int | None]:
        """For Detection.loaded_models: each served name and each model root (memory unknown)."""
        return {name: None for name in [*self.names, *self.roots]}


def server_info(base_url: str) -> ServerInfo | None:
    """What a vLLM-like server answering `/v1/models` at base_url serves, else None."""
    import httpx

    from jarvis_core.openai_api import list_models

    with probe_client(base_url, timeout=2.0) as client:
        try:  # a short timeout: a port that accepts but never answers must not hold detection up
            models = list_models(client, timeout=2.0)
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return ServerInfo([str(m.get("id")) for m in models], version(client),
                          [str(m["root"]) for m in models if m.get("root")])


def version(client: httpx.Client) -> str | None:
    import httpx

    try:
        response = client.get("/version", timeout=5.0)
        if response.status_code == 200:
            value = response.json().get("version")
            return str(value) if value else None
    except (httpx.HTTPError, ValueError, AttributeError):
        pass
    return None


class Readiness:
    """vLLM is ready when `/health` answers 200 and then `/v1/models` lists the served name."""

    def __init__(self, client: httpx.Client, served_name: str) -> None:
        self.client = client
        self.served_name = served_name
        self.healthy = False

    def __call__(self) -> bool:
        import httpx

        from jarvis_core.openai_api import serves

        if not self.healthy:
            try:
                status = self.client.get("/health").status_code
            except httpx.HTTPError:
                return False
            if status == 404:  # servers without /health: /v1/models alone decides
                self.healthy = True
            elif status != 200:
                return False
            self.healthy = True
        return serves(self.client, self.served_name)


def wait_ready(ctx: EngineContext, *, base_url: str, served_name: str, what: str,
               alive: Callable[[], str | None], last_log_line: Callable[[], str]) -> tuple[float, str | None]:
    """Wait for eager readiness with progress notes; returns (seconds waited, server version). Raises EngineError."""
    from jarvis_core.processes import wait_until_ready

    next_note = [NOTE_EVERY_S]

    def on_wait(elapsed: float) -> None:
        if elapsed >= next_note[0]:
            next_note[0] += NOTE_EVERY_S
            line = last_log_line().strip()
            ctx.progress.note(f"vllm: {served_name} is loading ({elapsed:.0f} s)" + (f": {line[:160]}" if line else ""))

    with probe_client(base_url) as client:
        waited = wait_until_ready(Readiness(client, served_name), timeout=ctx.config.timeouts.start, what=what,
                                  alive=throttled(alive, 0.5), on_wait=on_wait)
        return waited, version(client)


def throttled(check: Callable[[], str | None], every: float) -> Callable[[], str | None]:
    last = [0.0]

    def run() -> str | None:
        now = time.monotonic()
        if now - last[0] < every:
            return None
        last[0] = now
        return check()

    return run


# --- one-line explanations ---------------------------------------------------------------------------------------------

_PORT_CLASH = re.compile(r"port is already allocated|address already in use|ports are not available|"
                         r"bind: .*(in use|forbidden by its access permissions)", re.I)
_GPU_DRIVER = re.compile(r'could not select device driver .*capabilities: \[\[gpu\]\]', re.I)


def port_clash_message(settings: VllmSettings, holder: str | None = None) -> str:
    who = f" (held by {holder})" if holder else ""
    return (f"Port {settings.port} on {settings.connect_host} is already in use{who}: stop what holds it, or set "
            f"engines.vllm.port in config.yaml to a free port.")


def gpu_runtime_message() -> str:
    return ("Docker cannot give the container a GPU (no NVIDIA runtime: could not select device driver with "
            "capabilities [[gpu]]): install the NVIDIA Container Toolkit and restart Docker (Docker Desktop: use the "
            "WSL2 backend with a current NVIDIA driver), or set engines.vllm.gpus: none in config.yaml.")


def is_port_clash(text: str) -> bool:
    return bool(_PORT_CLASH.search(text))


def is_gpu_refusal(text: str) -> bool:
    return bool(_GPU_DRIVER.search(text))


_LOG_HINTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"less than desired GPU memory utilization|Free memory on device", re.I),
     "the GPU has too little free memory: stop other engines (unload Ollama models) or lower "
     "engines.vllm.gpu_memory_utilization"),
    (re.compile(r"CUDA out of memory|OutOfMemoryError", re.I),
     "out of GPU memory: lower engines.vllm.gpu_memory_utilization or max_model_len, or use a smaller model"),
    (re.compile(r"max seq len|estimated maximum model length|larger than the maximum number of tokens", re.I),
     "the context does not fit: set a smaller max_model_len for this model in config.yaml"),
    (re.compile(r"LocalEntryNotFoundError|offline mode is enabled|Cannot find .*in the cached files", re.I),
     "the model is not (completely) in the Hugging Face cache: run with --force-download"),
    (re.compile(r"GatedRepoError|401 Client Error|Access to model .* is restricted", re.I),
     "the model is gated: set HF_TOKEN to a token that has access"),
    (re.compile(r"ipc path .* is longer than", re.I),
     "vLLM's IPC socket path is too long: give it a shorter TMPDIR (engines.vllm.environment)"),
    (re.compile(r"address already in use", re.I),
     "the port is taken: stop what holds it or set engines.vllm.port"),
    (re.compile(r"unrecognized arguments: serve", re.I),
     "this image's entrypoint already is `vllm serve`; remove `serve` from extra_args"),
    (re.compile(r"unrecognized arguments", re.I),
     "vLLM rejected a flag: check extra_args in config.yaml against this vLLM version"),
    (re.compile(r"No CUDA GPUs are available|Failed to infer device type|libcuda\.so", re.I),
     "vLLM found no usable GPU: check the NVIDIA driver, or `gpus` in config.yaml"),
)


def log_hint(log_text: str) -> str | None:
    """The fix for the last recognised failure in the log (later lines win: they are nearer the exit)."""
    for line in reversed(log_text.splitlines()):
        for pattern, hint in _LOG_HINTS:
            if pattern.search(line):
                return hint
    return None


def failure_message(what: str, reason: str, log_text: str, *, secrets: list[str], log_file: str | None = None,
                    command: str | None = None) -> str:
    """`<what> <reason>` (+ the fix when the log tells it), then the launch command and the last log lines."""
    from .settings import redact

    hint = log_hint(log_text)
    lines = [f"{what} {reason}" + (f" ({hint})" if hint else "") + "."]
    if command:
        lines.append(f"command: {command}")
    if log_text.strip():
        lines.append("last log lines:")
        lines += ["  " + line for line in log_text.strip().splitlines()[-15:]]
    if log_file:
        lines.append(f"full log: {log_file}")
    return redact("\n".join(lines), secrets)


def error(message: str) -> EngineError:
    return EngineError(message, engine=ENGINE)
