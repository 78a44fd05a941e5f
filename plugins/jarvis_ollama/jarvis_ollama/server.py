"""The `ollama serve` process: finding the program, starting it when nothing answers, and ending it again.

Jarvis starts at most one server per address, through the core's `launch` (which records it in the state file
before waiting for it, so a crash during startup is still cleaned up, and ends it again if it never gets ready), and
only ever ends the process tree it started (`end`). A server Jarvis did not start
is ended only when `stop_foreign_server` is true, it runs on this machine and its process looks like Ollama (never
whatever else holds the port); then the Windows tray app (`ollama app.exe`), which restarts
`serve` about a second after it exits, is ended first. A server run by systemd is never killed (it would come back
3 s later): the user is told the command that stops it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from jarvis_core.api import (
    EngineError,
    EngineUnavailableError,
    Parallelism,
    StartResult,
    await_ready,
    create_time,
    end,
    end_tree,
    exit_reason,
    http_answer,
    launch,
    listener_pid,
    port_open,
    process_name,
    redact,
    running,
)

from .client import client_for, version

if TYPE_CHECKING:
    from jarvis_core.api import EngineContext, Record

    from .settings import OllamaSettings

ENGINE = "ollama"
LOG_NAME = "ollama-serve.log"
INSTALL_HINT = ("install Ollama from https://ollama.com/download (on Linux: curl -fsSL https://ollama.com/install.sh "
                "| sh), or set engines.ollama.executable in config.yaml to the full path of the ollama program")
TRAY_NAMES = ("ollama app.exe", "ollama app")
PARALLEL_SETTING = "OLLAMA_NUM_PARALLEL (engines.ollama.num_parallel)"
PARALLEL_DEFAULT = "Ollama's default (1 in current builds; some older builds pick 1 or 4 by free memory)"


# --- the program --------------------------------------------------------------------------------------------------


def default_locations() -> list[Path]:
    """Where the installers put `ollama` when it is not on PATH."""
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        return [Path(local) / "Programs" / "Ollama" / "ollama.exe"] if local else []
    if sys.platform == "darwin":
        return [Path("/Applications/Ollama.app/Contents/Resources/ollama"), Path("/usr/local/bin/ollama")]
    return [Path("/usr/local/bin/ollama"), Path("/usr/bin/ollama")]


def find_executable(settings: OllamaSettings) -> str | None:
    """The full path of the `ollama` program, or None when it is not installed."""
    configured = os.path.expanduser(settings.executable)
    found = shutil.which(configured)
    if found:
        return found
    if settings.executable == "ollama":
        for path in default_locations():
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
    return None


def program_version(exe: str, settings: OllamaSettings, timeout: float = 5.0) -> str | None:
    """The version the `ollama` program itself reports (`ollama --version`, which prints "client version is X" when no
    server answers). Starts no server; None when it cannot tell."""
    import subprocess

    env = {**os.environ, "OLLAMA_HOST": settings.serve_host}
    try:
        done = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL, errors="replace")
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.findall(r"version is\s+v?(\d[\w.+-]*)", done.stdout + done.stderr)
    return found[-1] if found else None


def not_installed_message(settings: OllamaSettings) -> str:
    if settings.executable != "ollama":
        return (f"The ollama program '{settings.executable}' (engines.ollama.executable) does not exist or is not "
                f"executable; fix the path, or {INSTALL_HINT}.")
    return f"Ollama is not installed (no 'ollama' on PATH): {INSTALL_HINT}."


# --- what answers at the address ----------------------------------------------------------------------------------


def server_version(url: str, timeout: float = 1.0) -> str | None:
    """The version of the Ollama server at `url`, or None when none answers."""
    with client_for(url, timeout=timeout) as client:
        return version(client, timeout=timeout)


def loaded_models(url: str) -> dict[str, int | None] | None:
    """The models resident now (`/api/ps`) with the bytes each holds; None when the server does not tell."""
    import httpx

    from .client import OllamaAPIError, memory, ps

    with client_for(url, timeout=5.0) as client:
        try:
            entries = ps(client)
        except (httpx.HTTPError, OllamaAPIError):
            return None
    return {str(e.get("name") or e.get("model")): memory(e) for e in entries if e.get("name") or e.get("model")}


def port_holder(settings: OllamaSettings) -> str | None:
    """When something that does not answer as Ollama accepts connections at the address: that program (by name and
    pid, on this machine) and why it is not Ollama, e.g. `'python3 -m http.server' (pid 7), which is not Ollama: it
    answers GET /api/version with HTTP 404`. None when nothing accepts connections there."""
    address = settings.address
    if not port_open(address.connect_host, address.port):
        return None
    why = not_ollama(settings.url)
    if why is None:  # it let go of the port meanwhile, or it answers as Ollama after all
        return None
    if not is_local(address.connect_host):
        return f"a program on {address.connect_host} which is not Ollama: {why}"
    pid = listener_pid(address.port)
    name = process_name(pid)
    who = f"'{redact(name)}' (pid {pid})" if name else "a program Jarvis cannot identify (owned by another user?)"
    if pid is not None and _is_ollama_program(pid):
        return f"{who}, an Ollama that does not answer ({why}: still starting, or hung?)"
    return f"{who}, which is not Ollama: {why}"


def _is_ollama_program(pid: int) -> bool:
    """The process is the `ollama` program itself (`ollama serve`, `ollama.exe`, or a script named ollama run by
    an interpreter), not merely a command line that mentions it."""
    import psutil

    try:
        proc = psutil.Process(pid)
        words = [proc.name(), *proc.cmdline()[:2]]
    except psutil.Error:
        return False
    names = [Path(word).name.lower().removesuffix(".exe") for word in words if word]
    return any(name == "ollama" or name.startswith("ollama ") for name in names)


def not_ollama(url: str, timeout: float = 2.0) -> str | None:
    """Why what accepts connections at `url` is not an Ollama server, in a few words; None when nothing accepts
    connections there or an Ollama answers."""
    with client_for(url, timeout=timeout) as client:
        response, why = http_answer(client, "/api/version", timeout)
    if response is None:
        return why
    if response.status_code != 200:
        return f"it answers GET /api/version with HTTP {response.status_code}"
    try:
        found = response.json().get("version")
    except (ValueError, AttributeError):
        found = None
    return None if isinstance(found, str) and found else "its answer to GET /api/version is not Ollama's"


def port_taken_message(settings: OllamaSettings, holder: str) -> str:
    address = settings.address
    return (f"Port {address.port} at {address.connect_host}, where Ollama should answer ({settings.url}), is held by "
            f"{holder}; stop that program, or point engines.ollama.url (or OLLAMA_HOST) at a free port.")


def is_local(host: str) -> bool:
    if host in ("", "localhost", "0.0.0.0", "::", "::1") or host.startswith("127."):
        return True
    if host.lower() in (socket.gethostname().lower(), socket.getfqdn().lower()):
        return True
    import psutil

    try:
        return any(a.address.split("%")[0] == host for addrs in psutil.net_if_addrs().values() for a in addrs)
    except OSError:
        return False


# --- records of what Jarvis started -------------------------------------------------------------------------------


def running_records(ctx: EngineContext, url: str | None = None, *, any_run: bool = False) -> list[Record]:
    """Process records of servers Jarvis started that still run (optionally only those at `url`). `ctx.state` may
    be scoped to one run; `any_run` also looks at the records of other runs and loadouts in the same state folder."""
    return [r for r in running(ctx, any_run=any_run) if url is None or r.address == url]


# --- start --------------------------------------------------------------------------------------------------------


def parallelism_for_start(settings: OllamaSettings, environ: Mapping[str, str]) -> Parallelism:
    """What a server Jarvis starts serves at once: `num_parallel` when set (Jarvis passes it), else the
    OLLAMA_NUM_PARALLEL the server inherits from Jarvis's environment, else Ollama's default."""
    if settings.num_parallel is not None:
        return Parallelism(PARALLEL_SETTING, settings.num_parallel, "passed to the ollama serve Jarvis started")
    inherited = environ.get("OLLAMA_NUM_PARALLEL", "").strip()
    if not inherited:
        return Parallelism(PARALLEL_SETTING, None, PARALLEL_DEFAULT)
    if inherited.isdigit() and int(inherited) > 0:
        return Parallelism(PARALLEL_SETTING, int(inherited), "OLLAMA_NUM_PARALLEL from Jarvis's environment")
    return Parallelism(PARALLEL_SETTING, None, f"OLLAMA_NUM_PARALLEL={inherited!r} in Jarvis's environment is not a "
                                               f"positive number, so {PARALLEL_DEFAULT} applies")


def parallelism_of(settings: OllamaSettings, record: Record | None, version: str | None = None) -> Parallelism:
    """What a running server serves at once: what Jarvis recorded when it started it; for one it did not start
    (Ollama's API does not tell), what the server's own log says (`serverlog`), else unknown. Says so when the
    configured `num_parallel` could not reach it."""
    if record is None:
        found = _parallelism_from_log(settings, version)
    elif "num_parallel" not in record.data:
        found = Parallelism(PARALLEL_SETTING, None, "unknown: the Jarvis that started this server did not record it")
    else:
        value = record.data.get("num_parallel")
        found = Parallelism(PARALLEL_SETTING, value if isinstance(value, int) else None,
                            str(record.data.get("num_parallel_detail") or ""))
    if settings.num_parallel is not None and settings.num_parallel != found.value:
        note = (f"engines.ollama.num_parallel ({settings.num_parallel}) does not apply: this server was already "
                f"running (it applies to a server Jarvis starts)")
        found = Parallelism(found.setting, found.value, f"{found.detail}; {note}" if found.detail else note)
    return found


def _parallelism_from_log(settings: OllamaSettings, version: str | None) -> Parallelism:
    from urllib.parse import urlsplit

    from .serverlog import log_files, num_parallel_from_log

    port = urlsplit(settings.url).port or 11434
    for path in log_files():
        n = num_parallel_from_log(path, port=port, version=version)
        if n is not None:
            return (Parallelism(PARALLEL_SETTING, n, f"from the server's log ({path})") if n > 0 else
                    Parallelism(PARALLEL_SETTING, None, f"not set, per the server's log ({path}): {PARALLEL_DEFAULT}"))
    return Parallelism(PARALLEL_SETTING, None, "unknown: this Ollama server was not started by Jarvis, and no log "
                                               "of it says (the desktop apps' server.log)")


def ensure_running(ctx: EngineContext) -> StartResult:
    """Reuse the Ollama server that answers at the configured address, or start one: never a second one."""
    settings: OllamaSettings = ctx.settings
    url = settings.url
    found = server_version(url)
    if found is not None:
        ours = running_records(ctx, url, any_run=True)
        detail = f"Ollama {found} at {url}" + (", started by Jarvis earlier" if ours else ", already running")
        return StartResult(address=url, started=False, detail=detail, version=found,
                           parallelism=parallelism_of(settings, ours[0] if ours else None, found))

    starting = running_records(ctx, url, any_run=True)  # one of ours, still starting (another run's?)
    if starting:
        record = starting[0]
        with client_for(url, timeout=2.0) as probe:
            await_ready(ctx, what=f"ollama serve at {url}", ready=lambda: version(probe, timeout=1.0) is not None,
                        alive=lambda: exit_reason(record))
        return StartResult(address=url, started=False, detail=f"Ollama at {url}, started by Jarvis earlier",
                           version=server_version(url), parallelism=parallelism_of(settings, record))

    holder = port_holder(settings)
    if holder is not None:
        raise EngineError(port_taken_message(settings, holder), engine=ENGINE)
    if not is_local(settings.address.connect_host):
        raise EngineUnavailableError(
            f"No Ollama server answers at {url}, and Jarvis starts Ollama only on this machine: start it on "
            f"{settings.address.connect_host}, or point engines.ollama.url (or OLLAMA_HOST) at this machine.",
            engine=ENGINE)
    exe = find_executable(settings)
    if exe is None:
        raise EngineUnavailableError(not_installed_message(settings), engine=ENGINE)

    env = dict(os.environ)
    env["OLLAMA_HOST"] = settings.serve_host
    if settings.models_dir is not None:
        env["OLLAMA_MODELS"] = str(settings.models_dir)
    if settings.num_parallel is not None:
        env["OLLAMA_NUM_PARALLEL"] = str(settings.num_parallel)
    parallel = parallelism_for_start(settings, os.environ)
    with client_for(url, timeout=2.0) as probe:
        launched = launch(ctx, [exe, "serve"], what=f"ollama serve at {url}", log_name=LOG_NAME,
                          ready=lambda: version(probe, timeout=1.0) is not None, address=url, env=env,
                          num_parallel=parallel.value, num_parallel_detail=parallel.detail)
    served = f"OLLAMA_NUM_PARALLEL={parallel.value}" if parallel.value is not None else "Ollama's default parallelism"
    return StartResult(address=url, started=True, version=server_version(url), parallelism=parallel,
                       detail=f"started ollama serve (pid {launched.pid}) at {url} in {launched.waited_s:.1f} s "
                              f"({served}); log: {launched.log}")


# --- stop ---------------------------------------------------------------------------------------------------------


def end_recorded(ctx: EngineContext, record: Record) -> bool:
    """End the process tree of a recorded server (after a crash of the server, what is left of its process group:
    its runners, which hold the models' memory), close its shared client and drop its record; True when it was
    still running."""
    return end(ctx, record, timeout=min(ctx.config.timeouts.stop, 15.0))


def tray_processes() -> list[Any]:
    """The Ollama desktop/tray app (Windows `ollama app.exe`), which restarts `ollama serve` when it exits."""
    import psutil

    found = []
    for proc in psutil.process_iter(["name"]):
        name = (proc.info.get("name") or "").lower()
        if name in TRAY_NAMES:
            found.append(proc)
    return found


def systemd_unit(pid: int) -> str | None:
    """The systemd system service running `pid` (Linux), e.g. `ollama.service`: such a server comes back when killed."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return None
    match = re.search(r"/system\.slice/([^/\n]+\.service)", text)
    return match.group(1) if match else None


def _is_self_or_ancestor(pid: int) -> bool:
    import psutil

    try:
        me = psutil.Process()
        return pid == me.pid or pid in {p.pid for p in me.parents()}
    except psutil.Error:
        return True


def looks_like_ollama(pid: int) -> bool:
    """The process is the `ollama` program (`ollama serve`, `ollama.exe`, `ollama app.exe`, or a script named ollama
    run by an interpreter): judged by the program's name, never by a word in its arguments (a `pytest tests/ollama`
    or an editor with an ollama file open is not Ollama, and must never be ended as one)."""
    return _is_ollama_program(pid)


def stop_foreign(ctx: EngineContext) -> tuple[list[str], list[str]]:
    """End an Ollama server Jarvis did not start (only when `stop_foreign_server` is true), and only one on this
    machine whose process looks like Ollama: never whatever else holds the port. Returns (stopped, left)."""
    settings: OllamaSettings = ctx.settings
    address = settings.address
    stopped: list[str] = []
    left: list[str] = []
    timeout = min(ctx.config.timeouts.stop, 15.0)
    if not is_local(address.connect_host):
        return stopped, [f"Ollama server at {settings.url} runs on another machine ({address.connect_host}); "
                         f"Jarvis stops servers only on this one: stop it there"]
    pid = listener_pid(address.port)
    if pid is not None and not _is_self_or_ancestor(pid) and not looks_like_ollama(pid):
        holder = process_name(pid) or "a program Jarvis cannot identify"
        return stopped, [f"port {address.port} at {settings.url} is held by '{holder}' (pid {pid}), which does not "
                         f"look like Ollama; Jarvis leaves it alone: stop it yourself if it is yours"]
    unit = systemd_unit(pid) if pid is not None else None
    if unit is not None:
        return stopped, [f"Ollama server at {settings.url} (pid {pid}) is the systemd service {unit}, which restarts "
                         f"it: stop it with 'sudo systemctl stop {unit.removesuffix('.service')}'"]
    for tray in tray_processes():
        try:
            tray_pid, tray_created = tray.pid, tray.create_time()
        except Exception:  # noqa: BLE001 - psutil.Error: it went away or is not ours to inspect
            continue
        if end_tree(tray_pid, tray_created, timeout=timeout):
            stopped.append(f"Ollama tray app (pid {tray_pid}), which would restart the server")
    created = create_time(pid) if pid is not None else None
    if pid is None or created is None:  # it went with the tray app, or was never seen: who holds the port now?
        pid = listener_pid(address.port)
        created = create_time(pid) if pid is not None else None
    if pid is not None and _is_self_or_ancestor(pid):
        return stopped, left + [f"Ollama server at {settings.url} runs inside Jarvis's own process (pid {pid}); "
                                f"it is not stopped"]
    if pid is not None and not looks_like_ollama(pid):  # the port changed hands after the tray app went
        holder = process_name(pid) or "a program Jarvis cannot identify"
        return stopped, left + [f"port {address.port} at {settings.url} is held by '{holder}' (pid {pid}), which "
                                f"does not look like Ollama; Jarvis leaves it alone"]
    if pid is not None and created is not None and end_tree(pid, created, timeout=timeout):
        stopped.append(f"Ollama server not started by Jarvis (pid {pid}) at {settings.url}, as "
                       f"engines.ollama.stop_foreign_server asks")
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and server_version(settings.url, timeout=0.5) is not None:
        time.sleep(0.1)
    if server_version(settings.url, timeout=0.5) is not None:
        why = "Jarvis cannot tell which process holds the port (another user's?)" if pid is None else \
            "it is still running or came back (something restarts it)"
        left.append(f"Ollama server at {settings.url}: {why}; stop it yourself")
    return stopped, left
