"""What both runtimes share: talking to a vLLM server, when it counts as ready, and the one-line fixes for its
failures."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, NamedTuple

from jarvis_core.api import EngineError, http_answer

if TYPE_CHECKING:
    import httpx

    from jarvis_core.api import Detection, EngineContext, Parallelism, Record

    from .hfcache import CacheCheck
    from .settings import ModelLaunch, VllmSettings

ENGINE = "vllm"


def engine_offline(ctx: EngineContext, check: CacheCheck | None) -> bool:
    """Whether the engine starts with HF_HUB_OFFLINE=1: always, unless downloads are forced and the model is not known
    to be complete here (a remote Docker daemon's cache cannot be checked, so vLLM downloads there itself). After
    Jarvis's own download the engine needs no network, and a Hub that is slow or gone must not hold up its start."""
    return not ctx.force_download or (check is not None and check.present)


def probe_client(base_url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> httpx.Client:
    """Short timeouts for readiness polls: a loading server refuses, resets or hangs."""
    from jarvis_core.api import make_client

    return make_client(base_url, timeout=timeout, connect_timeout=2.0, headers=headers)


def client(settings: VllmSettings, launch: ModelLaunch | None = None) -> httpx.Client:
    """The shared keep-alive client of the server's address, carrying the server's authentication (if any)."""
    from jarvis_core.api import shared_client

    found = shared_client(settings.base_url)
    for name, value in settings.auth_headers(launch).items():
        if found.headers.get(name) != value:
            found.headers[name] = value
    return found


def headers_for(ctx: EngineContext, settings: VllmSettings) -> dict[str, str]:
    """The authentication a server on the configured port wants, without knowing the model: that of the model a
    Jarvis record says it serves (its extra_args may give `--api-key`), else the global settings'."""
    for record in ctx.state.records(ENGINE, any_run=True):
        model = record.data.get("model")
        if record.data.get("port") == settings.port and isinstance(model, str):
            return settings.auth_headers(settings.launch(model))
    return settings.auth_headers()


class ServerInfo(NamedTuple):
    names: list[str]
    """Served names (`data[].id`): what clients send as `model`."""
    version: str | None
    roots: list[str]
    """The models behind them (`data[].root`: repo ID or path)."""

    def loaded_models(self) -> dict[str, int | None]:
        """For Detection.loaded_models: each served name and each model root (memory unknown)."""
        return {name: None for name in [*self.names, *self.roots]}


def server_info(base_url: str, headers: dict[str, str] | None = None) -> ServerInfo | None:
    """What a vLLM-like server answering `/v1/models` at base_url serves, else None."""
    import httpx

    from jarvis_core.api import openai_models

    with probe_client(base_url, timeout=2.0, headers=headers) as probe:
        try:  # a short timeout: a port that accepts but never answers must not hold detection up
            models = openai_models(probe, timeout=2.0)
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return ServerInfo([str(m.get("id")) for m in models], version(probe),
                          [str(m["root"]) for m in models if m.get("root")])


def not_vllm(base_url: str, headers: dict[str, str] | None = None) -> str | None:
    """Why what accepts connections at base_url is not (or does not answer as) a vLLM server, in a few words; None
    when nothing accepts connections there."""
    with probe_client(base_url, timeout=2.0, headers=headers) as probe:
        response, why = http_answer(probe, "/v1/models")
    if response is None:
        return why
    if response.status_code == 401:
        return ("it answers GET /v1/models with HTTP 401: it wants an API key (give it as --api-key in extra_args "
                "or VLLM_API_KEY in engines.vllm.environment, for a server Jarvis starts)")
    if response.status_code != 200:
        return f"it answers GET /v1/models with HTTP {response.status_code}"
    return "its answer to GET /v1/models is not a list of models"


def holder(ctx: EngineContext, settings: VllmSettings, *, asked: bool = False) -> str | None:
    """One line for a program that is not a vLLM server holding the configured port (local servers only): who
    holds it and why it is not vLLM; None when the port is free, a vLLM server answers there, or the server there
    is one Jarvis recorded (still loading, say). `asked`: the caller already found that no vLLM answers there."""
    from jarvis_core.api import port_open

    if settings.url or not port_open(settings.connect_host, settings.port):
        return None
    if any(r.data.get("port") == settings.port for r in ctx.state.records(ENGINE, any_run=True)):
        return None
    headers = headers_for(ctx, settings)
    if not asked and server_info(settings.base_url, headers) is not None:
        return None
    why = not_vllm(settings.base_url, headers)
    if why is None:  # it let go of the port meanwhile
        return None
    return port_clash_message(settings, listener(settings.port), f"not vLLM: {why}")


def listener(port: int) -> str:
    """The program listening on a local port, as `'python3 -m http.server' (pid 123)`."""
    from jarvis_core.api import listener_pid, process_name

    pid = listener_pid(port)
    name = process_name(pid) if pid is not None else None
    if name:
        return f"'{name}' (pid {pid})"
    return "a program Jarvis cannot identify (another user's?)"


def add_server(ctx: EngineContext, detection: Detection, settings: VllmSettings, notes: list[str]) -> None:
    """What `detect` adds for a server answering on the configured port, whichever runtime started it, or for a
    program that is not vLLM holding that port."""
    info = server_info(settings.base_url, headers_for(ctx, settings))
    detection.loaded_models = {}
    if info is not None:
        detection.loaded_models = info.loaded_models()
        detection.version = info.version or detection.version
        detection.reachable = True
        notes.append(f"a server at {settings.base_url} serves {', '.join(info.names) or 'no model'}")
        return
    taken = holder(ctx, settings, asked=True)
    if taken is not None:
        notes.append(taken)


def started_by_jarvis(ctx: EngineContext, settings: VllmSettings) -> bool:
    """Whether a server Jarvis recorded (this run's, in scope) is the one on the configured port."""
    return any(r.data.get("port") == settings.port for r in ctx.state.records(ENGINE))


def parallelism_fields(launch: ModelLaunch) -> dict[str, Any]:
    """What a start records about `--max-num-seqs`, for a later start that reuses the server to report it."""
    found = launch.parallelism()
    return {"parallel_setting": found.setting, "max_num_seqs": found.value, "max_num_seqs_detail": found.detail}


def reused_parallelism(ctx: EngineContext, settings: VllmSettings, launch: ModelLaunch) -> Parallelism:
    """What a running server that Jarvis reuses serves at once: what Jarvis recorded when it started it (this run's
    record, or another run's or a loadout's), else unknown: vLLM's API does not tell. Says so when the configured
    value could not reach the running server."""
    from jarvis_core.api import Parallelism, is_running

    from .settings import PARALLEL_SETTING

    records = [r for r in ctx.state.records(ENGINE, any_run=True) if r.data.get("port") == settings.port
               and r.data.get("served_name") == launch.served_name
               and (r.kind != "process" or (r.pid is not None and is_running(r.pid, r.create_time)))] \
        if not settings.url else []
    if not records:
        found = Parallelism(PARALLEL_SETTING, None, "unknown: this vLLM server was not started by Jarvis")
    elif "max_num_seqs" not in records[0].data:
        found = Parallelism(PARALLEL_SETTING, None, "unknown: the Jarvis that started this server did not record it")
    else:
        data = records[0].data
        value = data.get("max_num_seqs")
        found = Parallelism(str(data.get("parallel_setting") or PARALLEL_SETTING),
                            value if isinstance(value, int) else None, str(data.get("max_num_seqs_detail") or ""))
    wanted = launch.parallelism()
    if wanted.value is not None and wanted.value != found.value:
        note = (f"{wanted.setting} asks for {wanted.value}, which does not apply: this server was already running "
                f"(it applies to a server Jarvis starts)")
        found = Parallelism(found.setting, found.value, f"{found.detail}; {note}" if found.detail else note)
    return found


def endpoint(record: Record) -> tuple[str, int] | None:
    """The host and port a recorded server listens on (records of state files before version 2 hold a `host`)."""
    from urllib.parse import urlsplit

    port = record.data.get("port")
    if not isinstance(port, int):
        return None
    host = (urlsplit(record.address).hostname if record.address else None) or record.data.get("host")
    return str(host or "127.0.0.1"), port


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

        from jarvis_core.api import openai_serves

        if not self.healthy:
            try:
                status = self.client.get("/health").status_code
            except httpx.HTTPError:
                return False
            if status != 200 and status != 404:  # 404: a server without /health, /v1/models alone decides
                return False
            self.healthy = True
        return openai_serves(self.client, self.served_name)


# --- one-line explanations ---------------------------------------------------------------------------------------------

_PORT_CLASH = re.compile(r"port is already allocated|address already in use|ports are not available|"
                         r"bind: .*(in use|forbidden by its access permissions)", re.I)
_GPU_DRIVER = re.compile(r'could not select device driver .*capabilities: \[\[gpu\]\]', re.I)


def port_clash_message(settings: VllmSettings, holder: str | None = None, what: str = "") -> str:
    """One line: the configured port is taken (by `holder`, which is `what`: "not vLLM: ...")."""
    who = f" (held by {holder}{', ' + what if what else ''})" if holder else f" ({what})" if what else ""
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
    (_PORT_CLASH, "the port is taken: stop what holds it or set engines.vllm.port"),
    (re.compile(r"unrecognized arguments: serve", re.I),
     "this image's entrypoint already is `vllm serve`; remove `serve` from extra_args"),
    (re.compile(r"unrecognized arguments", re.I),
     "vLLM rejected a flag: check extra_args in config.yaml against this vLLM version"),
    (re.compile(r"No CUDA GPUs are available|Failed to infer device type|libcuda\.so", re.I),
     "vLLM found no usable GPU: check the NVIDIA driver, or `gpus` in config.yaml"),
)


def log_hint(log_text: str) -> str | None:
    """The fix for the last recognised failure in the log (later lines win: they are nearer the exit): what a failed
    start's message adds to its first line."""
    for line in reversed(log_text.splitlines()):
        for pattern, hint in _LOG_HINTS:
            if pattern.search(line):
                return hint
    return None


def error(message: str) -> EngineError:
    return EngineError(message, engine=ENGINE)


# --- redaction where text leaves the plugin ---------------------------------------------------------------------


def redact_result(value: Any, secrets: list[str]) -> Any:
    """`value` (a hook's result, or anything in it) with every text passed through the core's `redact`: strings,
    lists of them, and the text fields of result dataclasses (nested ones, e.g. `Parallelism`, too)."""
    import dataclasses

    from jarvis_core.api import redact

    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, list):
        return [redact_result(item, secrets) for item in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(redact_result(item, secrets) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {}
        for f in dataclasses.fields(value):
            old = getattr(value, f.name)
            new = redact_result(old, secrets)
            if new is not old and new != old:
                changes[f.name] = new
        if not changes:
            return value
        if value.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            return dataclasses.replace(value, **changes)
        for name, new in changes.items():
            setattr(value, name, new)
    return value


def redact_exception(exc: BaseException, secrets: list[str]) -> None:
    """Redact an exception's message in place (it keeps its type, engine and traceback)."""
    from jarvis_core.api import redact

    if exc.args and isinstance(exc.args[0], str):
        exc.args = (redact(exc.args[0], secrets), *exc.args[1:])
