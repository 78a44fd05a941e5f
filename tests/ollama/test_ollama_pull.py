"""pull: one progress display, bytes summed over every layer and Ollama's status lines as its phases; an error line in
the stream is a failure; a download that fails Ollama's sha256 check says it was corrupted and that running again
downloads it anew; and a server is started (and recorded) when none runs, since Ollama downloads through its server."""

from __future__ import annotations

import io
import re

import pytest
from jarvis_core.errors import EngineError, EngineUnavailableError
from jarvis_core.progress import Progress, human_bytes

from tests.standins import ollama_models


@pytest.fixture
def output():
    return io.StringIO()


class RecordingProgress(Progress):
    """The core's display on a clock that stands still (off a terminal only phase changes and final lines print),
    recording every call the plugin makes on its task: ("phase", text) and ("update", completed, total)."""

    def __init__(self) -> None:
        super().__init__(io.StringIO(), clock=lambda: 0.0)
        self.calls: list[tuple] = []

    def task(self, description: str, total: int | None = None, unit: str = "B"):
        task = super().task(description, total, unit)
        phase, update = task.phase, task.update

        def recorded_phase(text: str) -> None:
            self.calls.append(("phase", text))
            phase(text)

        def recorded_update(completed: int, total: int | None = None) -> None:
            self.calls.append(("update", completed, total))
            update(completed, total)

        task.phase, task.update = recorded_phase, recorded_update
        return task


def test_pull_shows_ollamas_status_lines_as_phases_of_one_display(session_for, standin, ref, models_dir):
    spec = {"name": "llava:7b", "vision": True}
    server = standin(models=[], pullable=[spec], pull_steps=5, pull_seconds=0.2)
    progress = RecordingProgress()
    session = session_for(port=server.port, progress=progress)
    model = ref(session, "llava:7b")
    assert not session.is_available(model).present
    result = session.pull(model)
    assert result.present and result.revision and len(result.revision) == 64
    assert session.is_available(model).present
    assert ollama_models.is_model_present(models_dir, "llava:7b")  # written to the server's disk

    plan = ollama_models.ModelSpec.from_any(spec).layer_plan()
    layer_phases = [f"pulling {digest[7:19]}" for _, digest, _ in plan]
    phases = [call[1] for call in progress.calls if call[0] == "phase"]
    assert phases == ["pulling manifest", *layer_phases, "verifying sha256 digest", "writing manifest"]
    updates = [call[1:] for call in progress.calls if call[0] == "update"]
    done = [completed for completed, _ in updates]
    assert len(updates) > len(plan) and done == sorted(done)  # bytes summed over the layers only grow
    total = sum(size for _, _, size in plan)
    assert total > ollama_models.PROJECTOR_SIZE + plan[0][2]  # the projector and the small layers count too
    assert updates[-1] == (total, total)

    text = progress.stream.getvalue()
    lines = text.splitlines()  # the clock stands still: one line per phase, with its figures, then the final line
    assert [line.split("  ")[1] for line in lines[:-1]] == phases, text
    for k in range(len(plan)):  # each layer's line counts that layer in the total
        assert f"/{human_bytes(sum(size for _, _, size in plan[:k + 1]))}" in lines[1 + k], lines[1 + k]
    assert lines[-1].startswith(f"ollama: llava:7b: {human_bytes(total)} in "), text  # the final line: how much
    assert "success" not in text  # the end is the final line, not a phase


def test_pull_unknown_model(session_for, standin, ref, output):
    server = standin(models=[])
    session = session_for(port=server.port, progress=Progress(output))
    result = session.pull(ref(session, "no-such-model:1b"))
    assert not result.present
    assert "pull model manifest: file does not exist" in result.detail and "no-such-model:1b" in result.detail
    assert "ollama.com" in result.fix
    assert output.getvalue().splitlines()[-1] == "ollama: pulling no-such-model:1b failed"


def test_pull_error_line_after_progress_is_a_failure(session_for, standin, ref):
    server = standin(models=[], pullable=["smollm2:135m"])
    server.add_fault("error", after_chunks=3, endpoint="pull", message="max retries exceeded: unexpected EOF")
    session = session_for(port=server.port)
    result = session.pull(ref(session, "smollm2:135m"))
    assert not result.present and "max retries exceeded" in result.detail


def test_corrupted_download_says_so_in_one_line_and_running_again_downloads_it(session_for, standin, ref, output,
                                                                                models_dir):
    server = standin(models=[], pullable=["smollm2:135m"])
    server.add_fault("corrupt", endpoint="pull")  # the next pull fails its sha256 check
    session = session_for(port=server.port, progress=Progress(output))
    model = ref(session, "smollm2:135m")
    with pytest.raises(EngineError) as info:
        session.pull(model)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("The download of 'smollm2:135m' was corrupted")
    assert "digest mismatch, file must be downloaded again: want sha256:" in message  # Ollama's own words
    assert "run again to download it anew" in message
    lines = output.getvalue().splitlines()
    assert "ollama: smollm2:135m  verifying sha256 digest" in "\n".join(lines)
    assert lines[-1] == "ollama: smollm2:135m: the download was corrupted"
    assert not session.is_available(model).present and not ollama_models.is_model_present(models_dir, "smollm2:135m")

    again = session.pull(model)  # as the message says: a new pull downloads it
    assert again.present and ollama_models.is_model_present(models_dir, "smollm2:135m")


def test_standin_fails_verification_as_ollama_does(standin):
    """The stand-in's `corrupt` fault, read by the official `ollama` client: the layers, the check, then the error."""
    ollama = pytest.importorskip("ollama")
    server = standin(models=[], pullable=["smollm2:135m"])
    server.add_fault("corrupt", endpoint="pull", times=2)
    client = ollama.Client(host=server.url)
    statuses = []
    with pytest.raises(ollama.ResponseError) as streamed:
        for part in client.pull("smollm2:135m", stream=True):
            statuses.append(part.status)
    assert statuses[0] == "pulling manifest" and statuses[-1] == "verifying sha256 digest"
    assert re.fullmatch(r"digest mismatch, file must be downloaded again: want sha256:[0-9a-f]{64}, "
                        r"got sha256:[0-9a-f]{64}", streamed.value.error)
    with pytest.raises(ollama.ResponseError) as whole:  # stream=False: HTTP 500 with the same error
        client.pull("smollm2:135m")
    assert whole.value.status_code == 500 and whole.value.error.startswith("digest mismatch")
    assert client.pull("smollm2:135m").status == "success"  # the fault is spent


def test_pull_connection_dropped(session_for, standin, ref):
    server = standin(models=[], pullable=["smollm2:135m"])
    server.add_fault("die", after_chunks=2, endpoint="pull")
    session = session_for(port=server.port)
    with pytest.raises(EngineError) as info:
        session.pull(ref(session, "smollm2:135m"))
    assert "broke off" in str(info.value) and "resume" in str(info.value)


def test_a_stream_that_ends_without_success_broke_off(session_for, ref, output):
    """A server that stops mid-download may end the stream cleanly, with neither an error nor `success`."""
    from http.server import BaseHTTPRequestHandler

    from jarvis_core.testing import serve

    class Stopping(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _send(self, body: bytes, ctype: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(b'{"version":"0.12.0"}', "application/json; charset=utf-8")

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            digest = "sha256:" + "ab" * 32
            self._send(b'{"status":"pulling manifest"}\n{"status":"pulling abababababab","digest":"%s",'
                       b'"total":4000,"completed":1000}\n' % digest.encode(), "application/x-ndjson")

    with serve(Stopping) as url:
        session = session_for(url=url, progress=Progress(output))
        with pytest.raises(EngineError) as info:
            session.pull(ref(session, "smollm2:135m"))
    assert str(info.value) == ("The download of 'smollm2:135m' broke off (the server ended the stream before "
                               "'success'); run again to resume it.")
    assert output.getvalue().splitlines()[-1] == "ollama: the download of smollm2:135m broke off"


def test_pull_starts_the_server_when_down(session_for, fake_ollama, ref, port, models_dir):
    fake_ollama.configure(pullable=["smollm2:135m"])
    session = session_for(port=port)
    result = session.pull(ref(session, "smollm2:135m"))
    assert result.present
    assert len(session.state.records("ollama", "process")) == 1  # recorded, so stop ends it
    assert ollama_models.is_model_present(models_dir, "smollm2:135m")
    session.stop("ollama")
    assert session.state.records() == []


def test_pull_not_installed(session_for, no_ollama, ref):
    session = session_for()
    with pytest.raises(EngineUnavailableError) as info:
        session.pull(ref(session, "smollm2:135m"))
    assert "https://ollama.com/download" in str(info.value)
