"""Turning Docker's and vLLM's failures into one line that says how to fix them; image pull progress."""

from __future__ import annotations

import io

import pytest

from jarvis_core.errors import EngineError, EngineUnavailableError
from jarvis_core.progress import Progress
from jarvis_core.state import Record
from jarvis_vllm import common, docker_runtime
from jarvis_vllm.settings import VllmSettings

from vllm_fixtures import *  # noqa: F401,F403  (fixtures)

TOKEN = "hf_SeCrEt0123456789"


class FakeAPIError(Exception):
    def __init__(self, explanation: str, status_code: int = 500) -> None:
        super().__init__(f"{status_code} Server Error: {explanation}")
        self.explanation = explanation
        self.status_code = status_code


def _settings(**values) -> VllmSettings:
    return VllmSettings(**values).apply_environment({"HOME": "/home/me"})


@pytest.mark.parametrize("text", [
    "driver failed programming external connectivity on endpoint vllm-server (abc): Bind for 127.0.0.1:8300 failed: "
    "port is already allocated",
    "Error starting userland proxy: listen tcp4 127.0.0.1:8300: bind: address already in use",
    "Ports are not available: exposing port TCP 127.0.0.1:8300 -> 0.0.0.0:0: listen tcp 127.0.0.1:8300: bind: An "
    "attempt was made to access a socket in a way forbidden by its access permissions.",
])
def test_port_clash_is_one_line_with_the_fix(text):
    assert common.is_port_clash(text) and not common.is_gpu_refusal(text)
    err = docker_runtime._api_error(FakeAPIError(text), _settings(port=8300), "Starting")
    message = str(err)
    assert "\n" not in message and "Port 8300 on 127.0.0.1 is already in use" in message
    assert "engines.vllm.port" in message


def test_gpu_refusal_is_one_line_with_the_fix():
    text = 'could not select device driver "" with capabilities: [[gpu]]'
    assert common.is_gpu_refusal(text) and not common.is_port_clash(text)
    err = docker_runtime._api_error(FakeAPIError(text), _settings(), "Starting")
    assert isinstance(err, EngineUnavailableError)
    assert "\n" not in str(err) and "NVIDIA Container Toolkit" in str(err) and "gpus: none" in str(err)


def test_other_docker_errors_are_redacted():
    settings = VllmSettings().apply_environment({"HOME": "/h", "HF_TOKEN": TOKEN})
    err = docker_runtime._api_error(FakeAPIError(f"invalid env HF_TOKEN={TOKEN}"), settings, "Creating")
    assert TOKEN not in str(err) and "Creating failed" in str(err)
    conflict = docker_runtime._api_error(FakeAPIError('Conflict. The container name "/vllm-server" is already in use '
                                                      "by container 123", 409), settings, "Creating")
    assert "leaves it alone" in str(conflict)


@pytest.mark.parametrize("log, hint", [
    ("ValueError: Free memory on device cuda:0 (10.1/79.2 GiB) on startup is less than desired GPU memory "
     "utilization (0.9, 71.3 GiB).", "gpu_memory_utilization"),
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "gpu_memory_utilization"),
    ("ValueError: To serve at least one request with the models's max seq len (32768), (4.00 GiB KV cache is needed, "
     "which is larger than the available KV cache memory", "max_model_len"),
    ("huggingface_hub.errors.LocalEntryNotFoundError: Cannot find an appropriate cached snapshot folder",
     "--force-download"),
    ("huggingface_hub.errors.GatedRepoError: 401 Client Error.", "HF_TOKEN"),
    ("OSError: [Errno 98] Address already in use", "engines.vllm.port"),
    ("vllm: error: unrecognized arguments: serve", "entrypoint"),
    ("api_server.py: error: unrecognized arguments: --bogus", "extra_args"),
    ("RuntimeError: Failed to infer device type", "GPU"),
    ('zmq.error.ZMQError: ipc path "/tmp/x" is longer than 107 characters (sizeof(sockaddr_un.sun_path)).', "TMPDIR"),
])
def test_log_hints(log, hint):
    assert hint in common.log_hint(log)


def _container_record(**data) -> Record:
    return Record(id="r1", engine="vllm", kind="container", log="/state/logs/vllm-vllm-server.log",
                  command=("docker", "run", "-d", "-e", "HF_TOKEN", "vllm/vllm-openai:latest", "org/m"), data=data)


def test_failure_message_has_command_tail_and_hint_without_secrets():
    log = "\n".join(f"INFO line {i}" for i in range(30)) + f"\nERROR token {TOKEN}\nCUDA out of memory"
    reason = EngineError("vLLM container vllm-server stopped before it was ready: exited with code 1")
    err = docker_runtime.failure(reason, log, _container_record(), [TOKEN])
    message = str(err)
    lines = message.splitlines()
    assert type(err) is EngineError and err.engine == "vllm"
    assert lines[0].startswith("vLLM container vllm-server stopped before it was ready: exited with code 1; "
                               "out of GPU memory")
    assert "(command: docker run -d -e HF_TOKEN vllm/vllm-openai:latest org/m; " \
           "log: /state/logs/vllm-vllm-server.log)" in lines[0]
    assert lines[1] == "Last lines of /state/logs/vllm-vllm-server.log:" and lines[-1] == "CUDA out of memory"
    assert "INFO line 29" in message and "INFO line 5" not in message  # only the tail
    assert TOKEN not in message and "***" in message


def test_exit_reason_from_container_state():
    assert docker_runtime.exit_reason({"Status": "running", "ExitCode": 0}) is None
    assert docker_runtime.exit_reason({"Status": "exited", "ExitCode": 1, "OOMKilled": False}) == \
        "exited with code 1"
    assert "exited with code 137 (OOMKilled" in docker_runtime.exit_reason(
        {"Status": "exited", "ExitCode": 137, "OOMKilled": True})


def test_unreachable_docker_is_unavailable_in_one_line(session_for, tmp_path):
    session = session_for(docker_host=f"unix://{tmp_path}/no-docker.sock", port=1)
    found = session.detect("vllm")
    assert not found.installed and not found.reachable
    assert "Docker is not reachable" in found.detail and "\n" not in found.detail
    with pytest.raises(EngineUnavailableError, match="Docker is not reachable"):
        session.pull(session.resolve("vllm:org/m"))


def test_secret_looking_environment_values_are_redacted():
    key, password = "wandb-0123456789abcdef", "hunter2-but-longer"
    settings = VllmSettings(environment={"WANDB_API_KEY": key, "db_Password": password, "My_Secret": "s3cr3t-value",
                                         "openai_token": "sk-tok-12345", "TMPDIR": "/tmp/short"})
    settings.apply_environment({"HOME": "/h", "HF_TOKEN": TOKEN})
    assert sorted(settings.secrets()) == sorted([TOKEN, key, password, "s3cr3t-value", "sk-tok-12345"])
    err = docker_runtime._api_error(FakeAPIError(f"bad env WANDB_API_KEY={key} DB_PASSWORD={password}"), settings,
                                    "Creating")
    assert key not in str(err) and password not in str(err) and "***" in str(err)
    message = str(docker_runtime.failure(EngineError("vLLM container vllm-server stopped before it was ready"),
                                         f"using key {key}\nTMPDIR=/tmp/short", _container_record(),
                                         settings.secrets()))
    assert key not in message and "/tmp/short" in message
