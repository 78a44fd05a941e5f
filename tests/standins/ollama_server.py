"""A protocol-faithful Ollama stand-in: a real HTTP server on 127.0.0.1 (engines.md section 1).

Standard library only (``http.server.ThreadingHTTPServer``, HTTP/1.1, chunked NDJSON streams), so it
also runs as a separate process under any Python >= 3.8.

Python::

    from tests.standins.ollama_server import OllamaStandin
    with OllamaStandin(models=["qwen2.5:0.5b", {"name": "llava:7b", "vision": True}],
                       pullable=["smollm2:135m"], load_seconds=0.2, token_delay=0.01) as ol:
        httpx.post(ol.url + "/api/chat", json={...})
        ol.emissions[-1].chunk_times        # perf_counter_ns() just before each chunk was written

Command line (a separate process; prints ``Listening on HOST:PORT`` to stderr)::

    python -m tests.standins.ollama_server --host 127.0.0.1 --port 0 --models a,b --config cfg.json

The fake ``ollama`` executable (``tests/standins/bin/ollama serve``) runs :func:`serve_main`, which takes
its settings from ``OLLAMA_HOST``, ``OLLAMA_MODELS``, ``OLLAMA_KEEP_ALIVE``, ... and the JSON file named
by ``JARVIS_STANDIN_OLLAMA_CONFIG``.

Timing model of a chat/generate request (all durations in the final chunk are measured on this
server's ``perf_counter_ns`` clock): [wait for the model to load: ``load_seconds`` when not loaded] ->
[wait for a free slot, ``num_parallel`` per model] -> [prompt eval: ``prompt_eval_delay`` +
``prompt_token_delay`` x evaluated prompt tokens] -> one chunk every ``token_delay`` x ``chunk_tokens``.
The HTTP status line and headers leave together with the first chunk, as with the real server.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import datetime as _dt
import errno
import hashlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, IO, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

try:
    from . import ollama_models as _om
except ImportError:  # imported as a top-level module (script directory on sys.path)
    import ollama_models as _om  # type: ignore[no-redef]

ModelSpec = _om.ModelSpec

__all__ = ["OllamaStandin", "Fault", "RequestRecord", "ModelSpec", "parse_keep_alive", "tokenize",
           "answer_for", "serve_main", "main", "BIN_OLLAMA", "DEFAULT_VERSION"]

DEFAULT_VERSION = "0.12.3"
BIN_OLLAMA = Path(__file__).resolve().parent / "bin" / "ollama"
FOREVER_NS = 2**63 - 1  # Go's math.MaxInt64 duration, used for negative keep_alive
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            500: "Internal Server Error", 503: "Service Unavailable"}
BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"
MID_STREAM_ERROR = "an error was encountered while running the model: unexpected EOF"
DIGEST_MISMATCH = "digest mismatch, file must be downloaded again"  # the real server's errDigestMismatch


# --------------------------------------------------------------------------- small helpers

class _BadRequest(Exception):
    """Answer ``{"error": message}`` with this status (400 unless told) before anything is streamed."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def go_json(obj: Any) -> str:
    """Compact JSON the way Go's encoding/json writes it (UTF-8, ``<``, ``>``, ``&`` escaped)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def rfc3339(epoch_ns: Optional[int] = None, utc: bool = False) -> str:
    """Go's RFC3339Nano: ``2026-03-02T10:15:04.123456789+01:00`` (``Z`` for UTC, zeros trimmed)."""
    epoch_ns = time.time_ns() if epoch_ns is None else epoch_ns
    secs, frac = divmod(epoch_ns, 1_000_000_000)
    tm = time.gmtime(secs) if utc else time.localtime(secs)
    off = 0 if utc else (tm.tm_gmtoff or 0)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", tm)
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    if off == 0:
        return text + "Z"
    sign = "+" if off > 0 else "-"
    hh, mm = divmod(abs(off) // 60, 60)
    return f"{text}{sign}{hh:02d}:{mm:02d}"


def _dt_ns(value: _dt.datetime) -> int:
    return int(value.timestamp() * 1e9)


def _far_future_rfc3339() -> str:
    # time.localtime() cannot always reach year 2318; compute the wall time with datetime instead
    when = _dt.datetime.now().astimezone() + _dt.timedelta(microseconds=FOREVER_NS // 1000)
    text = when.isoformat(timespec="microseconds")
    return re.sub(r"\+00:00$", "Z", text)


def _go_duration(ns: int) -> str:
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:g}µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:g}ms"
    return f"{ns / 1e9:g}s"


_DURATION_RE = re.compile(r"^([-+]?)((?:(?:\d+\.?\d*|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+)$")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
            "m": 60_000_000_000, "h": 3_600_000_000_000}


def parse_keep_alive(value: Any, default: Optional[float] = 300.0) -> Optional[float]:
    """A ``keep_alive`` value -> seconds (float), or None for "never unload".

    Same rules as Ollama's ``api.Duration``: a number is whole seconds (truncated, so 0.5 means 0),
    a string is a Go duration (``"5m"``, ``"1h30m"``, ``"0s"``); anything negative means forever;
    JSON null / absent means ``default``. Bad strings raise ValueError with Go's wording.
    """
    if value is None:
        return default
    if isinstance(value, bool):
        raise ValueError("json: cannot unmarshal bool into Go struct field .keep_alive of type api.Duration")
    if isinstance(value, (int, float)):
        return None if value < 0 else float(int(value))
    if not isinstance(value, str):
        raise ValueError(f"json: cannot unmarshal {type(value).__name__} into Go struct field .keep_alive")
    text = value.strip()
    if text in ("0", "+0", "-0"):
        return 0.0
    m = _DURATION_RE.match(text)
    if not m:
        if re.fullmatch(r"[-+]?\d+(\.\d+)?", text):
            raise ValueError(f'time: missing unit in duration "{value}"')
        raise ValueError(f'time: invalid duration "{value}"')
    total = 0.0
    for num, unit in re.findall(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)", m.group(2)):
        total += float(num) * _UNIT_NS[unit]
    if m.group(1) == "-" and total > 0:
        return None
    return total / 1e9


_TOKEN_RE = re.compile(r"<\|[^|>\s]{1,24}\|>|<img#\d+>|\s?[A-Za-z]+|\s?\d|\s?[^\sA-Za-z\d]|\s+")


def tokenize(text: str) -> List[str]:
    """Split ``text`` into token-like pieces (" capital", " of", "2", "."); ``"".join`` gives it back."""
    return _TOKEN_RE.findall(text or "")


CANNED_ANSWERS: List[Tuple[str, str]] = [
    (r"capital of france", "The capital of France is Paris."),
    (r"\b2\s*\+\s*2\b", "2 + 2 = 4."),
    (r"capital of japan", "The capital of Japan is Tokyo."),
    (r"capital of germany", "The capital of Germany is Berlin."),
    (r"capital of italy", "The capital of Italy is Rome."),
    (r"days (?:are )?in a week", "There are 7 days in a week."),
    (r"boil", "Water boils at 100 degrees Celsius at sea level."),
    (r"^\W*(?:hi|hello|hey)\b", "Hello! How can I help you today?"),
]


def _describe_image(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return f"a {w}x{h} PNG image"
    if data[:3] == b"\xff\xd8\xff":
        return "a JPEG image"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "a GIF image"
    return f"an image of {len(data)} bytes"


def answer_for(prompt: str, model: str = "", images: Sequence[bytes] = (),
               answers: Optional[Mapping[str, str]] = None) -> str:
    """The deterministic reply of the stand-in to ``prompt``.

    Order: ``answers`` (case-insensitive substring -> reply), images ("The image is a 1x1 PNG
    image."), the canned table (capital of France/Japan/Germany/Italy, 2+2, days in a week, boiling
    water, greetings), "count to N" (``1, 2, ..., N.``), otherwise
    ``Stand-in reply from <model>: you said "<first 60 characters>".``
    """
    text = prompt or ""
    low = text.lower()
    for key, reply in (answers or {}).items():
        if key.lower() in low:
            return reply
    if images:
        descs = [_describe_image(img) for img in images]
        if len(descs) == 1:
            return f"The image is {descs[0]}."
        return f"I see {len(descs)} images. " + " ".join(f"Image {i + 1} is {d}." for i, d in enumerate(descs))
    for pattern, reply in CANNED_ANSWERS:
        if re.search(pattern, low):
            return reply
    m = re.search(r"count (?:from 1 )?(?:up )?to (\d+)", low)
    if m:
        n = max(1, min(int(m.group(1)), 10000))
        return ", ".join(str(i) for i in range(1, n + 1)) + "."
    snippet = " ".join(text.split())[:60]
    return f'Stand-in reply from {model or "the model"}: you said "{snippet}".'


def _decode_image(value: Any) -> bytes:
    """Base64 as Go's encoding/json decodes []byte (standard alphabet, padding required);
    what does not decode is a 400, as in the real server (e.g. a ``data:`` URL prefix)."""
    if not isinstance(value, str):
        raise _BadRequest("json: cannot unmarshal into Go struct field of type api.ImageData")
    for i, ch in enumerate(value):
        if not (ch.isascii() and (ch.isalnum() or ch in "+/=")):
            raise _BadRequest(f"illegal base64 data at input byte {i}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        at = len(value.rstrip("=")) if len(value) % 4 else max(0, len(value) - 4)
        raise _BadRequest(f"illegal base64 data at input byte {at}") from None


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- faults and records

@dataclasses.dataclass
class Fault:
    """An injected failure, matched against each request (first match with ``times`` left wins).

    kind:
      ``error``      an ``{"error": message}`` NDJSON line after ``after_chunks`` chunks, then the stream
                     ends normally (the status is already 200). ``after_chunks=0`` means before the first
                     chunk, which the real server answers with HTTP 500 and a JSON body. A
                     ``stream:false`` request gets 500 ``{"error": message}``.
      ``die``        close the connection abruptly after ``after_chunks`` chunks (no final chunk,
                     no terminating zero-length chunk).
      ``crash``      like ``die``, and the whole server stops listening (in ``bin/ollama serve`` the
                     process exits at once with status 2, leaving its runners orphaned).
      ``hang``       stop sending after ``after_chunks`` chunks and keep the connection open for
                     ``seconds`` (None: until the server stops), then close it.
      ``status``     answer HTTP ``status`` with ``{"error": message}`` before anything is streamed
                     (e.g. 503 queue full).
      ``load_error`` loading the model fails: HTTP 500 ``{"error": message}``, the model stays unloaded.
      ``corrupt``    (pull) every layer arrives, then the check after ``verifying sha256 digest`` fails as
                     the real server's ``verifyBlob`` does: ``{"error": "digest mismatch, file must be
                     downloaded again: want sha256:..., got sha256:..."}`` ends the stream (HTTP 200); the
                     bad blob is deleted and no manifest is written, so the model stays absent and the next
                     pull downloads that layer again. ``stream:false``: HTTP 500 with that error.
    endpoint: ``chat``, ``generate``, ``pull`` or None (any of them). model: a name or None.
    times: how many requests it hits (None: every matching request).
    """

    kind: str = "error"
    after_chunks: int = 0
    message: Optional[str] = None
    endpoint: Optional[str] = None
    model: Optional[str] = None
    times: Optional[int] = 1
    status: int = 500
    seconds: Optional[float] = None

    KINDS = ("error", "die", "crash", "hang", "status", "load_error", "corrupt")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; use one of {', '.join(self.KINDS)}")
        if self.message is None:
            self.message = {"status": BUSY_MESSAGE if self.status == 503 else "stand-in injected error",
                            "load_error": "llama runner process has terminated: error loading model: "
                                          "unable to allocate CUDA0 buffer",
                            "corrupt": DIGEST_MISMATCH,
                            }.get(self.kind, MID_STREAM_ERROR)

    @classmethod
    def from_any(cls, value: Union["Fault", Mapping[str, Any]]) -> "Fault":
        return value if isinstance(value, Fault) else cls(**dict(value))

    def matches(self, endpoint: str, model: str) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.endpoint and self.endpoint != endpoint:
            return False
        if self.kind == "corrupt" and endpoint != "pull":
            return False
        return not self.model or _om.canonical_name(self.model) == _om.canonical_name(model or "x")


@dataclasses.dataclass
class RequestRecord:
    """What the stand-in saw and wrote for one request (all times ``time.perf_counter_ns()``).

    ``chunk_times[i]`` is taken just before the bytes of ``chunks[i]`` were handed to the socket (for a
    non-streamed reply, one entry: the whole response), so a client's arrival stamp is always later.
    """

    id: int
    method: str
    path: str
    t_received: int
    model: Optional[str] = None
    status: Optional[int] = None
    chunk_times: List[int] = dataclasses.field(default_factory=list)
    chunks: List[Any] = dataclasses.field(default_factory=list)
    t_end: Optional[int] = None
    t_slot: Optional[int] = None
    """When a chat/generate request got one of its model's ``num_parallel`` slots (it queued before)."""
    t_slot_released: Optional[int] = None
    """When it gave the slot back: [t_slot, t_slot_released] is the time it was being served."""
    outcome: str = "pending"   # ok, error, died, hung, client_gone, crashed
    fault: Optional[str] = None

    def as_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


class _Stop(Exception):
    """The exchange is over (fault executed, server stopping)."""


@dataclasses.dataclass(eq=False)
class _Loaded:
    spec: ModelSpec
    num_ctx: int
    state: str = "loading"          # loading, ready, failed
    error: Optional[str] = None
    ready: threading.Event = dataclasses.field(default_factory=threading.Event)
    active: int = 0
    slots: Optional[threading.Semaphore] = None
    deadline: Optional[float] = None  # time.monotonic() when it expires; None = never
    expires_at: str = ""
    last_used: float = 0.0
    runner: Optional[subprocess.Popen] = None
    runner_port: Optional[int] = None
    cache: List[str] = dataclasses.field(default_factory=list)


# --------------------------------------------------------------------------- HTTP plumbing

class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    standin: "OllamaStandin"

    def handle_error(self, request: Any, client_address: Any) -> None:  # keep test output clean
        self.standin._log_line(f"level=WARN msg=\"request handler error\" error=\"{sys.exc_info()[1]!r}\"")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.standin._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.standin._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _go(self) -> None:
        self.server.standin._dispatch(self)

    do_GET = do_POST = do_DELETE = do_HEAD = do_PUT = _go


class _Exchange:
    """One request/response: writes raw HTTP/1.1 (fixed length or chunked NDJSON) and stamps it."""

    def __init__(self, standin: "OllamaStandin", handler: _Handler, record: RequestRecord):
        self.standin = standin
        self.h = handler
        self.rec = record
        self.head_only = handler.command == "HEAD"
        self.started = False
        self.finished = False
        self.emitted = 0
        self.fault: Optional[Fault] = None

    def _send(self, data: bytes, obj: Any) -> None:
        t = time.perf_counter_ns()
        self.rec.chunk_times.append(t)
        self.rec.chunks.append(obj)
        self.h.connection.sendall(data)

    def _head(self, status: int, ctype: str, length: Optional[int]) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", f"Content-Type: {ctype}",
                 f"Date: {formatdate(usegmt=True)}"]
        lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
        if self.h.close_connection:
            lines.append("Connection: close")
        self.rec.status = status
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def reply(self, status: int, body: bytes, ctype: str, obj: Any = None) -> None:
        data = self._head(status, ctype, len(body)) + (b"" if self.head_only else body)
        self.started = True
        self._send(data, obj if obj is not None else body.decode("utf-8", "replace"))
        self.finished = True

    def json(self, status: int, obj: Any) -> None:
        self.reply(status, go_json(obj).encode(), "application/json; charset=utf-8", obj)

    def error(self, status: int, message: str) -> None:
        self.json(status, {"error": message})

    def final(self, status: int, obj: Any) -> None:
        """The single object of a non-streamed reply (faults apply to it)."""
        self._fault_point(force=True)
        self.json(status, obj)

    def line(self, obj: Any) -> None:
        """One NDJSON line of a stream (headers go out with the first one)."""
        self._fault_point()
        self._write_line(obj)

    def _write_line(self, obj: Any) -> None:
        data = go_json(obj).encode() + b"\n"
        chunk = b"%x\r\n%s\r\n" % (len(data), data)
        if not self.started:
            chunk = self._head(200, "application/x-ndjson", None) + chunk
            self.started = True
        self._send(chunk, obj)
        self.emitted += 1

    def stream_error(self, message: str) -> None:
        """An error at this point of a stream: HTTP 500 before the first byte, else a final line."""
        if not self.started:
            self.error(500, message)
            return
        self._write_line({"error": message})
        self.end()

    def end(self) -> None:
        if self.started and not self.finished:
            self.finished = True
            self.h.connection.sendall(b"0\r\n\r\n")

    def die(self) -> None:
        self.finished = True
        self.h.close_connection = True
        try:
            self.h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _fault_point(self, force: bool = False) -> None:
        f = self.fault
        if f is None or (not force and self.emitted < f.after_chunks):
            return
        self.fault = None
        self.rec.fault = f.kind
        self.standin._log_line(f'level=WARN source=standin msg="injected fault" kind={f.kind} '
                               f'after_chunks={self.emitted}')
        if f.kind == "error":
            self.rec.outcome = "error"
            self.stream_error(f.message or MID_STREAM_ERROR)
        elif f.kind == "hang":
            self.rec.outcome = "hung"
            self.standin._stop_event.wait(f.seconds)
            self.die()
        else:
            self.rec.outcome = "died" if f.kind == "die" else "crashed"
            self.die()
            if f.kind == "crash":
                self.standin._crash()
        raise _Stop()


def _read_body(handler: _Handler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length > 0 else b""


def _parse_json_body(raw: bytes) -> Dict[str, Any]:
    if not raw.strip():
        raise _BadRequest("missing request body")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        ch = raw.decode("utf-8", "replace").strip()[:1]
        raise _BadRequest(f"invalid character '{ch}' looking for beginning of value"
                          if ch and ch not in "{[" else f"unexpected end of JSON input ({exc.msg})") from None
    if not isinstance(body, dict):
        raise _BadRequest(f"json: cannot unmarshal {type(body).__name__} into Go value of type api.Request")
    return body


# --------------------------------------------------------------------------- the stand-in

class OllamaStandin:
    """An Ollama server stand-in on a real socket. See the module docstring; arguments:

    models: names, dicts (``{"name": "llava:7b", "vision": True, "size": ..., "load_seconds": 2}``) or
        :class:`ModelSpec` s available from the start (in memory).
    pullable: models ``/api/pull`` can fetch (models already present can always be re-pulled).
    models_dir: an Ollama models folder (manifests/ + blobs/): its models are listed too, pulls are
        written there and deletes remove them (like ``OLLAMA_MODELS``).
    host, port: where to listen; port 0 picks a free port (see ``.port`` / ``.url`` after ``start()``).
    load_seconds: time to load a model that is not loaded (per-model ``load_seconds`` overrides).
    token_delay: seconds per generated token; chunk_tokens: tokens per streamed chunk.
    prompt_eval_delay: fixed seconds of prompt evaluation; prompt_token_delay: plus this per evaluated
        prompt token. prompt_cache: a loaded model remembers the last prompt, so a repeated prefix is
        not evaluated again (prompt_eval_count drops, like the real server).
    keep_alive: default idle time before unload (seconds, Go duration string, negative: forever).
    num_parallel: requests served at once per model (others wait); max_loaded_models: least recently
        used idle models are unloaded beyond this; max_queue: waiting requests before 503.
    context_length: default runtime context (``num_ctx``; a request with another ``options.num_ctx``
        reloads an idle model). vram_fraction: share of a loaded model's size reported as ``size_vram``.
    pull_seconds, pull_steps: duration and progress lines of the big layer of a pull.
    unload_delay: seconds between an unload request (or expiry) and the model leaving ``/api/ps``.
    faults: :class:`Fault` s or dicts (also ``add_fault()`` at run time).
    answers: extra canned replies, ``{"substring": "reply"}``, checked before the built-in table.
    version: reported by ``/api/version``.
    spawn_runners: start a child "runner" process per loaded model (``bin/ollama runner --model <blob>
        --port <n>``), ended on unload. runner_survives_parent: runners do not exit when the server
        process dies (default: they notice their stdin closing and exit).
    log: a text stream for Ollama-style log lines (``[GIN] ...``); None: silent.
    """

    def __init__(self, models: Iterable[Union[str, Mapping[str, Any], ModelSpec]] = ("qwen2.5:0.5b",), *,
                 pullable: Iterable[Union[str, Mapping[str, Any], ModelSpec]] = (),
                 models_dir: Optional[Union[str, Path]] = None,
                 host: str = "127.0.0.1", port: int = 0,
                 load_seconds: float = 0.05, token_delay: float = 0.005, chunk_tokens: int = 1,
                 prompt_eval_delay: float = 0.005, prompt_token_delay: float = 0.0, prompt_cache: bool = True,
                 keep_alive: Union[str, float, int, None] = "5m", num_parallel: int = 1,
                 max_loaded_models: int = 3, max_queue: int = 512, context_length: int = 4096,
                 vram_fraction: float = 1.0, pull_seconds: float = 0.2, pull_steps: int = 5,
                 unload_delay: float = 0.0,
                 faults: Iterable[Union[Fault, Mapping[str, Any]]] = (),
                 answers: Optional[Mapping[str, str]] = None, version: str = DEFAULT_VERSION,
                 spawn_runners: bool = False, runner_survives_parent: bool = False,
                 log: Optional[IO[str]] = None, on_crash: Optional[Callable[[], None]] = None):
        self._models: Dict[str, ModelSpec] = {}
        for m in models:
            spec = ModelSpec.from_any(m)
            self._models[spec.name] = spec
        self._pullable: Dict[str, ModelSpec] = {}
        for m in pullable:
            spec = ModelSpec.from_any(m)
            self._pullable[spec.name] = spec
        self.models_dir = Path(models_dir) if models_dir else None
        self.host = host
        self.port = int(port)
        self.load_seconds = float(load_seconds)
        self.token_delay = float(token_delay)
        self.chunk_tokens = max(1, int(chunk_tokens))
        self.prompt_eval_delay = float(prompt_eval_delay)
        self.prompt_token_delay = float(prompt_token_delay)
        self.prompt_cache = bool(prompt_cache)
        self.keep_alive = parse_keep_alive(keep_alive, 300.0)
        self.num_parallel = max(1, int(num_parallel))
        self.max_loaded_models = int(max_loaded_models) or 3
        self.max_queue = int(max_queue)
        self.context_length = int(context_length)
        self.vram_fraction = float(vram_fraction)
        self.pull_seconds = float(pull_seconds)
        self.pull_steps = max(1, int(pull_steps))
        self.unload_delay = float(unload_delay)
        self.faults: List[Fault] = [Fault.from_any(f) for f in faults]
        self.answers = dict(answers or {})
        self.version = version
        self.spawn_runners = spawn_runners
        self.runner_survives_parent = runner_survives_parent
        self.log = log
        self.on_crash = on_crash

        self._lock = threading.RLock()
        self._loaded: Dict[str, _Loaded] = {}
        self._records: List[RequestRecord] = []
        self._next_id = 0
        self._pending = 0
        self._conns: set = set()
        self._handlers = 0
        self._stop_event = threading.Event()
        self._httpd: Optional[_HTTPServer] = None
        self._threads: List[threading.Thread] = []
        self.crashed = threading.Event()

    # ----------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        host = self.host if self.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> "OllamaStandin":
        """Bind and serve in background threads (OSError if the port is taken)."""
        if self._httpd is not None:
            return self
        self._stop_event.clear()
        self.crashed.clear()
        server_cls = _HTTPServer
        if ":" in self.host:
            server_cls = type("_HTTPServer6", (_HTTPServer,), {"address_family": socket.AF_INET6})
        httpd = server_cls((self.host, self.port), _Handler)
        httpd.standin = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._threads = [threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                          name=f"ollama-standin-{self.port}", daemon=True),
                         threading.Thread(target=self._reaper, name="ollama-standin-reaper", daemon=True)]
        for t in self._threads:
            t.start()
        self._log_line(f'level=INFO source=routes.go:1331 msg="Listening on {self.host or "[::]"}:{self.port} '
                       f'(version {self.version})"')
        return self

    def stop(self) -> None:
        """Stop listening, cut open connections, unload every model (ending its runner)."""
        httpd = self._httpd
        if httpd is None:
            return
        self._log_line('level=INFO source=routes.go:1372 msg="shutting down"')
        self._stop_event.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=5)
        deadline = time.monotonic() + 5
        while self._handlers and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._lock:
            entries = list(self._loaded.values())
            self._loaded.clear()
        for entry in entries:
            self._end_runner(entry)
        self._httpd = None

    def __enter__(self) -> "OllamaStandin":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _crash(self) -> None:
        self.crashed.set()
        if self.on_crash is not None:
            self.on_crash()
        threading.Thread(target=self.stop, daemon=True).start()

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
                self._handlers += 1
            else:
                self._conns.discard(conn)
                self._handlers -= 1

    # ----------------------------------------------------------------- public state
    @property
    def emissions(self) -> List[RequestRecord]:
        """Every request seen so far, oldest first (see :class:`RequestRecord`)."""
        with self._lock:
            return list(self._records)

    def clear_emissions(self) -> None:
        with self._lock:
            self._records.clear()

    @property
    def loaded(self) -> List[str]:
        """Names of the models loaded now (what ``/api/ps`` lists)."""
        with self._lock:
            return sorted(n for n, e in self._loaded.items() if e.state == "ready")

    def runner_pids(self) -> Dict[str, int]:
        """model name -> pid of its runner process (spawn_runners only)."""
        with self._lock:
            return {n: e.runner.pid for n, e in self._loaded.items() if e.runner is not None}

    @property
    def models(self) -> List[str]:
        """Names of the models on "disk" (what ``/api/tags`` lists)."""
        return [s.name for s in self._all_models()]

    def add_model(self, model: Union[str, Mapping[str, Any], ModelSpec]) -> ModelSpec:
        spec = ModelSpec.from_any(model)
        with self._lock:
            self._models[spec.name] = spec
        return spec

    def add_fault(self, kind: str = "error", **fields: Any) -> Fault:
        """Inject a fault at run time, e.g. ``add_fault("die", after_chunks=3, endpoint="chat")``."""
        fault = Fault(kind=kind, **fields)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def unload_all(self) -> None:
        with self._lock:
            entries = [e for e in self._loaded.values() if e.active == 0]
            for e in entries:
                self._loaded.pop(e.spec.name, None)
        for e in entries:
            self._end_runner(e)

    # ----------------------------------------------------------------- catalogue
    def _find(self, name: str) -> Optional[ModelSpec]:
        if not name or not _om.is_valid_name(name):
            return None
        canon = _om.canonical_name(name)
        with self._lock:
            spec = self._models.get(canon)
        if spec is None and self.models_dir is not None:
            spec = _om.read_model(self.models_dir, canon)
        return spec

    def _all_models(self) -> List[ModelSpec]:
        with self._lock:
            found = dict(self._models)
        if self.models_dir is not None:
            for spec in _om.list_models(self.models_dir):
                if spec.name not in found and not self._config_blob_missing(spec):
                    found[spec.name] = spec
        return sorted(found.values(), key=lambda s: _dt_ns(s.modified_at), reverse=True)

    @staticmethod
    def _config_blob_missing(spec: ModelSpec) -> bool:
        # the real /api/tags skips a manifest whose config blob cannot be opened
        if not spec.manifest_file or not spec.missing_blobs:
            return False
        try:
            config = json.loads(Path(spec.manifest_file).read_bytes()).get("config") or {}
        except (OSError, ValueError):
            return True
        return config.get("digest") in spec.missing_blobs

    def _take_fault(self, endpoint: str, model: str) -> Optional[Fault]:
        with self._lock:
            for fault in self.faults:
                if fault.matches(endpoint, model):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    # ----------------------------------------------------------------- logging
    def _log_line(self, text: str) -> None:
        if self.log is None:
            return
        now = _dt.datetime.now().astimezone()
        stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        line = text if text.startswith("[GIN]") else f"time={stamp} {text}"
        try:
            self.log.write(line + "\n")
            self.log.flush()
        except (OSError, ValueError):
            pass

    # ----------------------------------------------------------------- dispatch
    def _dispatch(self, handler: _Handler) -> None:
        path = handler.path.split("?", 1)[0]
        with self._lock:
            self._next_id += 1
            rec = RequestRecord(id=self._next_id, method=handler.command, path=path,
                                t_received=time.perf_counter_ns())
            self._records.append(rec)
        ex = _Exchange(self, handler, rec)
        try:
            route = self._route(handler.command, path)
            if route is None:
                ex.reply(404, b"404 page not found", "text/plain")
            else:
                route(ex)
            if rec.outcome == "pending":
                rec.outcome = "ok" if (rec.status or 500) < 400 else "error"
        except _Stop:
            if rec.outcome == "pending":
                rec.outcome = "stopped"
        except _BadRequest as exc:
            rec.outcome = "error"
            if not ex.started:
                ex.error(exc.status, str(exc))
            else:
                ex.stream_error(str(exc))
        except OSError:
            rec.outcome = "client_gone" if not self._stop_event.is_set() else "stopped"
            handler.close_connection = True
        except Exception as exc:  # a bug in the stand-in: answer like a Go panic recovery would
            rec.outcome = "error"
            self._log_line(f'level=ERROR msg="stand-in bug" error="{exc!r}"\n{traceback.format_exc()}')
            try:
                if not ex.started:
                    ex.error(500, f"stand-in internal error: {exc!r}")
                else:
                    ex.stream_error(f"stand-in internal error: {exc!r}")
            except OSError:
                handler.close_connection = True
        finally:
            try:
                if ex.started and not ex.finished:
                    ex.end()
            except OSError:
                handler.close_connection = True
            if not ex.started and not ex.finished:
                handler.close_connection = True
            rec.t_end = time.perf_counter_ns()
            ms = rec.t_end - rec.t_received
            client = handler.client_address[0] if handler.client_address else "-"
            self._log_line(f'[GIN] {time.strftime("%Y/%m/%d - %H:%M:%S")} | {rec.status or 0:3d} | '
                           f'{_go_duration(ms):>13} | {client:>15} | {handler.command:<7} "{path}"')

    def _route(self, method: str, path: str) -> Optional[Callable[[_Exchange], None]]:
        getters = {"/": self._h_root, "/api/version": self._h_version, "/api/tags": self._h_tags,
                   "/api/ps": self._h_ps, "/_standin/emissions": self._h_emissions}
        posts = {"/api/chat": self._h_chat, "/api/generate": self._h_generate, "/api/show": self._h_show,
                 "/api/pull": self._h_pull, "/api/copy": self._h_copy, "/_standin/faults": self._h_add_fault}
        deletes = {"/api/delete": self._h_delete, "/_standin/faults": self._h_clear_faults}
        if method in ("GET", "HEAD") and path in getters:
            if method == "HEAD" and path not in ("/", "/api/version", "/api/tags"):
                return None
            return getters[path]
        if method == "POST":
            return posts.get(path)
        if method == "DELETE":
            return deletes.get(path)
        return None

    @staticmethod
    def _body(ex: _Exchange) -> Dict[str, Any]:
        return _parse_json_body(_read_body(ex.h))

    # ----------------------------------------------------------------- read-only endpoints
    def _h_root(self, ex: _Exchange) -> None:
        ex.reply(200, b"Ollama is running", "text/plain; charset=utf-8")

    def _h_version(self, ex: _Exchange) -> None:
        ex.json(200, {"version": self.version})

    def _h_tags(self, ex: _Exchange) -> None:
        ex.json(200, {"models": [{"name": s.name, "model": s.name, "modified_at": rfc3339(_dt_ns(s.modified_at)),
                                  "size": s.size, "digest": s.digest, "details": s.details}
                                 for s in self._all_models()]})

    def _loaded_size(self, entry: _Loaded) -> int:
        kv_per_token = max(2048, entry.spec.parameter_count // 20000)
        return entry.spec.size + entry.num_ctx * kv_per_token

    def _h_ps(self, ex: _Exchange) -> None:
        with self._lock:
            entries = [e for e in self._loaded.values() if e.state == "ready"]
        entries.sort(key=lambda e: (e.deadline is None, e.deadline or 0), reverse=True)
        models = []
        for e in entries:
            size = self._loaded_size(e)
            models.append({"name": e.spec.name, "model": e.spec.name, "size": size, "digest": e.spec.digest,
                           "details": e.spec.details, "expires_at": e.expires_at,
                           "size_vram": int(size * self.vram_fraction), "context_length": e.num_ctx})
        ex.json(200, {"models": models})

    def _h_show(self, ex: _Exchange) -> None:
        body = self._body(ex)
        name = body.get("model") or body.get("name") or ""
        ex.rec.model = name
        if not name:
            raise _BadRequest("model is required")
        spec = self._find(name)
        if spec is None:
            ex.error(404, f"model '{name}' not found")
            return
        ex.json(200, self._show_payload(spec, bool(body.get("verbose"))))

    def _show_payload(self, spec: ModelSpec, verbose: bool) -> Dict[str, Any]:
        arch = spec.family
        template = _om._template_for(spec)
        params_lines = []
        for key, value in spec.params.items():
            for v in value if isinstance(value, list) else [value]:
                params_lines.append(f"{key:<30} {json.dumps(v) if isinstance(v, str) else v}")
        modelfile = (f'# Modelfile generated by "ollama show"\n# To build a new Modelfile based on this, '
                     f'replace FROM with:\n# FROM {spec.name}\n\nFROM {spec.weights_file or spec.name}\n'
                     f'TEMPLATE """{template}"""\n'
                     + "".join(f"PARAMETER {line.split()[0]} {' '.join(line.split()[1:])}\n" for line in params_lines)
                     + f'LICENSE """{spec.license}"""\n')
        tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "!", "\""] if verbose else None
        info: Dict[str, Any] = {
            "general.architecture": arch, "general.basename": _om.split_name(spec.name)[2],
            "general.file_type": _om.QUANT_FILE_TYPE.get(spec.quantization_level, 15),
            "general.parameter_count": spec.parameter_count, "general.quantization_version": 2,
            f"{arch}.attention.head_count": 14, f"{arch}.block_count": 24,
            f"{arch}.context_length": spec.context_length, f"{arch}.embedding_length": 896,
            "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": [3, 3, 3, 1, 1] if verbose else None,
            "tokenizer.ggml.merges": ["Ġ Ġ"] if verbose else None,
        }
        payload: Dict[str, Any] = {"license": spec.license, "modelfile": modelfile,
                                   "parameters": "\n".join(params_lines), "template": template,
                                   "details": spec.details, "model_info": info,
                                   "capabilities": list(spec.capabilities),
                                   "modified_at": rfc3339(_dt_ns(spec.modified_at))}
        if spec.vision:
            payload["projector_info"] = {"clip.has_vision_encoder": True, "clip.vision.image_size": 336,
                                         "clip.vision.patch_size": 14, "general.architecture": "clip"}
        return payload

    # ----------------------------------------------------------------- model management
    def _h_delete(self, ex: _Exchange) -> None:
        body = self._body(ex)
        name = body.get("model") or body.get("name") or ""
        ex.rec.model = name
        if not name:
            raise _BadRequest("model is required")
        canon = _om.canonical_name(name) if _om.is_valid_name(name) else name
        removed = False
        with self._lock:
            removed = self._models.pop(canon, None) is not None
        if self.models_dir is not None and _om.is_valid_name(name):
            removed = _om.remove_model(self.models_dir, canon) or removed
        if not removed:
            ex.error(404, f"model '{name}' not found")
            return
        ex.reply(200, b"", "text/plain; charset=utf-8")

    def _h_copy(self, ex: _Exchange) -> None:
        body = self._body(ex)
        src, dst = body.get("source") or "", body.get("destination") or ""
        if not src or not dst or not _om.is_valid_name(dst):
            raise _BadRequest("source and destination are required")
        spec = self._find(src)
        if spec is None:
            ex.error(404, f"model '{src}' not found")
            return
        new = dataclasses.replace(spec, name=_om.canonical_name(dst), modified_at=_dt.datetime.now().astimezone())
        if spec.manifest_file and self.models_dir is not None:
            target = _om.manifest_path(self.models_dir, dst)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(Path(spec.manifest_file).read_bytes())
        else:
            with self._lock:
                self._models[new.name] = new
        ex.reply(200, b"", "text/plain; charset=utf-8")

    def _h_pull(self, ex: _Exchange) -> None:
        body = self._body(ex)
        name = body.get("model") or body.get("name") or ""
        ex.rec.model = name
        stream = body.get("stream") is not False
        if not _om.is_valid_name(name):
            raise _BadRequest("invalid model name")
        canon = _om.canonical_name(name)
        with self._lock:
            spec = self._pullable.get(canon)
        present = self._find(name)
        if spec is None and present is not None:
            spec = ModelSpec.from_any(present, manifest_file=None, weights_file=None, missing_blobs=[])
        fault = self._take_fault("pull", canon)
        if fault is not None and fault.kind == "status":
            ex.error(fault.status, fault.message or "")
            return
        corrupt = fault is not None and fault.kind == "corrupt"
        ex.fault = fault if fault is not None and fault.kind not in ("load_error", "corrupt") else None
        send = ex.line if stream else (lambda obj: None)
        step = self.pull_seconds / (self.pull_steps + 2)
        send({"status": "pulling manifest"})
        self._sleep(step)
        if spec is None:
            message = "pull model manifest: file does not exist"
            if stream:
                ex.stream_error(message)
            else:
                ex.fault = None
                ex.error(500, message)
            return
        # As the real PullModel: each layer (the config last) in turn, "pulling <12 hex>" with total and, once
        # bytes arrived, completed; a blob already on disk (a re-pull of the same model) is one complete line and
        # skips the check that follows.
        cached = present is not None and present.digest == spec.digest
        fetched = []
        for media, digest, size in spec.layer_plan():
            status = f"pulling {digest[7:19]}"
            if size > 1_000_000 and not cached:
                send({"status": status, "digest": digest, "total": size})
                for k in range(1, self.pull_steps + 1):
                    self._sleep(step)
                    send({"status": status, "digest": digest, "total": size, "completed": size * k // self.pull_steps})
            else:
                send({"status": status, "digest": digest, "total": size, "completed": size})
            if not cached:
                fetched.append(digest)
        send({"status": "verifying sha256 digest"})
        self._sleep(step / 2)
        if corrupt and fetched:
            # verifyBlob of the first downloaded layer fails; the server deletes that blob and ends the pull
            assert fault is not None
            ex.rec.fault, ex.rec.outcome = fault.kind, "error"
            got = "sha256:" + hashlib.sha256(f"corrupted:{fetched[0]}".encode()).hexdigest()
            message = f"{fault.message or DIGEST_MISMATCH}: want {fetched[0]}, got {got}"
            if stream:
                ex.stream_error(message)
            else:
                ex.error(500, message)
            return
        send({"status": "writing manifest"})
        replaced = present is not None and present.digest != spec.digest
        self._install(spec)
        if replaced:
            send({"status": "removing unused layers"})
        if stream:
            ex.line({"status": "success"})
        else:
            ex.final(200, {"status": "success"})

    def _install(self, spec: ModelSpec) -> None:
        spec = dataclasses.replace(spec, modified_at=_dt.datetime.now().astimezone())
        if self.models_dir is not None:
            _om.write_model(self.models_dir, spec, size=spec.size - (_om.PROJECTOR_SIZE if spec.vision else 0))
        else:
            with self._lock:
                self._models[spec.name] = spec

    # ----------------------------------------------------------------- scheduling: load, slots, expiry
    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self._stop_event.wait(seconds):
            raise _Stop()

    def _sleep_until(self, t_ns: int) -> None:
        remaining = (t_ns - time.perf_counter_ns()) / 1e9
        self._sleep(remaining)

    def _set_expiry(self, entry: _Loaded, keep_alive: Optional[float]) -> None:
        if keep_alive is None:
            entry.deadline = None
            entry.expires_at = _far_future_rfc3339()
        else:
            entry.deadline = time.monotonic() + keep_alive
            entry.expires_at = rfc3339(time.time_ns() + int(keep_alive * 1e9))

    def _acquire(self, spec: ModelSpec, num_ctx: int, keep_alive: Optional[float],
                 load_fault: Optional[Fault]) -> Tuple[_Loaded, int]:
        t0 = time.perf_counter_ns()
        with self._lock:
            if self._pending >= self.max_queue:
                raise _BadRequest(BUSY_MESSAGE, 503)
            self._pending += 1
        to_end: List[_Loaded] = []
        try:
            while True:
                with self._lock:
                    entry = self._loaded.get(spec.name)
                    if entry is not None and entry.state == "ready" and entry.active == 0 and (
                            entry.num_ctx != num_ctx or (entry.runner is not None and entry.runner.poll() is not None)):
                        self._loaded.pop(spec.name)
                        to_end.append(entry)
                        entry = None
                    loader = entry is None
                    if loader:
                        entry = _Loaded(spec=spec, num_ctx=num_ctx, slots=threading.Semaphore(self.num_parallel))
                        to_end += self._evict_for_locked(entry)
                        self._loaded[spec.name] = entry
                        self._set_expiry(entry, keep_alive)
                    entry.active += 1
                for old in to_end:
                    self._end_runner(old)
                to_end = []
                if loader:
                    self._load(entry, load_fault)
                else:
                    while not entry.ready.wait(0.05):
                        if self._stop_event.is_set():
                            self._release_active(entry)
                            raise _Stop()
                if entry.state == "ready":
                    break
                self._release_active(entry)
                raise _BadRequest(entry.error or "llama runner process has terminated", 500)
            load_ns = time.perf_counter_ns() - t0
            assert entry.slots is not None
            while not entry.slots.acquire(timeout=0.05):
                if self._stop_event.is_set():
                    self._release_active(entry)
                    raise _Stop()
            return entry, load_ns
        finally:
            with self._lock:
                self._pending -= 1

    def _release_active(self, entry: _Loaded) -> None:
        with self._lock:
            entry.active -= 1

    def _evict_for_locked(self, new: _Loaded) -> List[_Loaded]:
        evicted = []
        others = [e for e in self._loaded.values() if e is not new]
        while len(others) >= self.max_loaded_models:
            idle = [e for e in others if e.active == 0 and e.state == "ready"]
            if not idle:
                break
            victim = min(idle, key=lambda e: e.last_used)
            others.remove(victim)
            self._loaded.pop(victim.spec.name, None)
            evicted.append(victim)
        return evicted

    def _load(self, entry: _Loaded, fault: Optional[Fault]) -> None:
        spec = entry.spec
        t0 = time.monotonic()
        seconds = spec.load_seconds if spec.load_seconds is not None else self.load_seconds
        error = None
        try:
            if spec.missing_blobs:
                self._sleep(min(seconds, 0.05))
                missing = _om.blob_path(self.models_dir or ".", spec.missing_blobs[0])
                error = f"open {missing}: no such file or directory"
            else:
                if self.spawn_runners:
                    self._start_runner(entry)
                self._sleep(seconds)
                if entry.runner is not None:
                    error = self._wait_runner(entry)
                if error is None and fault is not None:
                    error = fault.message
        except _Stop:
            error = "server shutting down"
            raise
        finally:
            with self._lock:
                if error is None:
                    entry.state = "ready"
                    entry.last_used = time.monotonic()
                else:
                    entry.state, entry.error = "failed", error
                    if self._loaded.get(spec.name) is entry:
                        self._loaded.pop(spec.name)
            if error is not None:
                self._end_runner(entry)
                self._log_line(f'level=ERROR source=sched.go:489 msg="error loading llama server" error="{error}"')
            else:
                self._log_line(f'level=INFO source=server.go:1289 msg="llama runner started in '
                               f'{time.monotonic() - t0:.2f} seconds"')
            entry.ready.set()

    def _release(self, entry: _Loaded, keep_alive: Optional[float], prompt_tokens: Optional[List[str]]) -> None:
        assert entry.slots is not None
        entry.slots.release()
        end_now = False
        with self._lock:
            entry.active -= 1
            entry.last_used = time.monotonic()
            if prompt_tokens is not None and self.prompt_cache:
                entry.cache = prompt_tokens
            self._set_expiry(entry, keep_alive)
            if keep_alive == 0 and entry.active == 0 and self.unload_delay <= 0:
                end_now = self._loaded.get(entry.spec.name) is entry
                if end_now:
                    self._loaded.pop(entry.spec.name)
        if end_now:
            self._end_runner(entry)

    def _unload_request(self, name: str) -> None:
        """keep_alive 0 with nothing to generate: expire the model now (when idle)."""
        end = None
        with self._lock:
            entry = self._loaded.get(name)
            if entry is None:
                return
            entry.deadline = time.monotonic() + self.unload_delay
            entry.expires_at = rfc3339()
            if entry.active == 0 and entry.state == "ready" and self.unload_delay <= 0:
                end = self._loaded.pop(name)
        if end is not None:
            self._end_runner(end)

    def _reaper(self) -> None:
        while not self._stop_event.wait(0.05):
            now = time.monotonic()
            ended = []
            with self._lock:
                for name, e in list(self._loaded.items()):
                    if e.state != "ready" or e.active:
                        continue
                    runner_gone = e.runner is not None and e.runner.poll() is not None
                    if runner_gone or (e.deadline is not None and now >= e.deadline):
                        ended.append(self._loaded.pop(name))
            for e in ended:
                self._end_runner(e)

    def _start_runner(self, entry: _Loaded) -> None:
        port = _free_port()
        blob = entry.spec.weights_file or str(_om.blob_path(self.models_dir or Path.home() / ".ollama/models",
                                                            entry.spec.layer_plan()[0][1]))
        cmd = [sys.executable, str(BIN_OLLAMA), "runner", "--model", blob, "--port", str(port)]
        env = dict(os.environ)
        env["JARVIS_STANDIN_RUNNER_WATCH_STDIN"] = "0" if self.runner_survives_parent else "1"
        entry.runner = subprocess.Popen(cmd, stdin=subprocess.DEVNULL if self.runner_survives_parent else subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        entry.runner_port = port
        self._log_line(f'level=INFO source=server.go:399 msg="starting runner" cmd="{" ".join(cmd)}"')

    def _wait_runner(self, entry: _Loaded) -> Optional[str]:
        assert entry.runner is not None and entry.runner_port is not None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            code = entry.runner.poll()
            if code is not None:
                return f"llama runner process has terminated: exit status {code}"
            try:
                with socket.create_connection(("127.0.0.1", entry.runner_port), timeout=0.5):
                    return None
            except OSError:
                self._sleep(0.02)
        return "timed out waiting for llama runner to start"

    def _end_runner(self, entry: _Loaded) -> None:
        proc = entry.runner
        if proc is None:
            return
        entry.runner = None
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._log_line(f'level=INFO source=sched.go:576 msg="runner stopped" model={entry.spec.name} pid={proc.pid}')

    # ----------------------------------------------------------------- chat / generate
    def _h_chat(self, ex: _Exchange) -> None:
        self._completion(ex, "chat")

    def _h_generate(self, ex: _Exchange) -> None:
        self._completion(ex, "generate")

    def _completion(self, ex: _Exchange, kind: str) -> None:
        body = self._body(ex)
        name = body.get("model") or ""
        ex.rec.model = name
        keep_alive = parse_keep_alive_bad_request(body.get("keep_alive"), self.keep_alive)
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise _BadRequest("json: cannot unmarshal options")
        if kind == "chat":
            messages = body.get("messages") or []
            if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                raise _BadRequest("json: cannot unmarshal messages into Go struct field ChatRequest.messages")
            images = [_decode_image(i) for m in messages for i in (m.get("images") or [])]
            last_user = next((m for m in reversed(messages) if m.get("role") == "user"), messages[-1] if messages else {})
            user_text = str(last_user.get("content") or "")
            user_images = [_decode_image(i) for i in (last_user.get("images") or [])]
            load_only = not messages
        else:
            user_text = str(body.get("prompt") or "")
            images = user_images = [_decode_image(i) for i in (body.get("images") or [])]
            load_only = user_text == "" and not images
        if not name:
            raise _BadRequest("model is required")
        spec = self._find(name)
        if spec is None:
            ex.error(404, f"model '{name}' not found")
            return
        if "completion" not in spec.capabilities:
            raise _BadRequest(f'"{name}" does not support {kind}')
        if images and not spec.vision:
            raise _BadRequest(f'"{name}" does not support images')
        think = body.get("think")
        if think and "thinking" not in spec.capabilities:
            raise _BadRequest(f'"{name}" does not support thinking')
        if body.get("tools") and "tools" not in spec.capabilities:
            raise _BadRequest(f'"{name}" does not support tools')
        stream = body.get("stream") is not False
        fault = self._take_fault(kind, spec.name)
        if fault is not None and fault.kind == "status":
            ex.error(fault.status, fault.message or "")
            return

        created = lambda: rfc3339(utc=True)  # noqa: E731
        empty = ({"message": {"role": "assistant", "content": ""}} if kind == "chat" else {"response": ""})
        if load_only and keep_alive == 0:
            self._unload_request(spec.name)
            ex.json(200, {"model": name, "created_at": created(), **empty, "done": True, "done_reason": "unload"})
            return

        # the runtime context: as requested, else the server default capped by the model's trained context
        num_ctx = int(options.get("num_ctx") or 0) or min(self.context_length, spec.context_length)
        load_fault = fault if fault is not None and fault.kind == "load_error" else None
        with self._lock:
            already = spec.name in self._loaded
        if already:
            load_fault = None
        entry, load_ns = self._acquire(spec, num_ctx, keep_alive, load_fault)
        ex.rec.t_slot = time.perf_counter_ns()
        prompt_tokens: Optional[List[str]] = None
        try:
            if load_only:
                ex.json(200, {"model": name, "created_at": created(), **empty, "done": True, "done_reason": "load"})
                return
            ex.fault = fault if fault is not None and fault.kind != "load_error" else None
            prompt_tokens = self._prompt_tokens(kind, body)
            self._generate(ex, kind, body, spec, entry, name, stream, options, think, user_text, user_images,
                           prompt_tokens, load_ns)
        finally:
            ex.rec.t_slot_released = time.perf_counter_ns()
            self._release(entry, keep_alive, prompt_tokens)

    @staticmethod
    def _prompt_tokens(kind: str, body: Mapping[str, Any]) -> List[str]:
        parts: List[str] = []
        n_img = 0

        def add(role: str, content: str, images: Sequence[Any]) -> None:
            nonlocal n_img
            parts.append(f"<|im_start|>{role}\n")
            for _ in images:  # an image costs 576 prompt tokens, as with a 336px CLIP projector
                parts.append(f"<img#{n_img}>" + "<|vision_pad|>" * 575)
                n_img += 1
            parts.append(f"{content}<|im_end|>\n")

        if kind == "chat":
            for m in body.get("messages") or []:
                add(str(m.get("role") or "user"), str(m.get("content") or ""), m.get("images") or [])
        else:
            if body.get("system"):
                add("system", str(body["system"]), [])
            add("user", str(body.get("prompt") or ""), body.get("images") or [])
        parts.append("<|im_start|>assistant\n")
        return tokenize("".join(parts))

    def _generate(self, ex: _Exchange, kind: str, body: Mapping[str, Any], spec: ModelSpec, entry: _Loaded,
                  name: str, stream: bool, options: Mapping[str, Any], think: Any, user_text: str,
                  user_images: Sequence[bytes], prompt_tokens: List[str], load_ns: int) -> None:
        # prompt evaluation (with the loaded model's prompt cache)
        cached = 0
        if self.prompt_cache:
            for a, b in zip(entry.cache, prompt_tokens):
                if a != b:
                    break
                cached += 1
        evaluated = max(1, len(prompt_tokens) - cached)
        t_p0 = time.perf_counter_ns()
        self._sleep(self.prompt_eval_delay + evaluated * self.prompt_token_delay)
        t_p1 = time.perf_counter_ns()

        # the answer, as a list of (field, piece) tokens
        content = answer_for(user_text, spec.name, user_images, self.answers)
        if body.get("format"):
            content = json.dumps({"answer": content}, ensure_ascii=False)
        stops = options.get("stop") or []
        done_reason = "stop"
        for s in [stops] if isinstance(stops, str) else stops:
            if s and s in content:
                content = content[: content.index(s)]
        pieces: List[Tuple[str, str]] = []
        if think and "thinking" in spec.capabilities:
            snippet = " ".join(user_text.split())[:40]
            pieces += [("thinking", p) for p in tokenize(f'The user asks: "{snippet}". I will answer briefly.')]
        pieces += [("content", p) for p in tokenize(content)]
        limit = int(options.get("num_predict") or 0)
        if limit > 0 and len(pieces) > limit:
            pieces, done_reason = pieces[:limit], "length"

        # decode, one chunk per `chunk_tokens` tokens of the same field
        groups: List[Tuple[str, str, int]] = []
        for field, piece in pieces:
            if groups and groups[-1][0] == field and groups[-1][2] < self.chunk_tokens:
                groups[-1] = (field, groups[-1][1] + piece, groups[-1][2] + 1)
            else:
                groups.append((field, piece, 1))
        delay_ns = int(self.token_delay * 1e9)
        text = {"content": "", "thinking": ""}
        produced = 0
        for field, piece, count in groups:
            produced += count
            self._sleep_until(t_p1 + produced * delay_ns)
            if entry.runner is not None and entry.runner.poll() is not None:
                ex.stream_error(MID_STREAM_ERROR) if stream else ex.error(500, MID_STREAM_ERROR)
                ex.rec.outcome = "error"
                return
            text[field] += piece
            if stream:
                ex.line(self._chunk(kind, name, {field: piece}))
        t_done = time.perf_counter_ns()
        final: Dict[str, Any] = self._chunk(kind, name, text if not stream else {"content": ""})
        final.update(done=True, done_reason=done_reason)
        metrics = {"total_duration": time.perf_counter_ns() - ex.rec.t_received, "load_duration": load_ns,
                   "prompt_eval_count": evaluated, "prompt_eval_duration": t_p1 - t_p0, "eval_count": len(pieces),
                   "eval_duration": max(1, t_done - t_p1)}
        final.update({k: v for k, v in metrics.items() if v})  # Go's omitempty: zero values are absent
        if kind == "generate":
            final["context"] = [int(hashlib.md5(t.encode()).hexdigest()[:5], 16) % 151_000
                                for t in prompt_tokens + [p for _, p in pieces]]
        if stream:
            ex.line(final)
        else:
            ex.final(200, final)

    @staticmethod
    def _chunk(kind: str, name: str, fields: Mapping[str, str]) -> Dict[str, Any]:
        created = rfc3339(utc=True)
        if kind == "chat":
            message = {"role": "assistant", "content": fields.get("content", "")}
            if fields.get("thinking"):
                message["thinking"] = fields["thinking"]
            return {"model": name, "created_at": created, "message": message, "done": False}
        out = {"model": name, "created_at": created, "response": fields.get("content", "")}
        if fields.get("thinking"):
            out["thinking"] = fields["thinking"]
        out["done"] = False
        return out

    # ----------------------------------------------------------------- stand-in control (not Ollama API)
    def _h_emissions(self, ex: _Exchange) -> None:
        ex.json(200, {"requests": [r.as_dict() for r in self.emissions if r is not ex.rec]})

    def _h_add_fault(self, ex: _Exchange) -> None:
        body = self._body(ex)
        try:
            fault = Fault.from_any(body)
        except (TypeError, ValueError) as exc:
            raise _BadRequest(str(exc)) from None
        with self._lock:
            self.faults.append(fault)
        ex.json(200, dataclasses.asdict(fault))

    def _h_clear_faults(self, ex: _Exchange) -> None:
        self.clear_faults()
        ex.json(200, {"faults": []})


def parse_keep_alive_bad_request(value: Any, default: Optional[float]) -> Optional[float]:
    try:
        return parse_keep_alive(value, default)
    except ValueError as exc:
        raise _BadRequest(str(exc)) from None


# --------------------------------------------------------------------------- configuration and processes

CONFIG_KEYS = {"models", "pullable", "models_dir", "host", "port", "load_seconds", "token_delay", "chunk_tokens",
               "prompt_eval_delay", "prompt_token_delay", "prompt_cache", "keep_alive", "num_parallel",
               "max_loaded_models", "max_queue", "context_length", "vram_fraction", "pull_seconds", "pull_steps",
               "unload_delay", "faults", "answers", "version", "spawn_runners", "runner_survives_parent"}
PROCESS_KEYS = {"fail_on_start", "ready_delay", "port_file", "log"}


def load_config(path: Optional[Union[str, Path]]) -> Dict[str, Any]:
    """Read a JSON config file; unknown keys are an error (a typo should not pass silently)."""
    if not path:
        return {}
    cfg = json.loads(Path(path).read_text("utf-8"))
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: the config must be a JSON object")
    unknown = set(cfg) - CONFIG_KEYS - PROCESS_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown config keys {sorted(unknown)}; known: {sorted(CONFIG_KEYS | PROCESS_KEYS)}")
    return cfg


def parse_ollama_host(value: Optional[str]) -> Tuple[str, int]:
    """``OLLAMA_HOST`` -> (bind host, port), with the rules of Ollama's envconfig.Host()."""
    default_port = "11434"
    text = (value or "").strip()
    scheme, sep, hostport = text.partition("://")
    if not sep:
        scheme, hostport = "http", text
    elif scheme == "http":
        default_port = "80"
    elif scheme == "https":
        default_port = "443"
    hostport = hostport.split("/", 1)[0]
    m = re.fullmatch(r"\[?([^\[\]]*?)\]?:(\d*)", hostport) if hostport.count(":") == 1 or hostport.startswith("[") else None
    if m:
        host, port = m.group(1), m.group(2)
    else:
        host, port = (hostport.strip("[]") or "127.0.0.1"), default_port
    try:
        port_n = int(port)
        if not 0 <= port_n <= 65535:
            raise ValueError
    except ValueError:
        port_n = int(default_port)
    return host, port_n


def _install_stop_signals(event: threading.Event) -> None:
    def handler(signum: int, frame: Any) -> None:
        event.set()
    for name in ("SIGTERM", "SIGINT", "SIGBREAK", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            try:
                signal.signal(sig, handler)
            except (ValueError, OSError):
                pass


def run_process(kwargs: Dict[str, Any], process: Mapping[str, Any], bind_desc: str) -> int:
    """Serve in this process until SIGTERM/SIGINT (or a ``crash`` fault). Returns the exit status."""
    log = sys.stderr if process.get("log", True) else None
    if process.get("fail_on_start"):
        msg = process["fail_on_start"]
        print(msg if isinstance(msg, str) else f"Error: listen tcp {bind_desc}: bind: address already in use",
              file=sys.stderr, flush=True)
        return 1
    if process.get("ready_delay"):
        time.sleep(float(process["ready_delay"]))
    stop = threading.Event()
    _install_stop_signals(stop)
    standin = OllamaStandin(**kwargs, log=log, on_crash=lambda: os._exit(2))
    try:
        standin.start()
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1)):
            print(f"Error: listen tcp {bind_desc}: bind: address already in use", file=sys.stderr, flush=True)
        else:
            print(f"Error: listen tcp {bind_desc}: {exc.strerror or exc}", file=sys.stderr, flush=True)
        return 1
    if process.get("port_file"):
        tmp = Path(str(process["port_file"]) + ".tmp")
        tmp.write_text(str(standin.port))
        os.replace(tmp, process["port_file"])
    try:
        while not stop.wait(0.1):
            pass
    finally:
        standin.stop()
    return 0


def serve_main(env: Optional[Mapping[str, str]] = None) -> int:
    """``ollama serve``: settings from OLLAMA_* variables and ``JARVIS_STANDIN_OLLAMA_CONFIG``."""
    env = os.environ if env is None else env
    try:
        cfg = load_config(env.get("JARVIS_STANDIN_OLLAMA_CONFIG"))
    except (OSError, ValueError) as exc:
        print(f"Error: JARVIS_STANDIN_OLLAMA_CONFIG: {exc}", file=sys.stderr)
        return 2
    host, port = parse_ollama_host(env.get("OLLAMA_HOST"))
    kwargs = {k: v for k, v in cfg.items() if k in CONFIG_KEYS}
    kwargs.setdefault("models", [])
    kwargs["host"], kwargs["port"] = host, port
    kwargs["models_dir"] = env.get("OLLAMA_MODELS") or str(Path.home() / ".ollama" / "models")
    kwargs.setdefault("spawn_runners", True)
    for var, key, conv in (("OLLAMA_KEEP_ALIVE", "keep_alive", lambda v: float(v) if re.fullmatch(r"-?\d+(\.\d+)?", v) else v),
                           ("OLLAMA_NUM_PARALLEL", "num_parallel", int),
                           ("OLLAMA_MAX_LOADED_MODELS", "max_loaded_models", int),
                           ("OLLAMA_MAX_QUEUE", "max_queue", int),
                           ("OLLAMA_CONTEXT_LENGTH", "context_length", int)):
        if env.get(var):
            try:
                kwargs[key] = conv(env[var])
            except ValueError:
                pass
    process = {k: v for k, v in cfg.items() if k in PROCESS_KEYS}
    if env.get("JARVIS_STANDIN_OLLAMA_PORT_FILE"):
        process["port_file"] = env["JARVIS_STANDIN_OLLAMA_PORT_FILE"]
    return run_process(kwargs, process, f"{host}:{port}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m tests.standins.ollama_server``: run the stand-in as a separate process."""
    p = argparse.ArgumentParser(prog="python -m tests.standins.ollama_server", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 0: a free one, printed on stderr)")
    p.add_argument("--models", default=None, help="comma-separated model names available from the start")
    p.add_argument("--vision-models", default=None, help="comma-separated names of vision models")
    p.add_argument("--pullable", default=None, help="comma-separated names /api/pull can fetch")
    p.add_argument("--models-dir", default=None, help="an Ollama models folder (manifests/, blobs/)")
    p.add_argument("--config", default=None, help="JSON file with OllamaStandin arguments (and fail_on_start, "
                                                  "ready_delay, port_file)")
    p.add_argument("--load-seconds", type=float, default=None)
    p.add_argument("--token-delay", type=float, default=None)
    p.add_argument("--prompt-eval-delay", type=float, default=None)
    p.add_argument("--keep-alive", default=None)
    p.add_argument("--runners", action="store_true", default=None, help="spawn a runner process per loaded model")
    p.add_argument("--port-file", default=None, help="write the bound port to this file once listening")
    p.add_argument("--quiet", action="store_true", help="no log lines on stderr")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except (OSError, ValueError) as exc:
        p.error(str(exc))
    kwargs = {k: v for k, v in cfg.items() if k in CONFIG_KEYS}
    process = {k: v for k, v in cfg.items() if k in PROCESS_KEYS}
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    if args.models is not None or args.vision_models is not None:
        kwargs["models"] = split(args.models or "") + [{"name": n, "vision": True} for n in split(args.vision_models or "")]
    for flag, key in (("pullable", "pullable"),):
        if getattr(args, flag) is not None:
            kwargs[key] = split(getattr(args, flag))
    for flag, key in (("host", "host"), ("port", "port"), ("models_dir", "models_dir"),
                      ("load_seconds", "load_seconds"), ("token_delay", "token_delay"),
                      ("prompt_eval_delay", "prompt_eval_delay"), ("keep_alive", "keep_alive"),
                      ("runners", "spawn_runners")):
        if getattr(args, flag) is not None:
            kwargs[key] = getattr(args, flag)
    if args.port_file:
        process["port_file"] = args.port_file
    if args.quiet:
        process["log"] = False
    kwargs.setdefault("host", "127.0.0.1")
    kwargs.setdefault("port", 0)
    return run_process(kwargs, process, f"{kwargs['host']}:{kwargs['port']}")


if __name__ == "__main__":
    sys.exit(main())
