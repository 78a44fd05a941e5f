"""pull: one progress bar over every layer, an error line in the stream is a failure, and a server is started (and
recorded) when none runs, since Ollama downloads through its server."""

from __future__ import annotations

import io
import re

import pytest
from jarvis_core.errors import EngineUnavailableError
from jarvis_core.progress import Progress

from tests.standins import ollama_models


@pytest.fixture
def output():
    return io.StringIO()


def test_pull_with_one_bar_over_all_layers(session_for, standin, ref, output, models_dir):
    server = standin(models=[], pullable=[{"name": "llava:7b", "vision": True}], pull_steps=5, pull_seconds=0.2)
    session = session_for(port=server.port, progress=Progress(output))
    model = ref(session, "llava:7b")
    assert not session.is_available(model).present
    result = session.pull(model)
    assert result.present and result.revision and len(result.revision) == 64
    assert session.is_available(model).present
    assert ollama_models.is_model_present(models_dir, "llava:7b")  # written to the server's disk
    text = output.getvalue()
    lines = [line for line in text.splitlines() if line.startswith("Pulling llava:7b")]
    assert lines, text
    percents = [float(m.group(1)) for line in lines if (m := re.search(r"(\d+\.\d)%", line))]
    assert percents == sorted(percents) and percents[-1] == 100.0  # one bar, only ever growing, to 100 %
    total = ollama_models.ModelSpec.from_any({"name": "llava:7b", "vision": True}).layer_plan()
    assert sum(size for _, _, size in total) > ollama_models.PROJECTOR_SIZE  # the projector layer was counted too
    assert "GB" in lines[-1] and "Pulled llava:7b" in text


def test_pull_unknown_model(session_for, standin, ref, output):
    server = standin(models=[])
    session = session_for(port=server.port, progress=Progress(output))
    result = session.pull(ref(session, "no-such-model:1b"))
    assert not result.present
    assert "pull model manifest: file does not exist" in result.detail and "no-such-model:1b" in result.detail
    assert "ollama.com" in result.fix
    assert "failed" in output.getvalue()


def test_pull_error_line_after_progress_is_a_failure(session_for, standin, ref):
    server = standin(models=[], pullable=["smollm2:135m"])
    server.add_fault("error", after_chunks=3, endpoint="pull", message="max retries exceeded: unexpected EOF")
    session = session_for(port=server.port)
    result = session.pull(ref(session, "smollm2:135m"))
    assert not result.present and "max retries exceeded" in result.detail


def test_pull_connection_dropped(session_for, standin, ref):
    from jarvis_core.errors import EngineError

    server = standin(models=[], pullable=["smollm2:135m"])
    server.add_fault("die", after_chunks=2, endpoint="pull")
    session = session_for(port=server.port)
    with pytest.raises(EngineError) as info:
        session.pull(ref(session, "smollm2:135m"))
    assert "broke off" in str(info.value) and "resume" in str(info.value)


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
