"""Settings (config.yaml and OLLAMA_* variables), model names, and models on disk: no server involved."""

from __future__ import annotations

from pathlib import Path

import pytest
from jarvis_core.errors import ConfigError

from jarvis_ollama import store
from jarvis_ollama.names import canonical, parse_name, same_model
from jarvis_ollama.settings import OllamaSettings, parse_host
from tests.standins import ollama_models


@pytest.mark.parametrize("value, url, bind", [
    ("127.0.0.1", "http://127.0.0.1:11434", "127.0.0.1:11434"),
    ("localhost:8080", "http://localhost:8080", "localhost:8080"),
    ("http://10.0.0.5:9000", "http://10.0.0.5:9000", "10.0.0.5:9000"),
    ("http://example.org", "http://example.org:80", "example.org:80"),
    ("https://example.org", "https://example.org:443", "example.org:443"),
    ("0.0.0.0", "http://127.0.0.1:11434", "0.0.0.0:11434"),
    ("0.0.0.0:12000", "http://127.0.0.1:12000", "0.0.0.0:12000"),
    (":12001", "http://127.0.0.1:12001", ":12001"),
    ("[::1]:12002", "http://[::1]:12002", "[::1]:12002"),
    ("::", "http://127.0.0.1:11434", "[::]:11434"),
    ("  http://127.0.0.1:11434/  ", "http://127.0.0.1:11434", "127.0.0.1:11434"),
])
def test_ollama_host_forms(value, url, bind):
    address = parse_host(value)
    assert address.url == url
    assert address.bind == bind


@pytest.mark.parametrize("value", ["127.0.0.1:99999", "host:abc", "ftp://host:21", "[::1", "a b:1"])
def test_bad_addresses_are_rejected(value):
    with pytest.raises(ValueError):
        parse_host(value)


def test_defaults():
    settings = OllamaSettings()
    assert settings.url == "http://127.0.0.1:11434"
    assert settings.executable == "ollama"
    assert settings.models_dir is None
    assert settings.keep_alive == "5m"
    assert settings.stop_foreign_server is False
    assert settings.num_ctx is None
    assert settings.serve_host == "127.0.0.1:11434"


def test_environment_wins_over_config(tmp_path: Path):
    settings = OllamaSettings(url="http://127.0.0.1:1234", models_dir=tmp_path / "config-models")
    changed = settings.apply_environment({"OLLAMA_HOST": "0.0.0.0:4321", "OLLAMA_MODELS": str(tmp_path / "env")})
    assert changed.url == "http://127.0.0.1:4321"
    assert changed.serve_host == "0.0.0.0:4321"
    assert changed.models_dir == tmp_path / "env"
    assert settings.url == "http://127.0.0.1:1234"  # the original is left as it was
    assert settings.apply_environment({}).url == "http://127.0.0.1:1234"


def test_bad_ollama_host_is_one_clear_line():
    with pytest.raises(ConfigError) as info:
        OllamaSettings().apply_environment({"OLLAMA_HOST": "127.0.0.1:notaport"})
    message = str(info.value)
    assert "OLLAMA_HOST" in message and "host:port" in message and "\n" not in message


def test_settings_from_config_yaml(ollama, make_session, monkeypatch):
    session = make_session({"engines": {"ollama": {"url": "localhost:5555", "keep_alive": 600, "num_ctx": 8192,
                                                   "stop_foreign_server": True, "models_dir": "~/m"}}})
    settings = session.context("ollama").settings
    assert settings.url == "http://localhost:5555"
    assert settings.keep_alive == 600
    assert settings.num_ctx == 8192
    assert settings.stop_foreign_server is True
    assert settings.models_dir == Path("~/m").expanduser()
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:7777")
    assert make_session({"engines": {"ollama": {"url": "localhost:5555"}}}).context("ollama").settings.url == \
        "http://127.0.0.1:7777"


@pytest.mark.parametrize("section, words", [
    ({"keep_alive": "five minutes"}, ["keep_alive", "5m"]),
    ({"url": "127.0.0.1:0"}, ["url", "port"]),
    ({"num_ctx": 0}, ["num_ctx"]),
    ({"num_parallel": 0}, ["num_parallel", "positive"]),
    ({"num_parallel": "two"}, ["num_parallel", "integer"]),
    ({"nmu_ctx": 2048}, ["nmu_ctx", "num_ctx"]),
    ({"stop_foreign_server": "yes"}, ["stop_foreign_server", "true or false"]),
])
def test_wrong_settings_name_the_key(ollama, make_session, section, words):
    with pytest.raises(ConfigError) as info:
        make_session({"engines": {"ollama": section}}).context("ollama")
    assert "engines.ollama" in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_keep_alive_digits_are_seconds():
    assert OllamaSettings(keep_alive="300").keep_alive == 300
    assert OllamaSettings(keep_alive="-1").keep_alive == -1
    assert OllamaSettings(keep_alive="1h30m").keep_alive == "1h30m"


# --- names ----------------------------------------------------------------------------------------------------------


def test_names():
    assert parse_name("qwen2.5").parts == ("registry.ollama.ai", "library", "qwen2.5", "latest")
    assert parse_name("user/model:q4").parts == ("registry.ollama.ai", "user", "model", "q4")
    assert parse_name("hf.co/org/repo:Q8_0").parts == ("hf.co", "org", "repo", "Q8_0")
    assert same_model("qwen2.5", "qwen2.5:latest")
    assert same_model("registry.ollama.ai/library/Qwen2.5:7B", "qwen2.5:7b")
    assert not same_model("qwen2.5:7b", "qwen2.5:0.5b")
    assert canonical("llava") == "registry.ollama.ai/library/llava:latest"


# --- models on disk -------------------------------------------------------------------------------------------------


def test_model_on_disk(models_dir: Path):
    written = ollama_models.write_model(models_dir, "qwen2.5:0.5b")
    found = store.find_model(models_dir, "qwen2.5:0.5b")
    assert found is not None and found.digest == written.digest
    assert store.find_model(models_dir, "QWEN2.5:0.5B") is not None  # names ignore case
    assert store.find_model(models_dir, "qwen2.5:7b") is None
    ollama_models.write_model(models_dir, "smollm2")
    assert store.find_model(models_dir, "smollm2:latest") is not None
    ollama_models.write_model(models_dir, "hf.co/org/repo:Q4_K_M")
    assert store.find_model(models_dir, "hf.co/org/repo:Q4_K_M") is not None


def test_partial_or_broken_models_are_not_present(models_dir: Path):
    ollama_models.write_model(models_dir, "partial:1b", partial=True)
    assert store.find_model(models_dir, "partial:1b") is None
    ollama_models.write_model(models_dir, "nomanifest:1b", with_manifest=False)
    assert store.find_model(models_dir, "nomanifest:1b") is None
    spec = ollama_models.write_model(models_dir, "blobless:1b")
    manifest = Path(spec.manifest_file)
    import json

    layer = json.loads(manifest.read_text())["layers"][0]["digest"]
    store.blob_path(models_dir, layer).unlink()
    assert store.find_model(models_dir, "blobless:1b") is None
    bad = ollama_models.manifest_path(models_dir, "garbage:1b")
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    assert store.find_model(models_dir, "garbage:1b") is None


def test_default_model_folders(tmp_path: Path):
    linux = store.default_models_dirs({"HOME": "/home/me"}, "linux")
    assert linux == [Path("/home/me/.ollama/models"), Path("/usr/share/ollama/.ollama/models")]
    windows = store.default_models_dirs({"USERPROFILE": r"C:\Users\me"}, "win32")
    assert windows[0] == Path(r"C:\Users\me") / ".ollama" / "models"
    assert Path("/usr/share/ollama/.ollama/models") not in windows
    assert store.candidate_dirs(tmp_path) == [tmp_path]
