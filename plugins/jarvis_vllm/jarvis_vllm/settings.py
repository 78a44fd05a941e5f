"""The `engines.vllm` section of config.yaml, and what the environment adds to it.

Environment variables win over config.yaml: `HF_HUB_CACHE` / `HUGGINGFACE_HUB_CACHE` / `HF_HOME` over `hf_cache`,
`DOCKER_HOST` over `docker_host`. `HF_ENDPOINT` is where `--force-download` downloads from, and `HF_HUB_OFFLINE`
forbids it. `HF_TOKEN` (or the legacy `HUGGING_FACE_HUB_TOKEN`) is passed to the engine when
set; it is kept out of `repr()`, state records, logs and error messages, as are the other secrets `secrets()` lists
(secret-named `environment` values, the values of secret-looking flags such as `--api-key` in `extra_args`, user
information in `url` and `docker_host`): everything the plugin shows or writes goes through the core's `redact` with
them.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Literal, Mapping

from jarvis_core.api import Parallelism, bounded, redact, redact_argv

from . import hfcache

CONTAINER_PORT = 8000
_GPU_ID = re.compile(r"^(\d+|GPU-[0-9a-fA-F-]+|MIG-[0-9a-zA-Z/-]+)$")
_SHM = re.compile(r"^\d+[bkmgBKMG]?$")
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)([^/?#]*)@")
_REVISION = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._/-]{0,254}$")  # git ref names, commit ids; no spaces or options
API_KEY_FLAG = "--api-key"


@dataclass
class ModelSettings:
    """Per-model overrides, under `engines.vllm.models.<model name>`."""

    served_name: str | None = None
    """The name clients send as `model` (`--served-model-name`); default: the global `served_name`, else the model."""
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    """`--max-num-seqs` for this model; default: the global `max_num_seqs`."""
    extra_args: list[str] = field(default_factory=list)
    """Appended to the global `extra_args` (e.g. `["--enforce-eager", "--dtype", "half"]`)."""
    revision: str | None = None
    """The model's revision on the Hugging Face Hub (a branch, tag or commit id): what `--force-download` downloads,
    what counts as present, and what vLLM serves (`--revision`); default: the main branch."""

    def __post_init__(self) -> None:
        _check_fraction(self.gpu_memory_utilization)
        if self.revision is not None:
            self.revision = str(self.revision).strip()
            if not _REVISION.match(self.revision) or ".." in self.revision:
                raise ValueError(f"revision: expected a branch, tag or commit id of the Hugging Face Hub, found "
                                 f"{self.revision!r}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(f"max_model_len must be a positive integer, found {self.max_model_len}")
        _check_max_num_seqs(self.max_num_seqs)


@dataclass
class ModelLaunch:
    """Everything `vllm serve` gets for one model, global settings and per-model overrides merged."""

    model: str
    served_name: str
    gpu_memory_utilization: float
    max_model_len: int | None
    extra_args: list[str]
    max_num_seqs: int | None = None
    max_num_seqs_key: str = "engines.vllm.max_num_seqs"
    """The config key `max_num_seqs` came from (the global one, or the model's own)."""
    revision: str | None = None
    """The Hub revision to serve (a local folder has none: `model_arg` given)."""

    def serve_args(self, model_arg: str | None = None) -> list[str]:
        """The model and flags after `vllm serve` (the container's command, whose entrypoint is `vllm serve`)."""
        args = [model_arg or self.model, "--served-model-name", self.served_name,
                "--gpu-memory-utilization", f"{self.gpu_memory_utilization:g}"]
        if self.revision and model_arg is None:
            args += ["--revision", self.revision]
            if flag_value(self.extra_args, "--tokenizer") is None and \
                    flag_value(self.extra_args, "--tokenizer-revision") is None:
                args += ["--tokenizer-revision", self.revision]  # the tokenizer files of the same revision
        if self.max_model_len is not None:
            args += ["--max-model-len", str(self.max_model_len)]
        if self.max_num_seqs is not None and flag_value(self.extra_args, MAX_NUM_SEQS_FLAG) is None:
            args += [MAX_NUM_SEQS_FLAG, str(self.max_num_seqs)]
        return args + list(self.extra_args)

    def parallelism(self) -> Parallelism:
        """How many requests the server this launch starts runs at once (`--max-num-seqs`): the setting, or the flag
        in extra_args (which wins, as it comes last), else vLLM's own default."""
        given = flag_value(self.extra_args, MAX_NUM_SEQS_FLAG)
        if given is not None:
            value = int(given) if given.isdigit() and int(given) > 0 else None
            detail = "given in extra_args" if value is not None else \
                f"extra_args give {MAX_NUM_SEQS_FLAG} {given!r}, which is not a positive number"
            if self.max_num_seqs is not None and self.max_num_seqs != value:
                detail += f"; it wins over {self.max_num_seqs_key} ({self.max_num_seqs})"
            return Parallelism(f"{MAX_NUM_SEQS_FLAG} (extra_args)", value, detail)
        if self.max_num_seqs is not None:
            return Parallelism(f"{MAX_NUM_SEQS_FLAG} ({self.max_num_seqs_key})", self.max_num_seqs,
                               "passed to the vLLM server Jarvis started")
        return Parallelism(PARALLEL_SETTING, None, PARALLEL_DEFAULT)


MAX_NUM_SEQS_FLAG = "--max-num-seqs"
PARALLEL_SETTING = "--max-num-seqs (engines.vllm.max_num_seqs)"
PARALLEL_DEFAULT = "vLLM's default for this version"


def flag_value(args: list[str], flag: str) -> str | None:
    """The value of `flag` in `args` (`--flag V` or `--flag=V`; vLLM also takes `--flag_name`), the last one winning
    as with argparse; None when absent."""
    names = {flag, "--" + flag[2:].replace("-", "_")}
    found = None
    for i, arg in enumerate(args):
        name, sep, value = str(arg).partition("=")
        if name in names:
            found = value if sep else (str(args[i + 1]) if i + 1 < len(args) else "")
    return found


@dataclass
class VllmSettings:
    """`engines.vllm` in config.yaml."""

    runtime: Literal["docker", "process"] = "docker"
    """`docker`: the vllm/vllm-openai container; `process`: `vllm serve` as a subprocess (Linux)."""
    host: str = "127.0.0.1"
    """Host address the server is published on (the container's port is bound to it)."""
    port: int = 8300
    url: str | None = None
    """A vLLM server run by someone else (`http://gpu-box:8000`): Jarvis only talks to it, never starts or stops it."""
    container_name: str = "vllm-server"
    image: str = "vllm/vllm-openai"
    tag: str = "latest"
    gpus: Literal["all", "none"] | list[str] = "all"
    """`all`, `none`, or a list of GPU indices/UUIDs (`[0, 1]`)."""
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    """`--max-num-seqs`: requests the server runs at once (a batch); None leaves vLLM's default. Also per model."""
    served_name: str | None = None
    extra_args: list[str] = field(default_factory=list)
    models: dict[str, ModelSettings] = field(default_factory=dict)
    shm_size: str | None = "16g"
    """Shared memory for PyTorch in the container (Docker's 64 MB default is too small); ignored with `ipc_host`."""
    ipc_host: bool = False
    """Share the host's IPC namespace (`--ipc=host`) instead of a private `/dev/shm` of `shm_size`."""
    hf_cache: Path | None = None
    """The Hugging Face hub cache folder (the one holding `models--*`); HF_HUB_CACHE or HF_HOME win when set."""
    executable: str = "vllm"
    """The `vllm` program for the process runtime: a name on PATH or a path."""
    environment: dict[str, str] = field(default_factory=dict)
    """Extra environment variables for the engine (container or process)."""
    docker_host: str | None = None
    """Docker daemon address (`unix:///...`, `npipe:////./pipe/docker_engine`, `tcp://...`); DOCKER_HOST wins."""
    stop_timeout: float = 30.0
    """Seconds vLLM gets to shut down cleanly before it is killed."""
    start_timeout: float | None = bounded(None, above=0, high=604_800,
                                          expected="seconds above 0, at most 604800 (a week), or null")
    """Seconds vLLM may take to become ready; None (the default) uses `timeouts.start`: a big model loads for
    minutes."""

    # Filled by apply_environment(), never from config.yaml.
    hub_cache: PurePath | None = field(default=None, init=False)
    hf_home: PurePath | None = field(default=None, init=False)
    """The HF home (parent of the hub cache) when the hub cache is `<home>/hub`; mounted whole into the container."""
    hf_token: str | None = field(default=None, init=False, repr=False, compare=False)
    hf_endpoint: str | None = field(default=None, init=False)
    """HF_ENDPOINT: the Hub (or a mirror) downloads come from; None for huggingface.co."""
    hf_offline: bool = field(default=False, init=False)
    """HF_HUB_OFFLINE is set: nothing may be downloaded."""

    def __post_init__(self) -> None:
        _check_fraction(self.gpu_memory_utilization)
        _check_max_num_seqs(self.max_num_seqs)
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port must be from 1 to 65535, found {self.port}")
        if isinstance(self.gpus, list):
            if not self.gpus:
                raise ValueError("gpus is an empty list; write `gpus: none` for no GPU")
            bad = [g for g in self.gpus if not _GPU_ID.match(str(g))]
            if bad:
                raise ValueError(f"gpus: {bad[0]!r} is not a GPU index or UUID; expected all, none or e.g. [0, 1]")
        if self.shm_size is not None and not _SHM.match(self.shm_size):
            raise ValueError(f"shm_size: expected a size such as 16g or 512m, found {self.shm_size!r}")
        if self.url is not None and not re.match(r"^https?://", self.url):
            raise ValueError(f"url must start with http:// or https://, found {redact(self.url)!r}")
        if not self.container_name or not re.match(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$", self.container_name):
            raise ValueError(f"container_name {self.container_name!r} is not a valid Docker container name")

    def apply_environment(self, environ: Mapping[str, str], platform: str | None = None) -> VllmSettings:
        platform = platform or sys.platform
        self.hub_cache = hfcache.hub_cache_dir(environ, platform=platform, configured=self.hf_cache)
        home = hfcache.hf_home_dir(environ, platform=platform)
        self.hf_home = home if self.hub_cache == home / "hub" else None
        self.hf_token = environ.get("HF_TOKEN") or environ.get("HUGGING_FACE_HUB_TOKEN") or None
        self.hf_endpoint = (environ.get("HF_ENDPOINT") or "").rstrip("/") or None
        self.hf_offline = (environ.get("HF_HUB_OFFLINE") or environ.get("TRANSFORMERS_OFFLINE") or "").strip().lower() \
            in ("1", "on", "yes", "true")
        if environ.get("DOCKER_HOST"):
            self.docker_host = environ["DOCKER_HOST"]
        return self

    def resolved_hub_cache(self) -> PurePath:
        if self.hub_cache is None:  # settings built without apply_environment (plugin code used directly)
            import os

            self.apply_environment(os.environ)
        assert self.hub_cache is not None
        return self.hub_cache

    @property
    def image_ref(self) -> str:
        if "@" in self.image or (":" in self.image.rsplit("/", 1)[-1]):
            return self.image  # already carries a tag or digest
        return f"{self.image}:{self.tag}"

    @property
    def base_url(self) -> str:
        """The server's address, as shown and recorded: user information in `url` is never part of it (it is sent
        as HTTP basic authentication instead, see `auth_headers`)."""
        if self.url:
            url = _USERINFO.sub(r"\1", self.url).rstrip("/")
            return url[: -len("/v1")] if url.endswith("/v1") else url
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"  # bound to every interface: talk to it locally
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def remote_docker(self) -> bool:
        """The Docker daemon runs on another machine (`tcp://`, `ssh://`): its cache and GPUs are not this one's."""
        return self.runtime == "docker" and (self.docker_host or "").startswith(("tcp://", "ssh://", "http://",
                                                                                   "https://"))

    @property
    def connect_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    def launch(self, model: str) -> ModelLaunch:
        per = self.models.get(model) or ModelSettings()
        return ModelLaunch(
            model=model,
            served_name=per.served_name or self.served_name or model,
            gpu_memory_utilization=per.gpu_memory_utilization if per.gpu_memory_utilization is not None
            else self.gpu_memory_utilization,
            max_model_len=per.max_model_len if per.max_model_len is not None else self.max_model_len,
            extra_args=[*self.extra_args, *per.extra_args],
            max_num_seqs=per.max_num_seqs if per.max_num_seqs is not None else self.max_num_seqs,
            max_num_seqs_key=f"engines.vllm.models.{model}.max_num_seqs" if per.max_num_seqs is not None
            else "engines.vllm.max_num_seqs",
            revision=per.revision,
        )

    def revision(self, model: str) -> str | None:
        """The Hub revision configured for `model` (`engines.vllm.models.<model>.revision`), None for the main
        branch."""
        per = self.models.get(model)
        return per.revision if per is not None else None

    def engine_environment(self, *, offline: bool) -> dict[str, str]:
        """Variables the engine gets on top of its own: HF_HUB_OFFLINE=1 when it has nothing to download (see
        `common.engine_offline`), the token when set."""
        env = dict(self.environment)
        if offline:
            env["HF_HUB_OFFLINE"] = "1"
        if self.hf_token:
            env["HF_TOKEN"] = self.hf_token
        return env

    def url_credentials(self) -> tuple[str, str] | None:
        """(user, password) from user information in `url` (`http://user:key@gpu-box:8000`), else None."""
        from urllib.parse import unquote

        match = _USERINFO.match(self.url or "")
        if match is None:
            return None
        user, _, password = match.group(2).partition(":")
        return unquote(user), unquote(password)

    def api_key(self, launch: ModelLaunch | None = None) -> str | None:
        """The key a server Jarvis starts requires (`--api-key` in its extra_args, else VLLM_API_KEY in
        `environment`), which Jarvis then sends; None when it requires none (or the server is not Jarvis's)."""
        if self.url:
            return None
        given = flag_value(launch.extra_args, API_KEY_FLAG) if launch is not None else None
        return given or self.environment.get("VLLM_API_KEY") or None

    def auth_headers(self, launch: ModelLaunch | None = None) -> dict[str, str]:
        """What every request to the server carries: `Authorization: Bearer <api key>` for a server Jarvis started
        with one, basic authentication from user information in `url`; nothing otherwise."""
        key = self.api_key(launch)
        if key:
            return {"Authorization": f"Bearer {key}"}
        credentials = self.url_credentials()
        if credentials is not None:
            import base64

            token = base64.b64encode(":".join(credentials).encode()).decode("ascii")
            return {"Authorization": f"Basic {token}"}
        return {}

    def secrets(self) -> list[str]:
        """Values that must never appear in anything Jarvis prints or stores: the HF token, `environment` values
        whose names look secret (`WANDB_API_KEY`, `HF_TOKEN`, `DB_PASSWORD`, ...), the values of secret-looking
        flags in `extra_args` and the models' `extra_args` (`--api-key X`, `--hf-token=X`), and user information in
        `url`, `docker_host` and HF_ENDPOINT."""
        found = [str(v) for k, v in self.environment.items() if looks_secret(k)]
        for args in (self.extra_args, *(m.extra_args for m in self.models.values())):
            found += flag_secrets(args)
        for address in (self.url, self.docker_host, self.hf_endpoint):
            match = _USERINFO.match(address or "")
            if match is not None:
                from urllib.parse import unquote

                password = match.group(2).partition(":")[2]
                found += [match.group(2), password, unquote(password)]
        return sorted({s for s in (self.hf_token, *found) if s}, key=lambda s: (-len(s), s))

    def redact(self, text: str) -> str:
        """`text` through the core's one redaction function, with this engine's secrets."""
        return redact(text, self.secrets())


def looks_secret(name: str) -> bool:
    """Whether a variable or option name holds a secret, by the core's rule (what `redact_argv` masks)."""
    probe = f"{name}=x"
    return redact_argv([probe]) != [probe]


def flag_secrets(args: list[str]) -> list[str]:
    """The values of secret-looking options in a command line (`--api-key X`, `--token=X`), as the core's
    `redact_argv` finds them."""
    args = [str(a) for a in args]
    found = []
    for original, shown in zip(args, redact_argv(args)):
        if shown == original:
            continue
        if shown == "***":
            found.append(original)
        elif shown.endswith("=***") and "=" in original:
            found.append(original.split("=", 1)[1])
    return found


def _check_max_num_seqs(value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"max_num_seqs must be a positive number of requests, found {value}")


def _check_fraction(value: float | None) -> None:
    if value is not None and not 0.0 < value <= 1.0:
        raise ValueError(f"gpu_memory_utilization must be above 0 and at most 1, found {value}")

