"""The Ollama stand-in checked against the official ``ollama`` Python client (and raw HTTP).

Every reply must parse in ``ollama.Client``; errors must raise ``ollama.ResponseError`` with the status
the real server uses (engines.md section 1). The last tests run ``tests/standins/bin/ollama serve`` as a
separate process and check its process tree with psutil.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import ollama
import psutil
import pytest

from tests.standins import ollama_models as om
from tests.standins.ollama_server import OllamaStandin, parse_keep_alive, parse_ollama_host, tokenize

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / "tests" / "standins" / "bin"
OLLAMA_BIN = BIN / "ollama"
PNG_1X1 = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082")).decode()
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def standin():
    with OllamaStandin(models=["qwen2.5:0.5b", {"name": "llava:7b", "vision": True}, "qwen3:0.6b"],
                       pullable=["smollm2:135m", {"name": "moondream:1.8b", "vision": True}],
                       load_seconds=0.1, token_delay=0.002, prompt_eval_delay=0.002, pull_seconds=0.05) as s:
        yield s


@pytest.fixture
def client(standin):
    with ollama.Client(host=standin.url, timeout=10) as c:
        yield c


# --------------------------------------------------------------------------- read-only endpoints

def test_root_version_head(standin):
    r = httpx.get(standin.url + "/")
    assert (r.status_code, r.text) == (200, "Ollama is running")
    assert r.headers["content-type"].startswith("text/plain")
    head = httpx.head(standin.url + "/")
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == "17"
    assert httpx.get(standin.url + "/api/version").json() == {"version": "0.12.3"}
    assert httpx.get(standin.url + "/api/nope").status_code == 404


def test_list_parses_with_realistic_fields(client, standin):
    models = {m.model: m for m in client.list().models}
    assert set(models) == {"qwen2.5:0.5b", "llava:7b", "qwen3:0.6b"}
    qwen = models["qwen2.5:0.5b"]
    assert len(qwen.digest) == 64 and int(qwen.digest, 16) >= 0
    assert qwen.size > 100_000_000 and isinstance(qwen.modified_at, dt.datetime)
    assert qwen.details.format == "gguf" and qwen.details.family == "qwen2"
    assert qwen.details.quantization_level == "Q4_K_M" and qwen.details.parameter_size == "500M"
    raw = httpx.get(standin.url + "/api/tags").json()["models"][0]
    assert {"name", "model", "modified_at", "size", "digest", "details"} <= set(raw)


def test_show_capabilities_and_404(client):
    llava = client.show("llava:7b")
    assert "vision" in llava.capabilities and "completion" in llava.capabilities
    assert llava.modelinfo["general.architecture"] == "llama"
    assert llava.modelinfo["llama.context_length"] > 0
    assert "<|im_start|>" in llava.template and llava.details.families == ["llama", "clip"]
    assert "vision" not in client.show("qwen2.5:0.5b").capabilities
    with pytest.raises(ollama.ResponseError) as err:
        client.show("nosuch:1b")
    assert err.value.status_code == 404 and err.value.error == "model 'nosuch:1b' not found"


# --------------------------------------------------------------------------- chat / generate

def test_chat_streamed_content_and_metrics(client, standin):
    parts = list(client.chat(model="qwen2.5:0.5b", messages=FRANCE, stream=True))
    assert "".join(p.message.content for p in parts) == "The capital of France is Paris."
    assert all(not p.done for p in parts[:-1]) and len(parts) > 5
    final = parts[-1]
    assert final.done and final.done_reason == "stop" and final.message.content == ""
    assert final.load_duration >= 0.1e9  # cold: the lazy load is inside this request
    assert final.eval_count == len(parts) - 1 and final.prompt_eval_count > 5
    assert 0 < final.prompt_eval_duration < final.total_duration
    assert final.eval_duration >= (final.eval_count - 1) * 0.002e9
    assert final.total_duration >= final.load_duration + final.prompt_eval_duration + final.eval_duration
    warm = list(client.chat(model="qwen2.5:0.5b", messages=[{"role": "user", "content": "2+2?"}], stream=True))
    assert warm[-1].load_duration < 0.05e9 and "".join(p.message.content for p in warm) == "2 + 2 = 4."
    rec = standin.emissions[-1]
    assert rec.path == "/api/chat" and rec.status == 200 and rec.outcome == "ok"
    assert len(rec.chunk_times) == len(warm) and rec.chunk_times == sorted(rec.chunk_times)


def test_chat_not_streamed_and_generate(client):
    resp = client.chat(model="qwen2.5:0.5b", messages=FRANCE, stream=False)
    assert resp.message.role == "assistant" and "Paris" in resp.message.content
    assert resp.done and resp.eval_count == 7 and resp.load_duration > 0
    gen = client.generate(model="qwen2.5:0.5b", prompt="What is 2+2?")
    assert gen.response == "2 + 2 = 4." and gen.done_reason == "stop" and gen.context
    pieces = list(client.generate(model="qwen2.5:0.5b", prompt="Say something", stream=True))
    assert pieces[-1].done and pieces[-1].response == ""
    assert "".join(p.response for p in pieces).startswith('Stand-in reply from qwen2.5:0.5b: you said "Say')


def test_num_predict_stop_and_thinking(client):
    cut = client.generate(model="qwen2.5:0.5b", prompt="count to 50", options={"num_predict": 5})
    assert cut.eval_count == 5 and cut.done_reason == "length" and cut.response == "1, 2, 3"
    stopped = client.chat(model="qwen2.5:0.5b", messages=FRANCE, options={"stop": [" is"]})
    assert stopped.message.content == "The capital of France"
    thought = client.chat(model="qwen3:0.6b", messages=FRANCE, think=True)
    assert thought.message.thinking and thought.message.content == "The capital of France is Paris."
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="qwen2.5:0.5b", messages=FRANCE, think=True)
    assert err.value.status_code == 400 and "does not support thinking" in err.value.error


def test_images_only_for_vision_models(client):
    msg = [{"role": "user", "content": "What is in this picture?", "images": [PNG_1X1]}]
    ans = client.chat(model="llava:7b", messages=msg)
    assert ans.message.content == "The image is a 1x1 PNG image."
    assert ans.prompt_eval_count > 576  # an image costs prompt tokens
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="qwen2.5:0.5b", messages=msg)
    assert err.value.status_code == 400
    bad = httpx.post(str(client._client.base_url) + "/api/chat", json={
        "model": "llava:7b", "messages": [{"role": "user", "content": "x", "images": ["data:image/png;base64,AAAA"]}]})
    assert bad.status_code == 400 and bad.json()["error"].startswith("illegal base64 data at input byte")


def test_unknown_model_and_bad_requests(client, standin):
    for call in (lambda: client.chat(model="ghost:1b", messages=FRANCE),
                 lambda: client.chat(model="ghost:1b", messages=FRANCE, stream=True).__next__(),
                 lambda: client.generate(model="ghost:1b", prompt="hi"),
                 lambda: client.delete("ghost:1b")):
        with pytest.raises(ollama.ResponseError) as err:
            call()
        assert err.value.status_code == 404 and err.value.error == "model 'ghost:1b' not found"
    r = httpx.post(standin.url + "/api/chat", content=b"")
    assert (r.status_code, r.json()) == (400, {"error": "missing request body"})
    r = httpx.post(standin.url + "/api/chat", json={"model": "qwen2.5:0.5b", "messages": [], "keep_alive": "600"})
    assert r.status_code == 400 and r.json()["error"] == 'time: missing unit in duration "600"'


# --------------------------------------------------------------------------- load, keep_alive, ps

def test_load_unload_keep_alive_and_ps(client, standin):
    assert client.ps().models == []
    loaded = client.chat(model="qwen2.5:0.5b", messages=[])
    assert loaded.done and loaded.done_reason == "load"
    ps = client.ps().models
    assert [m.model for m in ps] == ["qwen2.5:0.5b"]
    m = ps[0]
    assert m.size_vram == m.size > 0 and m.context_length == 4096
    assert dt.timedelta(minutes=4) < m.expires_at - dt.datetime.now(dt.timezone.utc) <= dt.timedelta(minutes=5)
    client.generate(model="qwen2.5:0.5b", keep_alive=-1)
    assert client.ps().models[0].expires_at.year > 2200  # negative keep_alive: never
    gone = client.chat(model="qwen2.5:0.5b", messages=[], keep_alive=0)
    assert gone.done_reason == "unload" and client.ps().models == []
    client.generate(model="qwen2.5:0.5b", prompt="hi", keep_alive="150ms")
    assert standin.loaded == ["qwen2.5:0.5b"]
    deadline = time.monotonic() + 3
    while standin.loaded and time.monotonic() < deadline:
        time.sleep(0.02)
    assert standin.loaded == [] and client.ps().models == []
    client.generate(model="qwen2.5:0.5b", prompt="hi", keep_alive=0)  # unloaded right after answering
    assert client.ps().models == []


def test_keep_alive_parsing():
    assert parse_keep_alive(None, 300.0) == 300.0
    assert parse_keep_alive("5m") == 300.0 and parse_keep_alive("1h30m") == 5400.0
    assert parse_keep_alive("0s") == 0 and parse_keep_alive(0) == 0 and parse_keep_alive(0.5) == 0
    assert parse_keep_alive(600) == 600 and parse_keep_alive("300ms") == pytest.approx(0.3)
    assert parse_keep_alive(-1) is None and parse_keep_alive("-1m") is None
    with pytest.raises(ValueError, match="invalid duration"):
        parse_keep_alive("soon")
    assert "".join(tokenize("The capital of France is Paris.")) == "The capital of France is Paris."
    assert parse_ollama_host(None) == ("127.0.0.1", 11434)
    assert parse_ollama_host("0.0.0.0") == ("0.0.0.0", 11434)
    assert parse_ollama_host("http://127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_ollama_host("127.0.0.1:0") == ("127.0.0.1", 0)


def test_concurrent_cold_requests_share_one_load(standin):
    results = []
    barrier = threading.Barrier(3)

    def ask():
        with ollama.Client(host=standin.url) as c:
            barrier.wait()
            results.append(c.chat(model="qwen2.5:0.5b", messages=FRANCE))

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    loads = sorted(r.load_duration for r in results)
    # one shared load (three loads in a row would differ by >= 0.1 s)
    assert len(results) == 3 and loads[0] >= 0.02e9 and loads[-1] - loads[0] < 0.08e9
    # num_parallel=1: the requests were evaluated and decoded one after another
    windows = sorted((rec.chunk_times[-1] - rec.chunks[-1]["prompt_eval_duration"] - rec.chunks[-1]["eval_duration"],
                      rec.chunk_times[-1]) for rec in standin.emissions if rec.path == "/api/chat")
    assert len(windows) == 3 and all(a[1] <= b[0] for a, b in zip(windows, windows[1:]))


@pytest.mark.parametrize("num_parallel", [1, 3])
def test_num_parallel_slots_serve_that_many_at_once_and_queue_the_rest(num_parallel):
    """Three requests in flight at once: the stand-in serves `num_parallel` of them at a time (t_slot is when one got
    its slot, t_slot_released when it gave it back), the rest wait in its queue."""
    with OllamaStandin(models=["qwen2.5:0.5b"], load_seconds=0, token_delay=0.01, num_parallel=num_parallel) as s, \
            ollama.Client(host=s.url, timeout=10) as c:
        c.generate(model="qwen2.5:0.5b")  # loaded first: the requests below compete for slots only
        s.clear_emissions()
        barrier = threading.Barrier(3)

        def ask():
            barrier.wait()
            c.chat(model="qwen2.5:0.5b", messages=FRANCE)

        threads = [threading.Thread(target=ask) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # The stand-in gives the slot back just after the answer is written: wait for its stamp, not the answer's.
        deadline = time.monotonic() + 5
        while any(r.t_slot_released is None for r in s.emissions if r.path == "/api/chat") and \
                time.monotonic() < deadline:
            time.sleep(0.01)
        served = sorted((r.t_slot, r.t_slot_released) for r in s.emissions if r.path == "/api/chat")
        assert len(served) == 3 and all(start < end for start, end in served)
        overlapping = max(sum(1 for start, end in served if start <= t < end) for t, _ in served)
        assert overlapping == num_parallel
        if num_parallel == 1:
            assert all(a[1] <= b[0] for a, b in zip(served, served[1:]))


def test_eviction_and_context_reload():
    with OllamaStandin(models=["a:1b", "b:1b"], max_loaded_models=1, load_seconds=0.05, token_delay=0) as s, \
            ollama.Client(host=s.url) as c:
        c.generate(model="a:1b", prompt="hi")
        c.generate(model="b:1b", prompt="hi")
        assert [m.model for m in c.ps().models] == ["b:1b"]  # a:1b made room
        again = c.generate(model="b:1b", prompt="hi", options={"num_ctx": 8192})
        assert again.load_duration >= 0.05e9 and c.ps().models[0].context_length == 8192


# --------------------------------------------------------------------------- pull / delete

def test_pull_streamed_progress_then_listed_and_deleted(client):
    progress = list(client.pull("smollm2:135m", stream=True))
    statuses = [p.status for p in progress]
    assert statuses[0] == "pulling manifest" and statuses[-3:] == ["verifying sha256 digest", "writing manifest",
                                                                    "success"]
    layers = [p for p in progress if p.status.startswith("pulling ") and p.digest]
    assert len({p.digest for p in layers}) >= 4
    big = [p for p in layers if p.digest == layers[0].digest]
    assert big[0].completed is None and big[-1].completed == big[-1].total > 1_000_000
    assert [p.completed for p in big[1:]] == sorted(p.completed for p in big[1:]) and len(big) >= 4
    assert all(p.status == f"pulling {p.digest[7:19]}" for p in layers)
    assert "smollm2:135m" in [m.model for m in client.list().models]
    assert client.pull("moondream:1.8b").status == "success"  # stream=False
    assert "vision" in client.show("moondream:1.8b").capabilities
    assert client.delete("smollm2:135m").status == "success"
    assert "smollm2:135m" not in [m.model for m in client.list().models]


def test_pull_unknown_model(client, standin):
    stream = client.pull("does-not-exist:7b", stream=True)
    assert next(stream).status == "pulling manifest"
    with pytest.raises(ollama.ResponseError) as err:
        next(stream)
    assert err.value.error == "pull model manifest: file does not exist"
    with pytest.raises(ollama.ResponseError) as err:
        client.pull("does-not-exist:7b")
    assert err.value.status_code == 500
    r = httpx.post(standin.url + "/api/pull", json={"model": "bad name!"})
    assert r.status_code == 400


# --------------------------------------------------------------------------- faults

def test_error_line_after_n_chunks(client, standin):
    standin.add_fault("error", after_chunks=3, endpoint="chat", message="boom")
    got = []
    with pytest.raises(ollama.ResponseError) as err:
        for part in client.chat(model="qwen2.5:0.5b", messages=FRANCE, stream=True):
            got.append(part)
    assert err.value.error == "boom" and len(got) == 3
    rec = standin.emissions[-1]
    assert rec.status == 200 and rec.outcome == "error" and rec.chunks[-1] == {"error": "boom"}
    standin.add_fault("error", after_chunks=0, message="before anything")
    with pytest.raises(ollama.ResponseError) as err:
        next(client.chat(model="qwen2.5:0.5b", messages=FRANCE, stream=True))
    assert err.value.status_code == 500 and err.value.error == "before anything"
    # the fault was used up: the next request is fine
    assert client.chat(model="qwen2.5:0.5b", messages=FRANCE).message.content.endswith("Paris.")


def test_server_dies_mid_stream(client, standin):
    standin.add_fault("die", after_chunks=2)
    got = []
    with pytest.raises(httpx.RemoteProtocolError):
        for part in client.chat(model="qwen2.5:0.5b", messages=FRANCE, stream=True):
            got.append(part)
    assert len(got) == 2 and standin.emissions[-1].outcome == "died"
    standin.add_fault("hang", after_chunks=1, seconds=5)
    with ollama.Client(host=standin.url, timeout=0.3) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            list(impatient.chat(model="qwen2.5:0.5b", messages=FRANCE, stream=True))


def test_status_and_load_faults(client, standin):
    standin.add_fault("status", status=503)
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model="qwen2.5:0.5b", prompt="hi")
    assert err.value.status_code == 503 and "maximum pending requests" in err.value.error
    standin.add_fault("load_error", model="llava:7b")
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="llava:7b", messages=FRANCE)
    assert err.value.status_code == 500 and "llama runner process has terminated" in err.value.error
    assert standin.loaded == []
    slow = standin.add_model({"name": "big:70b", "load_seconds": 0.4})
    assert client.chat(model=slow.name, messages=FRANCE).load_duration >= 0.4e9


def test_emission_stamps_precede_client_arrivals(standin):
    with httpx.Client(base_url=standin.url) as c:
        t_send = time.perf_counter_ns()
        arrivals = []
        with c.stream("POST", "/api/chat", json={"model": "qwen2.5:0.5b", "messages": FRANCE}) as r:
            for line in r.iter_lines():
                arrivals.append(time.perf_counter_ns())
                json.loads(line)
    rec = standin.emissions[-1]
    assert rec.t_received >= t_send and len(rec.chunk_times) == len(arrivals)
    lags = [a - e for a, e in zip(arrivals, rec.chunk_times)]
    assert all(lag >= 0 for lag in lags) and max(lags) < 0.5e9
    final = rec.chunks[-1]
    # the server-side TTFT (load + prompt eval + one token) matches the first write
    assert rec.chunk_times[0] - rec.t_received >= final["load_duration"] + final["prompt_eval_duration"]


def test_prompt_cache_counts_only_new_tokens(client):
    first = client.chat(model="qwen2.5:0.5b", messages=FRANCE)
    again = client.chat(model="qwen2.5:0.5b", messages=FRANCE)
    assert again.prompt_eval_count < first.prompt_eval_count


# --------------------------------------------------------------------------- models on disk

def test_models_on_disk_layout(tmp_path):
    full = om.write_model(tmp_path, "qwen2.5:0.5b", size=400_000_000)
    part = om.write_model(tmp_path, "user/broken:1b", partial=True)
    vis = om.write_model(tmp_path, "llava:7b")
    assert (tmp_path / "manifests/registry.ollama.ai/library/qwen2.5/0.5b").is_file()
    assert (tmp_path / "manifests/registry.ollama.ai/user/broken/1b").is_file()
    manifest = json.loads((tmp_path / "manifests/registry.ollama.ai/library/qwen2.5/0.5b").read_text())
    assert manifest["schemaVersion"] == 2 and manifest["config"]["digest"].startswith("sha256:")
    assert manifest["layers"][0]["mediaType"] == om.MEDIA_MODEL and manifest["layers"][0]["size"] == 400_000_000
    for layer in manifest["layers"] + [manifest["config"]]:
        assert (tmp_path / "blobs" / layer["digest"].replace(":", "-")).is_file()
    assert om.is_model_present(tmp_path, "qwen2.5:0.5b") and full.complete and full.size > 400_000_000
    assert not om.is_model_present(tmp_path, "user/broken:1b") and part.missing_blobs
    assert list((tmp_path / "blobs").glob("*-partial"))
    assert "vision" in vis.capabilities and "tools" in full.capabilities
    assert om.read_gguf_metadata(full.weights_file)["qwen2.context_length"] == 32768
    assert [m.name for m in om.list_models(tmp_path)] == ["llava:7b", "qwen2.5:0.5b", "user/broken:1b"]
    assert om.remove_model(tmp_path, "llava:7b") and not om.is_model_present(tmp_path, "llava:7b")
    assert om.is_model_present(tmp_path, "qwen2.5:0.5b")  # shared blobs survive the removal


def test_standin_serves_a_models_folder(tmp_path):
    om.write_model(tmp_path, "qwen2.5:0.5b")
    om.write_model(tmp_path, "broken:1b", partial=True)
    with OllamaStandin(models=[], models_dir=tmp_path, pullable=["smollm2:135m"], load_seconds=0.01,
                       pull_seconds=0.01) as s, ollama.Client(host=s.url) as c:
        assert {m.model for m in c.list().models} == {"qwen2.5:0.5b", "broken:1b"}
        assert c.chat(model="qwen2.5:0.5b", messages=FRANCE).message.content.endswith("Paris.")
        with pytest.raises(ollama.ResponseError) as err:
            c.chat(model="broken:1b", messages=FRANCE)
        assert err.value.status_code == 500 and "no such file or directory" in err.value.error
        om.write_model(tmp_path, "gemma3:1b")  # appears while the server runs
        assert "gemma3:1b" in {m.model for m in c.list().models}
        c.pull("smollm2:135m")
        assert om.is_model_present(tmp_path, "smollm2:135m")
        c.delete("qwen2.5:0.5b")
        assert om.read_model(tmp_path, "qwen2.5:0.5b") is None


# --------------------------------------------------------------------------- separate processes

def _wait_port_file(path: Path, proc: subprocess.Popen, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().strip():
            return int(path.read_text())
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.02)
    raise AssertionError("the stand-in did not start")


def _runners(pid: int) -> list:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [k for k in kids if "runner" in " ".join(k.cmdline())]


def _serve(tmp_path: Path, config: dict, host: str = "127.0.0.1:0") -> tuple:
    cfg = tmp_path / "standin.json"
    cfg.write_text(json.dumps(config))
    port_file = tmp_path / "port"
    env = dict(os.environ, OLLAMA_HOST=host, OLLAMA_MODELS=str(tmp_path / "models"),
               JARVIS_STANDIN_OLLAMA_CONFIG=str(cfg), JARVIS_STANDIN_OLLAMA_PORT_FILE=str(port_file))
    proc = subprocess.Popen([sys.executable, str(OLLAMA_BIN), "serve"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc, port_file, env


def test_bin_ollama_serve_process_tree(tmp_path):
    om.write_model(tmp_path / "models", "qwen2.5:0.5b")
    proc, port_file, env = _serve(tmp_path, {"load_seconds": 0.05, "token_delay": 0.001})
    try:
        port = _wait_port_file(port_file, proc)
        with ollama.Client(host=f"http://127.0.0.1:{port}") as c:
            assert [m.model for m in c.list().models] == ["qwen2.5:0.5b"]
            assert _runners(proc.pid) == []
            assert "Paris" in c.chat(model="qwen2.5:0.5b", messages=FRANCE).message.content
            runners = _runners(proc.pid)
            assert len(runners) == 1
            cmd = runners[0].cmdline()
            assert cmd[cmd.index("--model") + 1].startswith(str(tmp_path / "models" / "blobs" / "sha256-"))
            port_n = int(cmd[cmd.index("--port") + 1])
            assert port_n in {c.laddr.port for c in runners[0].net_connections(kind="tcp")
                              if c.status == psutil.CONN_LISTEN}
            c.generate(model="qwen2.5:0.5b", keep_alive=0)  # unload
            psutil.wait_procs(runners, timeout=5)
            assert not runners[0].is_running() and _runners(proc.pid) == []
            c.chat(model="qwen2.5:0.5b", messages=FRANCE)  # reload: a new runner
            runners = _runners(proc.pid)
            assert len(runners) == 1
        version = subprocess.run([sys.executable, str(OLLAMA_BIN), "--version"], env=dict(env, OLLAMA_HOST=f"127.0.0.1:{port}"),
                                 capture_output=True, text=True, timeout=10)
        assert version.stdout.strip() == "ollama version is 0.12.3"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        gone, alive = psutil.wait_procs(runners, timeout=5)
        assert alive == []
        _, err = proc.communicate(timeout=5)
        assert "Listening on 127.0.0.1:" in err and '"/api/chat"' in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(os.name == "nt", reason="shebang scripts run through PATH on POSIX only")
def test_bin_ollama_via_path_and_start_failures(tmp_path):
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", OLLAMA_HOST="127.0.0.1:9")
    out = subprocess.run(["ollama", "--version"], env=env, capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and "could not connect to a running Ollama instance" in out.stdout
    assert "client version is 0.12.3" in out.stdout
    proc, _, _ = _serve(tmp_path, {"fail_on_start": True}, host="127.0.0.1:11434")
    assert proc.wait(timeout=10) == 1
    assert "Error: listen tcp 127.0.0.1:11434: bind: address already in use" in proc.stderr.read()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc, _, _ = _serve(tmp_path, {}, host=f"127.0.0.1:{port}")
        assert proc.wait(timeout=10) == 1
        assert "bind: address already in use" in proc.stderr.read()


def test_crash_fault_orphans_runners_that_then_exit(tmp_path):
    om.write_model(tmp_path / "models", "qwen2.5:0.5b")
    proc, port_file, _ = _serve(tmp_path, {"load_seconds": 0.01, "token_delay": 0.001,
                                           "faults": [{"kind": "crash", "after_chunks": 2, "endpoint": "chat"}]})
    try:
        port = _wait_port_file(port_file, proc)
        with ollama.Client(host=f"http://127.0.0.1:{port}") as c:
            c.generate(model="qwen2.5:0.5b")  # load: a runner appears
            runners = _runners(proc.pid)
            assert len(runners) == 1
            with pytest.raises(httpx.HTTPError):
                list(c.chat(model="qwen2.5:0.5b", messages=FRANCE, stream=True))
        assert proc.wait(timeout=10) == 2
        _, alive = psutil.wait_procs(runners, timeout=5)  # the orphan notices and exits
        assert alive == []
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_module_command_line(tmp_path):
    port_file = tmp_path / "port"
    proc = subprocess.Popen([sys.executable, "-m", "tests.standins.ollama_server", "--port", "0", "--models",
                             "a:1b,b:2b", "--vision-models", "v:7b", "--port-file", str(port_file), "--quiet"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = _wait_port_file(port_file, proc)
        with ollama.Client(host=f"http://127.0.0.1:{port}") as c:
            assert {m.model for m in c.list().models} == {"a:1b", "b:2b", "v:7b"}
            assert "vision" in c.show("v:7b").capabilities
            c.generate(model="a:1b", prompt="hi")
            recs = httpx.get(f"http://127.0.0.1:{port}/_standin/emissions").json()["requests"]
            assert [r["path"] for r in recs][-1] == "/api/generate" and recs[-1]["chunk_times"]
            # faults can be injected into a running process too
            assert httpx.post(f"http://127.0.0.1:{port}/_standin/faults",
                              json={"kind": "error", "after_chunks": 1, "message": "late"}).status_code == 200
            with pytest.raises(ollama.ResponseError, match="late"):
                list(c.generate(model="a:1b", prompt="hi", stream=True))
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
