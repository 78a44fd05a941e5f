"""Pulling the vLLM image: one progress display over downloading and then extracting, summed over the layers (those
that already exist not counted), a final line with how much was pulled and how long it took, and one-line failures
that leave an interrupted pull to Docker's own resume.

A real daemon cannot pull from the internet here, so the Docker SDK's `client.api.pull` talks to a stand-in of the
Docker Engine API on 127.0.0.1 (`EngineStandin`): `/_ping`, `/version`, `/images/{name}/json` and `POST
/images/create`, whose answer is the chunked JSON stream the daemon writes (moby's streamformatter: one JSONMessage
per line ending in CRLF, `<`/`>`/`&` escaped as Go's encoder does), with layers downloading three at a time and each
extracting in order as soon as it is downloaded, as the classic image store does; faults end it with an error event,
a dropped connection or a stream cut short.
"""

from __future__ import annotations

import io
import json
import re
import socket
import threading
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler
from typing import Any, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from jarvis_core.errors import EngineError
from jarvis_core.progress import Progress, human_bytes
from jarvis_core.testing import serve
from jarvis_vllm import docker_runtime

from vllm_fixtures import *  # noqa: F401,F403  (fixtures)

REPO_NAME, TAG = "vllm/vllm-openai", "v0.11.0"
REF = f"{REPO_NAME}:{TAG}"
LABEL = f"vllm: image {REF}"
API_VERSION = "1.43"
CONCURRENT_DOWNLOADS = 3  # dockerd's max-concurrent-downloads default
#: A vLLM-like image: (short layer ID, compressed size); one of them is already on the machine in most tests.
LAYERS = [("9cb31e2e37ea", 29_754_290), ("b1f2a64d3e0c", 480_113_525), ("5ea7f3b27d9a", 2_341_820_112),
          ("4f4fb700ef54", 32), ("77d9a3a1f0b4", 6_905_441)]
ALREADY_THERE = "9cb31e2e37ea"


# --- the stand-in ----------------------------------------------------------------------------------------------------


def go_json(obj: Any) -> bytes:
    """JSON as Go's encoding/json writes it for the daemon: compact, with <, > and & escaped."""
    text = json.dumps(obj, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def _progress_bar(current: int, total: int) -> str:
    filled = 50 * current // total
    bar = "=" * filled + (">" if filled < 50 else "") + " " * max(0, 49 - filled)
    return f"[{bar}]  {current / 1e6:.4g}MB/{total / 1e6:.4g}MB"


def _layer_event(status: str, layer: str, current: int | None = None, total: int | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"status": status, "progressDetail": {}}
    if total is not None and current is not None:
        event["progressDetail"] = {"current": current, "total": total}
        event["progress"] = _progress_bar(current, total)
    event["id"] = layer
    return event


def pull_events(repo: str, tag: str, layers: list[tuple[str, int]], present: set[str], *,
                bandwidth: int = 400_000_000, unpacking: int = 250_000_000) -> Iterator[dict[str, Any]]:
    """The events of a pull as the classic image store writes them (moby distribution/pull_v2.go, xfer): every
    layer first ("Already exists" or "Pulling fs layer"), those beyond the concurrent downloads "Waiting", then the
    downloads interleaved ("Downloading" with the compressed bytes, "Verifying Checksum", "Download complete"), each
    layer "Extracting" (the compressed bytes read) in order once it is downloaded, "Pull complete"; then the digest
    and the status. Per step the downloads share `bandwidth` bytes and extraction reads `unpacking` bytes."""
    yield {"status": f"Pulling from {repo}", "id": tag}
    todo = []
    for layer, size in layers:
        if layer in present:
            yield _layer_event("Already exists", layer)
        else:
            yield _layer_event("Pulling fs layer", layer)
            todo.append((layer, size))
    for layer, _ in todo[CONCURRENT_DOWNLOADS:]:
        yield _layer_event("Waiting", layer)
    sizes = dict(todo)
    queue = [layer for layer, _ in todo]
    active, queue = queue[:CONCURRENT_DOWNLOADS], queue[CONCURRENT_DOWNLOADS:]
    got = dict.fromkeys(sizes, 0)
    unpacked = dict.fromkeys(sizes, 0)
    fetched: set[str] = set()
    next_to_extract = 0
    while next_to_extract < len(todo):
        share = bandwidth // max(1, len(active))
        for layer in list(active):
            got[layer] = min(sizes[layer], got[layer] + share)
            yield _layer_event("Downloading", layer, got[layer], sizes[layer])
            if got[layer] == sizes[layer]:
                yield _layer_event("Verifying Checksum", layer)
                yield _layer_event("Download complete", layer)
                active.remove(layer)
                fetched.add(layer)
                if queue:
                    active.append(queue.pop(0))
        budget = unpacking
        while budget > 0 and next_to_extract < len(todo) and todo[next_to_extract][0] in fetched:
            layer = todo[next_to_extract][0]
            step = min(budget, sizes[layer] - unpacked[layer])
            unpacked[layer] += step
            budget -= step
            yield _layer_event("Extracting", layer, unpacked[layer], sizes[layer])
            if unpacked[layer] == sizes[layer]:
                yield _layer_event("Pull complete", layer)
                next_to_extract += 1
    yield {"status": "Digest: sha256:" + "0123456789abcdef" * 4}
    yield {"status": f"Status: Downloaded newer image for {repo}:{tag}"}


class EngineStandin:
    """The Docker Engine API as far as a pull goes. `images`: "repo:tag" -> layers the registry has; `present`: layer
    IDs already on this machine (a layer extracted by a pull joins them, as in the real store, so a pull that broke
    off leaves its finished layers); `fault`: how the next pull ends early — ("error", after N events, message): an
    error event (HTTP 200 already sent); ("die", N): the connection dropped; ("cut", N): the stream ended cleanly
    without its "Status:" line. An image the registry does not have is refused before any event, with 404."""

    def __init__(self, images: dict[str, list[tuple[str, int]]], present: set[str] = frozenset(),
                 fault: tuple[Any, ...] | None = None) -> None:
        self.images = images
        self.present = set(present)
        self.fault = fault
        self.pulled: set[str] = set()
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self.url = ""
        self._lock = threading.Lock()

    @property
    def docker_host(self) -> str:
        return self.url.replace("http://", "tcp://")

    def handler(self) -> type[BaseHTTPRequestHandler]:
        engine = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                engine.route(self)

            def do_POST(self) -> None:
                engine.route(self)

        return Handler

    # --- answers, as the daemon writes them ---

    @staticmethod
    def _head(h: BaseHTTPRequestHandler, status: int, ctype: str, length: int | None) -> None:
        h.send_response(status)
        h.send_header("Api-Version", API_VERSION)
        h.send_header("Docker-Experimental", "false")
        h.send_header("Ostype", "linux")
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length" if length is not None else "Transfer-Encoding",
                      str(length) if length is not None else "chunked")
        h.end_headers()

    def _json(self, h: BaseHTTPRequestHandler, status: int, obj: Any) -> None:
        body = go_json(obj) + b"\n"
        self._head(h, status, "application/json", len(body))
        if h.command != "HEAD":
            h.wfile.write(body)

    def version_info(self) -> dict[str, Any]:
        return {"Platform": {"Name": "Docker Engine - Community"}, "Version": "24.0.7", "ApiVersion": API_VERSION,
                "MinAPIVersion": "1.12", "Os": "linux", "Arch": "amd64", "KernelVersion": "6.1.0"}

    def route(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        path = re.sub(r"^/v\d+\.\d+(?=/)", "", parts.path)
        query = parse_qs(parts.query)
        length = int(h.headers.get("Content-Length") or 0)
        if length:
            h.rfile.read(length)
        with self._lock:
            self.requests.append((h.command, path, query))
        if path == "/_ping":
            self._head(h, 200, "text/plain; charset=utf-8", 2)
            if h.command != "HEAD":
                h.wfile.write(b"OK")
        elif path == "/version":
            self._json(h, 200, self.version_info())
        elif h.command == "GET" and (match := re.fullmatch(r"/images/(.+)/json", path)):
            name = unquote(match.group(1))
            if name in self.pulled:
                self._json(h, 200, {"Id": "sha256:" + "ab" * 32, "RepoTags": [name]})
            else:
                self._json(h, 404, {"message": f"No such image: {name}"})
        elif h.command == "POST" and path == "/images/create":
            self.pull(h, query["fromImage"][0], (query.get("tag") or ["latest"])[0])
        else:
            self._json(h, 404, {"message": "page not found"})

    def pull(self, h: BaseHTTPRequestHandler, repo: str, tag: str) -> None:
        fault, self.fault = self.fault, None
        ref = f"{repo}:{tag}"
        if ref not in self.images:
            self._json(h, 404, {"message": f"manifest for {ref} not found: manifest unknown: manifest unknown"})
            return
        self._head(h, 200, "application/json", None)
        for count, event in enumerate(pull_events(repo, tag, self.images[ref], self.present)):
            if fault is not None and count == fault[1]:
                if fault[0] == "error":
                    self._chunk(h, {"errorDetail": {"message": fault[2]}, "error": fault[2]})
                elif fault[0] == "die":  # no terminating chunk: the connection just goes
                    h.wfile.flush()
                    h.close_connection = True
                    h.connection.shutdown(socket.SHUT_RDWR)
                    return
                h.wfile.write(b"0\r\n\r\n")
                return
            self._chunk(h, event)
            if event.get("status") == "Pull complete":
                self.present.add(event["id"])
        h.wfile.write(b"0\r\n\r\n")
        self.pulled.add(ref)

    @staticmethod
    def _chunk(h: BaseHTTPRequestHandler, event: dict[str, Any]) -> None:
        data = go_json(event) + b"\r\n"
        h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))


@pytest.fixture
def engine() -> Iterator[Any]:
    """`engine(**options)`: a started EngineStandin (see its arguments) holding the vLLM-like image."""
    with ExitStack() as stack:
        def make(**options: Any) -> EngineStandin:
            options.setdefault("images", {REF: LAYERS})
            standin = EngineStandin(**options)
            standin.url = stack.enter_context(serve(standin.handler()))
            return standin

        yield make


@pytest.fixture
def client_of():
    """`client_of(engine)`: a Docker client of the stand-in, made as Jarvis makes them (`connect`: ping, version)."""
    clients = []

    def make(standin: EngineStandin):
        client = docker_runtime.connect(standin.docker_host)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture(autouse=True)
def no_docker_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT"):
        monkeypatch.delenv(name, raising=False)


class RecordingProgress(Progress):
    """The core's display, on a clock that stands still (off a terminal only phase changes and final lines print),
    recording what the plugin has reported each time it names the phase: (phase, completed, total)."""

    def __init__(self) -> None:
        super().__init__(io.StringIO(), clock=lambda: 0.0)
        self.reported: list[tuple[str, int, int | None]] = []

    def task(self, description: str, total: int | None = None, unit: str = "B") -> Any:
        task = super().task(description, total, unit)
        phase = task.phase

        def recorded(text: str) -> None:
            phase(text)
            self.reported.append((text, task.completed, task.total))

        task.phase = recorded  # type: ignore[method-assign]
        return task

    @property
    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()


def percent(figures: str) -> float | None:
    match = re.search(r"(\d+\.\d)%", figures)
    return float(match.group(1)) if match else None


# --- a whole pull ----------------------------------------------------------------------------------------------------


def test_pull_shows_downloading_then_extracting_and_says_how_much(engine, client_of):
    standin = engine(present={ALREADY_THERE})
    progress = RecordingProgress()
    docker_runtime.pull_image(client_of(standin), REF, progress)
    assert ("POST", "/images/create", {"fromImage": [REPO_NAME], "tag": [TAG]}) in standin.requests

    pulled = sum(size for layer, size in LAYERS if layer != ALREADY_THERE)  # the layer already there is not counted
    downloading = [(done, total) for phase, done, total in progress.reported if phase == "downloading"]
    extracting = [(done, total) for phase, done, total in progress.reported if phase == "extracting"]
    assert [phase for phase, _, _ in progress.reported] == ["downloading"] * len(downloading) + \
        ["extracting"] * len(extracting)
    # No total before every layer's size is known (a "Waiting" layer has none yet), then the true one.
    assert downloading[0][1] is None and {total for _, total in downloading} == {None, pulled}
    done = [d for d, _ in downloading]
    assert done == sorted(done) and done[-1] == pulled
    # The bar does not sit at 100 % while layers are still being extracted: extraction has its own figures, and
    # what was extracted during the download already counts.
    done = [d for d, _ in extracting]
    assert 0 < done[0] < pulled and done == sorted(done) and done[-1] == pulled
    assert {total for _, total in extracting} == {pulled}

    lines = progress.lines  # the clock stands still: the note, one line per phase (with its figures), the final line
    assert lines[0] == f"vllm: pulling image {REF}"
    assert lines[1].startswith(f"{LABEL}  downloading  ")
    assert re.match(rf"{re.escape(LABEL)}  extracting  +\d+\.\d%  .*/{re.escape(human_bytes(pulled))}", lines[-2])
    assert percent(lines[-2]) < 100.0
    assert re.fullmatch(rf"{re.escape(LABEL)}: pulled {re.escape(human_bytes(pulled))} in \d+(?:s|m\d\ds|h\d\dm) "
                        rf"\(4 layers; 1 already present\)", lines[-1]), lines


def test_all_layers_already_present(engine, client_of):
    standin = engine(present={layer for layer, _ in LAYERS})
    output = io.StringIO()
    tally = docker_runtime.pull_image(client_of(standin), REF, Progress(output))
    assert tally.layers == {} and len(tally.present) == len(LAYERS)
    assert re.fullmatch(rf"{re.escape(LABEL)}: pulled 0 B in \d+(?:s|m\d\ds|h\d\dm) \(0 layers; 5 already present\)",
                        output.getvalue().splitlines()[-1])


def test_pull_through_the_plugin(engine, vllm_plugin, make_session, hub):
    """`jarvis pull` of a vLLM model on the docker runtime: the missing image is pulled first, with its progress;
    once it is there, the next pull leaves it alone."""
    standin = engine()
    output = io.StringIO()
    config = {"engines": {"vllm": {"runtime": "docker", "docker_host": standin.docker_host, "image": REPO_NAME,
                                   "tag": TAG}}}
    session = make_session(config, progress=Progress(output))
    model = session.resolve(f"vllm:{TINY_MODEL}")
    assert session.pull(model).present
    assert REF in standin.pulled
    assert re.search(rf"^{re.escape(LABEL)}: pulled {re.escape(human_bytes(sum(s for _, s in LAYERS)))} in \d+(?:s|m\d\ds|h\d\dm) "
                     rf"\(5 layers\)$", output.getvalue(), re.M), output.getvalue()
    pulls = [r for r in standin.requests if r[1] == "/images/create"]
    assert len(pulls) == 1
    assert session.pull(model).present
    assert [r for r in standin.requests if r[1] == "/images/create"] == pulls


# --- failures --------------------------------------------------------------------------------------------------------


def _pull_fails(standin: EngineStandin, client_of, ref: str = REF) -> tuple[str, list[str]]:
    output = io.StringIO()
    with pytest.raises(EngineError) as info:
        docker_runtime.pull_image(client_of(standin), ref, Progress(output))
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message, output.getvalue().splitlines()


RESUME = (f"Docker keeps the layers it finished, so running again (or `docker pull {REF}`) downloads only the "
          f"rest.")


def test_an_error_event_mid_download_breaks_off_and_docker_resumes(engine, client_of):
    standin = engine(fault=("error", 30, "read tcp 172.17.0.2:53604->104.16.100.207:443: read: connection reset "
                                         "by peer"))
    message, lines = _pull_fails(standin, client_of)
    assert message == (f"Pulling image {REF} broke off: read tcp 172.17.0.2:53604->104.16.100.207:443: read: "
                       f"connection reset by peer. {RESUME}")
    assert lines[-1].startswith(f"{LABEL}: pull broke off after ")
    finished = set(standin.present)
    assert finished and REF not in standin.pulled  # some layers made it, the image did not

    output = io.StringIO()  # as the message says: a new pull skips what Docker kept
    tally = docker_runtime.pull_image(client_of(standin), REF, Progress(output))
    assert tally.present == finished and set(tally.layers) == {layer for layer, _ in LAYERS} - finished
    assert output.getvalue().splitlines()[-1].endswith(
        f"({len(LAYERS) - len(finished)} layers; {len(finished)} already present)")


def test_an_error_event_before_any_layer_is_a_failure_with_the_fix(engine, client_of):
    standin = engine(fault=("error", 1, "no matching manifest for linux/arm64/v8 in the manifest list entries"))
    message, lines = _pull_fails(standin, client_of)
    assert message.startswith(f"Pulling image {REF} failed: no matching manifest for linux/arm64/v8 in the manifest "
                              f"list entries. Check the image name and tag (engines.vllm.image / tag)")
    assert lines[-1] == f"{LABEL}: pull failed"


def test_an_unknown_tag_is_refused_before_the_stream(engine, client_of):
    message, lines = _pull_fails(engine(), client_of, f"{REPO_NAME}:nope")
    assert message.startswith(f"Pulling image {REPO_NAME}:nope failed: manifest for {REPO_NAME}:nope not found: "
                              f"manifest unknown")
    assert "engines.vllm.image / tag" in message
    assert lines[-1] == f"vllm: image {REPO_NAME}:nope: pull failed"


def test_a_dropped_connection_breaks_off(engine, client_of):
    message, lines = _pull_fails(engine(fault=("die", 30)), client_of)
    assert message.startswith(f"Pulling image {REF} broke off: the connection to Docker was lost (")
    assert message.endswith(RESUME)
    assert lines[-1].startswith(f"{LABEL}: pull broke off after ")


def test_a_stream_cut_short_without_its_status_breaks_off(engine, client_of):
    standin = engine(fault=("cut", 30))
    message, lines = _pull_fails(standin, client_of)
    assert message == f"Pulling image {REF} broke off: Docker's answer ended before the pull was complete. {RESUME}"
    assert ("GET", f"/images/{REF}/json", {}) in standin.requests  # it asked Docker before saying so


def test_ctrl_c_during_a_pull_ends_the_display_with_the_way_on(engine, client_of):
    class Interrupted(Progress):  # Ctrl-C arrives while the figures are being reported
        def task(self, description: str, total: int | None = None, unit: str = "B") -> Any:
            task = super().task(description, total, unit)
            update, calls = task.update, []

            def interrupted(completed: int, total: int | None = None) -> None:
                calls.append(completed)
                if len(calls) == 5:
                    raise KeyboardInterrupt
                update(completed, total)

            task.update = interrupted  # type: ignore[method-assign]
            return task

    output = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        docker_runtime.pull_image(client_of(engine()), REF, Interrupted(output))
    assert output.getvalue().splitlines()[-1] == f"{LABEL}: pull stopped; {RESUME[:-1]}"
