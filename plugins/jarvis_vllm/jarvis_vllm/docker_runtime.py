"""The docker runtime: vLLM as the `vllm/vllm-openai` container, through the Docker SDK.

Jarvis only ever removes containers that carry its labels (`jarvis.managed=true`, `jarvis.engine=vllm`); a container
with the configured name but without them belongs to someone else and is never touched.

The client is made the way the Docker CLI and the SDK's `docker.from_env()` make it: `DOCKER_HOST` (or
`engines.vllm.docker_host`, which DOCKER_HOST overrides) with `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`, and the
current Docker context when no host is given.
"""

from __future__ import annotations

import os
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from jarvis_core.api import Detection, EngineError, EngineUnavailableError, StartResult, redact, redact_argv

from . import common
from .common import ENGINE, error
from .settings import CONTAINER_PORT, ModelLaunch, VllmSettings

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

    from jarvis_core.api import EngineContext, Progress, Record, Task

    from .hfcache import CacheCheck

LABEL_MANAGED = "jarvis.managed"
LABEL_ENGINE = "jarvis.engine"
LABEL_RUN = "jarvis.run_id"
LABEL_MODEL = "jarvis.model"
CONTAINER_HF_HOME = "/root/.cache/huggingface"
CONTAINER_MODELS = "/models"
API_TIMEOUT = 120
TAIL_LINES = 12
"""Lines of the container's log a failed start quotes (as many as `launch` quotes of a process's log)."""


def labels(run_id: str, model: str) -> dict[str, str]:
    return {LABEL_MANAGED: "true", LABEL_ENGINE: ENGINE, LABEL_RUN: run_id, LABEL_MODEL: model}


def is_ours(container: Container) -> bool:
    found = container.labels or {}
    return found.get(LABEL_MANAGED) == "true" and found.get(LABEL_ENGINE) == ENGINE


def connect(docker_host: str | None, secrets: list[str] | tuple[str, ...] = ()) -> docker.DockerClient:
    """A client for the daemon at `docker_host` (default: DOCKER_HOST, else the current Docker context), made by the
    SDK's `docker.from_env` so that DOCKER_TLS_VERIFY and DOCKER_CERT_PATH apply as they do for the Docker CLI;
    checked with a ping. Raises EngineUnavailableError, in one line, with the fix."""
    import docker

    environment = environment_for(docker_host)
    where = redact(environment.get("DOCKER_HOST") or "the default Docker socket (DOCKER_HOST unset)", secrets)
    try:
        client = docker.from_env(timeout=API_TIMEOUT, environment=environment)
        client.ping()
    except Exception as exc:  # DockerException, and requests' errors that ping() lets through unwrapped
        raise EngineUnavailableError(redact(
            f"Docker is not reachable at {where}: {_first_line(exc)}. Start Docker (Docker Desktop, or "
            f"`sudo systemctl start docker`), set DOCKER_HOST, or use engines.vllm.runtime: process.", secrets),
            engine=ENGINE) from None
    return client


def environment_for(docker_host: str | None) -> dict[str, str]:
    """The environment `docker.from_env` reads: this process's, with DOCKER_HOST set to `docker_host` when one is
    given (the TLS variables, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, apply to it as to DOCKER_HOST)."""
    environment = dict(os.environ)
    if docker_host:
        environment["DOCKER_HOST"] = docker_host
    return environment


def _first_line(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def image_present(client: docker.DockerClient, ref: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(ref)
        return True
    except ImageNotFound:
        return False


# --- detect ----------------------------------------------------------------------------------------------------------


def detect(ctx: EngineContext, settings: VllmSettings) -> Detection:
    detection = Detection(engine=ENGINE, installed=False, reachable=False, address=settings.base_url)
    notes = []
    try:
        client = connect(settings.docker_host, settings.secrets())
    except EngineUnavailableError as exc:
        notes.append(str(exc))
    else:
        with closing(client):
            ref = settings.image_ref
            if image_present(client, ref):
                detection.installed = True
                notes.append(f"Docker {client.version().get('Version', '?')}, image {ref} present")
            else:
                notes.append(f"Docker is running but image {ref} is missing: `docker pull {ref}`, or run with "
                             f"--force-download")
    common.add_server(ctx, detection, settings, notes)
    detection.started_by_jarvis = common.started_by_jarvis(ctx, settings)
    detection.detail = settings.redact("; ".join(notes))
    return detection


# --- pull ------------------------------------------------------------------------------------------------------------


# How a pull is shown. The daemon reports, per layer, "Downloading" bytes (current/total of the compressed layer),
# then "Extracting" bytes of the same compressed layer, then "Pull complete". Layers download a few at a time and each
# extracts, in order, as soon as it is downloaded, so the two overlap; yet the two figures cannot honestly be added up
# into one amount of bytes (a 10 GB image would read "15 GB/20 GB"). So the one task shows two phases in sequence,
# each with true figures: "downloading" (bytes downloaded, over all layers) until every layer is downloaded, then
# "extracting" (bytes extracted, over all layers; layers extracted during the download count at once). The total is
# given only once the daemon has said every layer's size (a "Waiting" layer has none yet): a sum over the layers seen
# so far would read 100 % after the first small layers. Layers that "Already exists" are not pulled and not counted.
DOWNLOADING, EXTRACTING = "downloading", "extracting"
RESUME_HINT = "Docker keeps the layers it finished, so running again (or `docker pull {ref}`) downloads only the rest"


class _Layer:
    __slots__ = ("size", "downloaded", "extracted", "fetched", "done")

    def __init__(self) -> None:
        self.size = 0  # compressed bytes; 0 until the daemon says
        self.downloaded = 0
        self.extracted = 0
        self.fetched = False  # downloaded and checked
        self.done = False  # extracted ("Pull complete")


class PullTally:
    """What the daemon's pull events said so far, layer by layer (the layer IDs are the short digests Docker shows)."""

    def __init__(self) -> None:
        self.layers: dict[str, _Layer] = {}
        self.present: set[str] = set()  # "Already exists": not pulled
        self.status = ""  # the daemon's closing "Status: ..." line, once it came
        self.error = ""

    def add(self, event: dict[str, Any]) -> None:
        if event.get("error") or event.get("errorDetail"):
            detail = event.get("errorDetail") if isinstance(event.get("errorDetail"), dict) else {}
            text = str(event.get("error") or detail.get("message") or "unknown error").strip()
            self.error = text.splitlines()[0] if text else "unknown error"
            return
        status = str(event.get("status") or "")
        if status.startswith("Status:"):
            self.status = status
            return
        layer_id = event.get("id")
        if not isinstance(layer_id, str) or not layer_id:
            return
        if status == "Already exists":
            self.present.add(layer_id)
            self.layers.pop(layer_id, None)
            return
        if status not in ("Pulling fs layer", "Waiting", "Downloading", "Verifying Checksum", "Download complete",
                          "Extracting", "Pull complete"):
            return  # "Pulling from <repo>" (its id is the tag), "Retrying in 5 seconds", ...
        layer = self.layers.setdefault(layer_id, _Layer())
        current, total = _byte_counts(event.get("progressDetail"))
        if status == "Downloading" and total:
            layer.size = total
            layer.downloaded = min(current, total)
        elif status in ("Verifying Checksum", "Download complete"):
            layer.fetched = True
        elif status == "Extracting":
            layer.fetched = True
            if total:  # the compressed bytes read so far (the containerd image store may give no total)
                layer.size = layer.size or total
                layer.extracted = min(current, layer.size)
        elif status == "Pull complete":
            layer.fetched = layer.done = True
        if layer.fetched:
            layer.downloaded = layer.size
        if layer.done:
            layer.extracted = layer.size

    @property
    def phase(self) -> str | None:
        if not self.layers:
            return None
        if not all(layer.fetched for layer in self.layers.values()):
            return DOWNLOADING
        return EXTRACTING

    @property
    def total(self) -> int | None:
        """The bytes of the layers to pull, once every one's size is known."""
        if not self.layers or any(layer.size <= 0 for layer in self.layers.values()):
            return None
        return sum(layer.size for layer in self.layers.values())

    @property
    def downloaded(self) -> int:
        return sum(layer.downloaded for layer in self.layers.values())

    @property
    def extracted(self) -> int:
        return sum(layer.extracted for layer in self.layers.values())


def _byte_counts(detail: Any) -> tuple[int, int]:
    """(current, total) bytes of a progressDetail; (0, 0) when it holds no total."""
    if not isinstance(detail, dict):
        return 0, 0
    current, total = detail.get("current"), detail.get("total")
    if not isinstance(total, int) or total <= 0:
        return 0, 0
    return (max(current, 0) if isinstance(current, int) else 0), total


def pull_image(client: docker.DockerClient, ref: str, progress: Progress) -> PullTally:
    """Pull `ref` with one progress task (phases "downloading", then "extracting"; see above) and a final line with
    how much was pulled and how long it took. A failure is raised as EngineError in one line; a pull that breaks off
    says that Docker keeps what it finished (its own resume: a new pull skips the layers already there)."""
    import time
    from http.client import HTTPException

    from docker.errors import APIError, StreamParseError
    from docker.utils import parse_repository_tag
    from requests.exceptions import RequestException
    from urllib3.exceptions import HTTPError

    from jarvis_core.api import human_bytes, human_duration

    repo, tag = parse_repository_tag(ref)
    label = f"vllm: image {ref}"
    progress.note(f"vllm: pulling image {ref}")  # off a terminal the task prints nothing until the layers are known
    task = progress.task(label, total=None, unit="B")
    started = time.monotonic()
    tally = PullTally()
    broke_off = f"Pulling image {ref} broke off"
    resume = RESUME_HINT.format(ref=ref)
    try:
        try:
            events = client.api.pull(repo, tag=tag or "latest", stream=True, decode=True)
            follow_pull(events, task, tally)
            # the real daemon ends a pull with "Status: ..."; a stream cut short without an error has none
            complete = bool(tally.status) or bool(tally.error) or image_present(client, ref)
        except APIError as exc:  # before the stream: unknown repository or tag, no access, registry unreachable
            raise error(f"Pulling image {ref} failed: {_first_line(exc)}. Check the image name and tag "
                        f"(engines.vllm.image / tag) and the network.") from None
        except (HTTPError, RequestException, HTTPException, StreamParseError, OSError) as exc:
            raise error(f"{broke_off}: the connection to Docker was lost ({type(exc).__name__}: "
                        f"{_first_line(exc)}). {resume}.") from None
        if tally.error and not (tally.downloaded or any(layer.fetched for layer in tally.layers.values())):
            raise error(f"Pulling image {ref} failed: {tally.error}. Check the image name and tag "
                        f"(engines.vllm.image / tag), `docker login` for a private registry, and the network.")
        if tally.error:  # the daemon gave up mid-download (network, registry, disk) after its own retries
            raise error(f"{broke_off}: {tally.error}. {resume}.")
        if not complete:
            raise error(f"{broke_off}: Docker's answer ended before the pull was complete. {resume}.")
    except EngineError as exc:
        if str(exc).startswith(broke_off):
            task.close(f"{label}: pull broke off after {human_bytes(tally.downloaded)} downloaded, "
                       f"{human_bytes(tally.extracted)} extracted")
        else:
            task.close(f"{label}: pull failed")
        raise
    except BaseException:  # Ctrl-C: the daemon cancels the pull when Jarvis hangs up
        task.close(f"{label}: pull stopped; {resume}")
        raise
    pulled = sum(layer.size for layer in tally.layers.values())
    kept = f"; {len(tally.present)} already present" if tally.present else ""
    task.close(f"{label}: pulled {human_bytes(pulled)} in {human_duration(time.monotonic() - started)} "
               f"({len(tally.layers)} layers{kept})")
    return tally


def follow_pull(events: Iterable[dict[str, Any]], task: Task, tally: PullTally | None = None) -> PullTally:
    """Drive `task` from the daemon's pull events until the stream ends or an error event comes (then
    `tally.error` holds it). Does not close the task."""
    tally = tally if tally is not None else PullTally()
    for event in events:
        if not isinstance(event, dict):
            continue
        tally.add(event)
        if tally.error:
            break
        phase = tally.phase
        if phase is None:
            continue
        # The figures first: a phase change draws at once, and its line must show the new phase's figures.
        task.update(tally.downloaded if phase == DOWNLOADING else tally.extracted, tally.total)
        task.phase(phase)  # the core draws only a change
    return tally


# --- start -----------------------------------------------------------------------------------------------------------


def device_ids(settings: VllmSettings) -> list[str] | None:
    """The GPUs the container gets, as Docker's `device_ids` (driver indices or UUIDs): the engine's `gpus` in the
    order this process's CUDA_VISIBLE_DEVICES means (`gpus: [1]` under CUDA_VISIBLE_DEVICES=2,3 is GPU 3), the same
    value the process runtime gives as the engine's CUDA_VISIBLE_DEVICES. None: every GPU; []: none. A remote
    daemon's GPUs are not this machine's: there `gpus` is passed as written."""
    from jarvis_core.api import engine_visible_devices

    visible = None if settings.remote_docker else os.environ.get("CUDA_VISIBLE_DEVICES")
    value = engine_visible_devices(settings.gpus, visible)
    if value is None:
        return None
    return [part for part in value.split(",") if part]


def device_requests(settings: VllmSettings) -> list[Any]:
    from docker.types import DeviceRequest

    ids = device_ids(settings)
    if ids is None:
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if not ids:
        return []
    return [DeviceRequest(device_ids=ids, capabilities=[["gpu"]])]


def container_model_arg(launch: ModelLaunch, check: CacheCheck | None) -> tuple[str, dict[str, dict[str, str]]]:
    """The model argument inside the container, and extra volumes: a local folder is mounted read-only."""
    if check is not None and check.local_folder and check.path is not None:
        target = f"{CONTAINER_MODELS}/{check.path.name}"
        return target, {str(check.path): {"bind": target, "mode": "ro"}}
    return launch.model, {}


def run_kwargs(ctx: EngineContext, settings: VllmSettings, launch: ModelLaunch,
               check: CacheCheck | None) -> dict[str, Any]:
    """Everything `containers.create` gets (the environment holds HF_TOKEN: never print this dict)."""
    model_arg, volumes = container_model_arg(launch, check)
    if settings.hf_home is not None:  # mount the whole HF home (token file, xet cache) when hub is <home>/hub
        volumes[str(settings.hf_home)] = {"bind": CONTAINER_HF_HOME, "mode": "rw"}
    else:
        volumes[str(settings.resolved_hub_cache())] = {"bind": f"{CONTAINER_HF_HOME}/hub", "mode": "rw"}
    kwargs: dict[str, Any] = dict(
        image=settings.image_ref,
        command=launch.serve_args(model_arg) + ["--host", "0.0.0.0", "--port", str(CONTAINER_PORT)],
        name=settings.container_name,
        detach=True,
        labels=labels(ctx.run_id, launch.model),
        ports={f"{CONTAINER_PORT}/tcp": (settings.host, settings.port)},
        volumes=volumes,
        environment=settings.engine_environment(offline=common.engine_offline(ctx, check)),
        device_requests=device_requests(settings),
    )
    if settings.ipc_host:
        kwargs["ipc_mode"] = "host"
    elif settings.shm_size:
        kwargs["shm_size"] = settings.shm_size
    return kwargs


def describe_command(settings: VllmSettings, kwargs: dict[str, Any]) -> list[str]:
    """The `docker run` command equivalent to `kwargs`, for the record and error messages; the environment shows
    names only."""
    parts = ["docker", "run", "-d", "--name", settings.container_name,
             "-p", f"{settings.host}:{settings.port}:{CONTAINER_PORT}"]
    for source, spec in kwargs["volumes"].items():
        parts += ["-v", f"{source}:{spec['bind']}" + (":ro" if spec.get("mode") == "ro" else "")]
    for name in kwargs["environment"]:
        parts += ["-e", name]
    for request in kwargs["device_requests"]:
        ids = request.get("DeviceIDs") or []
        parts += ["--gpus", f'"device={",".join(ids)}"' if ids else "all"]
    if kwargs.get("ipc_mode"):
        parts += ["--ipc", "host"]
    elif kwargs.get("shm_size"):
        parts += ["--shm-size", kwargs["shm_size"]]
    return [*parts, kwargs["image"], *kwargs["command"]]


def clear_leftovers(ctx: EngineContext, client: docker.DockerClient, settings: VllmSettings) -> list[str]:
    """Remove Jarvis's own leftovers: containers of this run or of crashed runs (their Jarvis process is gone).

    A container with our name that Jarvis did not create, or that a live run or a loadout holds, is an error and is
    never removed; stopped containers of live runs and loadouts are left to their owners.
    """
    from docker.errors import NotFound

    removed: list[str] = []
    gone: set[str] = set()
    orphaned = ctx.state.orphaned_run_ids()

    def removable(container: Container) -> bool:
        run_id = (container.labels or {}).get(LABEL_RUN, "")
        return bool(run_id) and (run_id == ctx.run_id or run_id in orphaned)

    try:
        existing = client.containers.get(settings.container_name)
    except NotFound:
        existing = None
    if existing is not None:
        if not is_ours(existing):
            raise error(
                f"A container named '{settings.container_name}' already exists and was not created by Jarvis "
                f"(status {existing.status}, image {_image_name(existing)}); Jarvis leaves it alone. Remove it "
                f"yourself (`docker rm -f {settings.container_name}`) or set engines.vllm.container_name to another "
                f"name.")
        if not removable(existing):
            raise error(_held_message(ctx, settings.container_name, existing))
        _remove(existing)
        gone.add(existing.id)
        removed.append(f"leftover container {settings.container_name} ({existing.short_id})")
    for status in ("created", "exited", "dead"):
        for container in client.containers.list(all=True, filters={"label": [f"{LABEL_MANAGED}=true",
                                                                              f"{LABEL_ENGINE}={ENGINE}"],
                                                                    "status": status}):
            if container.id in gone or not removable(container):
                continue
            _remove(container)
            gone.add(container.id)
            removed.append(f"{status} container {container.name} ({container.short_id})")
    for record in ctx.state.records(ENGINE, "container", any_run=True):
        if record.data.get("container_id") in gone:
            ctx.state.remove(record.id)
    if removed:
        ctx.progress.note("vllm: removed " + "; ".join(removed))
    return removed


def _held_message(ctx: EngineContext, name: str, container: Container) -> str:
    """One line: who holds the container named like ours, and how to free it."""
    from jarvis_core.api import LOADOUT_RUN_PREFIX as PREFIX

    run_id = (container.labels or {}).get(LABEL_RUN, "")
    model = (container.labels or {}).get(LABEL_MODEL) or "?"
    held = f"A container named '{name}' ({container.status}, {model}) belongs to"
    if run_id.startswith(PREFIX):
        loadout = run_id[len(PREFIX):]
        return (f"{held} loadout {loadout}; Jarvis leaves it alone. Free it with `jarvis loadout down {loadout}`, "
                f"or set engines.vllm.container_name (and port) to others for this run.")
    if any(r.run_id == run_id for r in ctx.state.records(any_run=True)):
        return (f"{held} another Jarvis run that is still going (run {run_id}); Jarvis leaves it alone. Wait for "
                f"that run to finish, or set engines.vllm.container_name (and port) to others for this run.")
    return (f"{held} Jarvis run {run_id or '?'}, which Jarvis's state does not know (another state folder?); "
            f"Jarvis leaves it alone. If no Jarvis run uses it, remove it: `docker rm -f {name}`.")


def _image_name(container: Container) -> str:
    try:
        return (container.attrs.get("Config") or {}).get("Image") or "?"
    except Exception:  # attrs is plain data; be defensive about odd daemons
        return "?"


def _remove(container: Container) -> None:
    from docker.errors import APIError, NotFound

    try:
        container.remove(force=True)
    except NotFound:
        pass
    except APIError as exc:
        if "already in progress" not in str(exc):
            raise


def start(ctx: EngineContext, settings: VllmSettings, launch: ModelLaunch, check: CacheCheck | None) -> StartResult:
    """Create, record and start the container, then wait with the core's `await_ready`; on any failure (an exit, a
    timeout, Ctrl-C) the container is removed and its record dropped, and the error quotes the container's log."""
    from docker.errors import APIError, ImageNotFound

    from jarvis_core.api import end, port_open, used_mib

    secrets = settings.secrets()
    client = connect(settings.docker_host, secrets)
    try:
        ref = settings.image_ref
        if not image_present(client, ref):
            if not ctx.force_download:
                raise EngineUnavailableError(
                    f"The image {ref} is not present in Docker: run with --force-download to pull it, or "
                    f"`docker pull {ref}`.", engine=ENGINE)
            pull_image(client, ref, ctx.progress)
        clear_leftovers(ctx, client, settings)
        if port_open(settings.connect_host, settings.port):
            raise error(common.port_clash_message(settings, common.listener(settings.port)))

        kwargs = run_kwargs(ctx, settings, launch, check)
        # What the engine's GPUs use before it starts: stop waits until they are back to it.
        baseline = None if settings.remote_docker else used_mib(settings.gpus)
        ctx.progress.note(f"Starting vLLM container {settings.container_name} ({ref}) for {launch.model}")
        try:
            container = client.containers.create(**kwargs)
        except ImageNotFound:
            raise EngineUnavailableError(f"The image {ref} disappeared from Docker; pull it again.",
                                         engine=ENGINE) from None
        except APIError as exc:
            raise _api_error(exc, settings, "Creating the vLLM container") from None
        record = ctx.state.add(ENGINE, "container", run_id=ctx.run_id, address=settings.base_url,
                               log=ctx.state.log_path(f"vllm-{settings.container_name}.log"),
                               command=redact_argv(describe_command(settings, kwargs), secrets),
                               container=settings.container_name, container_id=container.id,
                               docker_host=redact(settings.docker_host, secrets) if settings.docker_host else None,
                               port=settings.port, image=ref, model=launch.model, served_name=launch.served_name,
                               gpu_baseline_mib=baseline, gpus=settings.gpus, **common.parallelism_fields(launch))
        try:
            try:
                container.start()
            except APIError as exc:
                raise _api_error(exc, settings, "Starting the vLLM container") from None
            waited, found_version = _wait(ctx, settings, container, launch, record)
        except BaseException:
            _remove(container)  # a failed start leaves it "created" (port clash, GPU refused): never keep it
            end(ctx, record)
            raise
        return StartResult(address=settings.base_url, started=True, version=found_version,
                           parallelism=launch.parallelism(),
                           detail=f"container {settings.container_name} ({container.short_id}, {ref}) ready in "
                                  f"{waited:.1f} s")
    finally:
        client.close()


def _api_error(exc: Exception, settings: VllmSettings, doing: str) -> EngineError:
    text = _first_line(exc)
    if common.is_port_clash(text):
        return error(common.port_clash_message(settings, common.listener(settings.port)))
    if common.is_gpu_refusal(text):
        return EngineUnavailableError(common.gpu_runtime_message(), engine=ENGINE)
    if getattr(exc, "status_code", None) == 409 and "already in use" in text:
        return error(f"A container named '{settings.container_name}' appeared while Jarvis was starting vLLM "
                     f"(another run?); Jarvis leaves it alone. Remove it or set engines.vllm.container_name.")
    return error(f"{doing} failed: {settings.redact(text)}")


def _wait(ctx: EngineContext, settings: VllmSettings, container: Container, launch: ModelLaunch,
          record: Record) -> tuple[float, str | None]:
    """Wait until the container serves the model: (seconds waited, server version). A failure is raised with the
    container's log (saved to the record's log file) and the fix it tells."""
    from docker.errors import NotFound

    from jarvis_core.api import await_ready

    def alive() -> str | None:
        try:
            container.reload()
        except NotFound:
            return "disappeared (removed by someone else?)"
        return exit_reason(container.attrs.get("State") or {})

    secrets = settings.secrets()
    try:
        with common.probe_client(settings.base_url, headers=settings.auth_headers(launch)) as client:
            # timeout None: the engine's start_timeout where set, else timeouts.start (the core decides)
            waited = await_ready(ctx, what=f"vLLM container {settings.container_name}",
                                 ready=common.Readiness(client, launch.served_name),
                                 alive=alive, alive_every=0.5,  # each check is a Docker API call
                                 timeout=None, progress_line=lambda: redact(_logs(container, 1), secrets))
            return waited, common.version(client)
    except EngineError as exc:
        _save_logs(container, record, secrets)
        raise failure(exc, _logs(container, TAIL_LINES), record, secrets) from None


def failure(exc: EngineError, log_text: str, record: Record, secrets: list[str]) -> EngineError:
    """The error of a failed start, worded by the core's `start_failure` as for a process: the reason, the fix the
    log tells, the command and the log file, then the log's last lines; all of it through the core's `redact` with
    `secrets` (secret-looking flags, URL user information and secret-named variables go whatever `secrets` holds)."""
    from jarvis_core.api import start_failure

    return start_failure(exc, command=record.command or (), log=record.log or "",
                         tail="\n".join(log_text.strip().splitlines()[-TAIL_LINES:]), explain=common.log_hint,
                         redact=lambda text: redact(text, secrets), engine=record.engine)


def exit_reason(state: dict[str, Any]) -> str | None:
    """None while the container runs; else how it ended (exit code, OOM kill), from `attrs["State"]`."""
    if state.get("Status") not in ("exited", "dead"):
        return None
    oom = " (OOMKilled: the container ran out of memory)" if state.get("OOMKilled") else ""
    return f"exited with code {state.get('ExitCode')}{oom}"


def _logs(container: Container, lines: int) -> str:
    from docker.errors import APIError, NotFound

    try:
        return container.logs(tail=lines).decode("utf-8", "replace")
    except (APIError, NotFound):
        return ""


def _save_logs(container: Container, record: Record, secrets: list[str]) -> None:
    """The container's whole log, redacted, into the record's log file: the container is removed right after."""
    from docker.errors import APIError, NotFound

    try:
        data = container.logs().decode("utf-8", "replace")
    except (APIError, NotFound):
        return
    Path(record.log or "").write_text(redact(data, secrets), encoding="utf-8")


# --- stop ------------------------------------------------------------------------------------------------------------


def recorded_host(record: Record, settings: VllmSettings) -> str | None:
    """The daemon a record's container runs on. The record keeps the address redacted: one with a secret in it
    (user information) is the configured one when that redacts to the same text."""
    stored = record.data.get("docker_host")
    if not isinstance(stored, str) or "***" not in stored:
        return stored if isinstance(stored, str) else None
    current = settings.docker_host
    return current if current and redact(current, settings.secrets()) == stored else stored


def stop_record(ctx: EngineContext, record: Record, settings: VllmSettings) -> tuple[list[str], list[str], str]:
    """Stop and remove the container of one state record and drop the record: (stopped, left running, note)."""
    from docker.errors import APIError, NotFound

    from jarvis_core.api import end

    stop_timeout = settings.stop_timeout
    name = record.data.get("container") or "?"
    try:
        client = connect(recorded_host(record, settings), settings.secrets())
    except EngineUnavailableError as exc:
        return [], [f"container {name}"], f"kept its record: {exc}"
    with closing(client):
        try:
            container = client.containers.get(record.data.get("container_id") or name)
        except NotFound:
            end(ctx, record)
            return [], [], f"container {name} was already gone"
        if not is_ours(container):  # never happens for our own IDs; a safety net for records pointing at names
            end(ctx, record)
            return [], [f"container {container.name} (not created by Jarvis)"], ""
        try:
            container.stop(timeout=int(max(1, stop_timeout)))
        except (APIError, NotFound):
            pass  # remove(force=True) below kills what stop could not
        except Exception:  # requests' ReadTimeout when the daemon is slow: remove(force) kills it anyway
            pass
        _remove(container)
        end(ctx, record)
        return [f"container {name} ({container.short_id}) stopped and removed"], [], ""
