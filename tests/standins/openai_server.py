"""A protocol-faithful stand-in for vLLM's OpenAI-compatible server (standard library only).

It is a real HTTP/1.1 server (``http.server.ThreadingHTTPServer``) that speaks the wire protocol
described in docs ``engines.md`` section 2: ``/health``, ``/ping``, ``/version``, ``/v1/models``,
``/metrics``, ``POST /v1/chat/completions`` and ``POST /v1/completions`` with Server-Sent Events
(``Transfer-Encoding: chunked`` like uvicorn), the usage chunk, both error body shapes, errors
after streaming began, an engine that dies mid-stream, ``--api-key`` and delayed readiness.
A "llama.cpp flavour" reproduces the ways ``llama_cpp.server`` differs.

In-process use (tests and benchmarks; the emission stamps share the client's clock)::

    with OpenAIStandin(models=["qwen-7b"], token_delay=0.01) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x")
        ...
        server.emissions[0]   # [("received", t_ns), ("headers", t_ns), ("role", t_ns), ...]

Command line (also the entrypoint of the Docker image that plays ``vllm/vllm-openai``)::

    python -m tests.standins.openai_server MODEL --host 127.0.0.1 --port 8000 \\
        --served-model-name NAME [--max-model-len N] [--ready-after S] [--exit-after-requests N] ...

Nothing here may import anything outside the Python standard library: the file is copied alone
into a minimal Debian image.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import email.utils
import json
import math
import os
import re
import shlex
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["OpenAIStandin", "tokenize", "answer_for", "main"]

DEFAULT_VERSION = "0.11.0"
DEFAULT_MAX_MODEL_LEN = 32768

_perf_ns = time.perf_counter_ns
_TOKEN_RE = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")
_DATA_URL_RE = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[^,;]*)*;base64,(.*)$", re.S)

# vLLM's TTFT / e2e histogram buckets (seconds).
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
_E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)

_FIXED_ANSWERS = (
    (("capital of france",), "The capital of France is Paris."),
    (("capital of japan",), "The capital of Japan is Tokyo."),
    (("capital of germany",), "The capital of Germany is Berlin."),
    (("2+2", "2 + 2"), "2 + 2 = 4."),
    (("days in a week", "days are in a week", "days does a week"), "There are 7 days in a week."),
    (("boiling point",), "Water boils at 100 degrees Celsius at sea level."),
)


def tokenize(text: str) -> list[str]:
    """Split text into token-like pieces whose concatenation is exactly ``text``."""
    return _TOKEN_RE.findall(text)


def answer_for(prompt: str, images: int = 0) -> str:
    """The deterministic answer the stand-in gives to a prompt."""
    low = " ".join(prompt.lower().split())
    for needles, answer in _FIXED_ANSWERS:
        if any(n in low for n in needles):
            return answer
    if images:
        return f"The picture is a small test image ({images} image{'s' if images > 1 else ''} received)."
    h = zlib.crc32(prompt.encode("utf-8"))
    return f"The stand-in engine answers prompt {h:08x} with this deterministic sentence."


class _Abort(Exception):
    """The stream cannot go on (client gone or server stopping)."""


class _HTTPError(Exception):
    def __init__(self, status: int, body: object, reason: str = ""):
        super().__init__(status)
        self.status = status
        self.body = body
        self.reason = reason


class _Metrics:
    """Prometheus counters and histograms consistent with the requests served."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.prompt_tokens: dict[str, int] = {}
        self.generation_tokens: dict[str, int] = {}
        self.success: dict[tuple[str, str], int] = {}
        self.ttft: dict[str, list] = {}
        self.e2e: dict[str, list] = {}
        self.running = 0
        self.waiting = 0

    @staticmethod
    def _observe(store: dict, model: str, buckets: tuple, value: float) -> None:
        h = store.get(model)
        if h is None:
            h = store[model] = [[0] * len(buckets), 0.0, 0]
        for i, b in enumerate(buckets):
            if value <= b:
                h[0][i] += 1
        h[1] += value
        h[2] += 1

    def observe_ttft(self, model: str, seconds: float) -> None:
        with self.lock:
            self._observe(self.ttft, model, _TTFT_BUCKETS, seconds)

    def finish(self, model: str, prompt: int, generated: int, reason: str, e2e: float) -> None:
        with self.lock:
            self.prompt_tokens[model] = self.prompt_tokens.get(model, 0) + prompt
            self.generation_tokens[model] = self.generation_tokens.get(model, 0) + generated
            self.success[(model, reason)] = self.success.get((model, reason), 0) + 1
            self._observe(self.e2e, model, _E2E_BUCKETS, e2e)

    def render(self, models: list[str]) -> str:
        out: list[str] = []
        with self.lock:
            names = list(dict.fromkeys(list(models) + list(self.prompt_tokens)))

            def lab(m: str, extra: str = "") -> str:
                return '{engine="0",%smodel_name="%s"}' % (extra, m)

            inf = 'le="+Inf",'

            out += ["# HELP vllm:num_requests_running Number of requests in model execution batches.",
                    "# TYPE vllm:num_requests_running gauge"]
            out += [f"vllm:num_requests_running{lab(m)} {float(self.running)}" for m in names[:1]]
            out += ["# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
                    "# TYPE vllm:num_requests_waiting gauge"]
            out += [f"vllm:num_requests_waiting{lab(m)} {float(self.waiting)}" for m in names[:1]]
            for metric, store, help_ in (
                ("prompt_tokens_total", self.prompt_tokens, "Number of prefill tokens processed."),
                ("generation_tokens_total", self.generation_tokens, "Number of generation tokens processed."),
            ):
                out += [f"# HELP vllm:{metric} {help_}", f"# TYPE vllm:{metric} counter"]
                out += [f"vllm:{metric}{lab(m)} {float(store.get(m, 0))}" for m in names]
            out += ["# HELP vllm:request_success_total Count of successfully processed requests.",
                    "# TYPE vllm:request_success_total counter"]
            for m in names:
                for reason in ("stop", "length", "abort"):
                    n = self.success.get((m, reason), 0)
                    out.append(f'vllm:request_success_total{lab(m, f"finished_reason={json.dumps(reason)},")} {float(n)}')
            for metric, store, buckets, help_ in (
                ("time_to_first_token_seconds", self.ttft, _TTFT_BUCKETS, "Histogram of time to first token in seconds."),
                ("e2e_request_latency_seconds", self.e2e, _E2E_BUCKETS, "Histogram of e2e request latency in seconds."),
            ):
                out += [f"# HELP vllm:{metric} {help_}", f"# TYPE vllm:{metric} histogram"]
                for m in names:
                    counts, total, n = store.get(m, [[0] * len(buckets), 0.0, 0])
                    for b, c in zip(buckets, counts):
                        out.append(f'vllm:{metric}_bucket{lab(m, f"le={json.dumps(str(b))},")} {float(c)}')
                    out.append(f"vllm:{metric}_bucket{lab(m, inf)} {float(n)}")
                    out.append(f"vllm:{metric}_count{lab(m)} {float(n)}")
                    out.append(f"vllm:{metric}_sum{lab(m)} {total}")
        return "\n".join(out) + "\n"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
    standin: "OpenAIStandin"

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup; skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = port


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "uvicorn"
    sys_version = ""
    server: _Server

    # -- connection lifecycle ------------------------------------------------------------
    def setup(self) -> None:
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.server.standin._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        self.server.standin._track(self.connection, False)

    def handle(self) -> None:
        st = self.server.standin
        if not st.ready.is_set():
            if st.ready_mode == "reset":   # Docker's port proxy: accept, then drop the connection
                try:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
                self.close_connection = True
                return
            if st.ready_mode == "hang":    # accept, say nothing until the engine is up
                while not st.ready.wait(0.05):
                    if st._stopping.is_set():
                        return
        try:
            super().handle()
        except (ConnectionError, OSError):
            pass

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        st = self.server.standin
        if st.access_log is not None:
            st.access_log(f'INFO:     {self.client_address[0]}:{self.client_address[1]} - "{self.requestline}" {args[1] if len(args) > 1 else ""}')

    # -- low-level writing ---------------------------------------------------------------
    def _head(self, status: int, ctype: str | None, length: int | None, extra: str = "") -> bytes:
        reason = self.responses.get(status, ("",))[0]
        lines = [f"HTTP/1.1 {status} {reason}", f"date: {email.utils.formatdate(usegmt=True)}",
                 "server: uvicorn"]
        if length is not None:
            lines.append(f"content-length: {length}")
        if ctype:
            lines.append(f"content-type: {ctype}")
        if self.close_connection:
            lines.append("connection: close")
        if extra:
            lines.append(extra)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send_raw(self, status: int, body: bytes, ctype: str | None, rec: dict | None = None,
                  kind: str = "response") -> None:
        data = self._head(status, ctype, len(body)) + body
        if rec is not None:
            rec["status"] = status
            if rec["emissions"] is not None:
                rec["emissions"].append((kind, _perf_ns()))
        self.connection.sendall(data)
        self.log_request(status)

    def _send_json(self, status: int, obj: object, rec: dict | None = None) -> None:
        body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self._send_raw(status, body, "application/json", rec)

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    # -- routing -------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def do_PUT(self) -> None:
        self._route("PUT")

    def _route(self, method: str) -> None:
        st = self.server.standin
        path = self.path.split("?", 1)[0]
        if path.startswith("/v1/") and st.api_key is not None:
            if self.headers.get("authorization", "") != f"Bearer {st.api_key}":
                body = self._read_body() if method in ("POST", "PUT") else b""
                del body
                return self._send_json(401, {"error": "Unauthorized"})
        if path in ("/v1/chat/completions", "/v1/completions"):
            if method != "POST":
                return self._send_json(405, {"detail": "Method Not Allowed"})
            return self._completion(path)
        if method == "POST" and path == "/ping" and st.flavour == "vllm":
            self._read_body()
            return self._health()
        if method != "GET":
            if method in ("POST", "PUT"):
                self._read_body()
            return self._send_json(404, {"detail": "Not Found"})
        if path in ("/health", "/ping"):
            return self._health()
        if path == "/version" and st.flavour == "vllm":
            return self._send_json(200, {"version": st.version})
        if path == "/v1/models":
            return self._send_json(200, st._models_body())
        if path == "/metrics" and st.flavour == "vllm":
            body = st.metrics.render(st.models).encode()
            return self._send_raw(200, body, "text/plain; version=0.0.4; charset=utf-8")
        return self._send_json(404, {"detail": "Not Found"})

    def _health(self) -> None:
        st = self.server.standin
        if not st.health:
            return self._send_json(404, {"detail": "Not Found"})
        if not st.ready.is_set():
            return self._send_json(503, {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}})
        if st.engine_dead:
            return self._send_raw(503, b"", None)
        return self._send_raw(200, b"", None)

    # -- completions ---------------------------------------------------------------------
    def _completion(self, path: str) -> None:
        st = self.server.standin
        raw = self._read_body()
        t0 = _perf_ns()
        rec = st._new_record(path, raw, dict(self.headers.items()), t0)
        try:
            if not st.ready.is_set():   # ready_mode "503": the server answers but the engine is loading
                return self._send_json(503, {"error": {"code": 503, "message": "Loading model",
                                                       "type": "unavailable_error"}}, rec)
            try:
                plan = st._plan(path, raw)
            except _HTTPError as e:
                rec["error"] = e.body
                return self._send_json(e.status, e.body, rec)
            rec.update(model=plan["model"], prompt_tokens=plan["prompt_tokens"],
                       stream=plan["stream"])
            if st.engine_dead:
                body = st._error("EngineCore encountered an issue. See stack trace (above) for the root cause.",
                                 "InternalServerError", 500)
                return self._send_json(500, body, rec)
            slot = st._slots
            if slot is not None:
                with st.metrics.lock:
                    st.metrics.waiting += 1
                slot.acquire()
                with st.metrics.lock:
                    st.metrics.waiting -= 1
                t0 = _perf_ns()
                if rec["emissions"] is not None:
                    rec["emissions"].append(("scheduled", t0))
            try:
                with st.metrics.lock:
                    st.metrics.running += 1
                if plan["stream"]:
                    self._stream(st, rec, plan, t0)
                else:
                    self._complete(st, rec, plan, t0)
            finally:
                with st.metrics.lock:
                    st.metrics.running -= 1
                if slot is not None:
                    slot.release()
        except _Abort:
            self.close_connection = True
        finally:
            st._request_done(rec)

    def _deadlines(self, st: "OpenAIStandin", t0: int, n: int) -> tuple[int, int, int]:
        role_at = t0 + int(max(st.role_delay, 0.0) * 1e9)
        if st.first_token_delay is None:
            first_at = role_at + int(max(st.token_delay, 0.0) * 1e9)
        else:
            first_at = t0 + int(max(st.first_token_delay, 0.0) * 1e9)
        return role_at, max(first_at, role_at), int(max(st.token_delay, 0.0) * 1e9)

    def _sleep_until(self, st: "OpenAIStandin", deadline: int) -> None:
        d = deadline - _perf_ns()
        if d <= 0:
            if st._stopping.is_set():
                raise _Abort
            return
        if d < 50_000_000:
            time.sleep(d / 1e9)
            if st._stopping.is_set():
                raise _Abort
        elif st._stopping.wait(d / 1e9):
            raise _Abort

    def _complete(self, st: "OpenAIStandin", rec: dict, plan: dict, t0: int) -> None:
        tokens = plan["tokens"]
        role_at, first_at, step = self._deadlines(st, t0, len(tokens))
        if st.die_now(rec):
            self._sleep_until(st, first_at)
            body = st._error("EngineCore encountered an issue. See stack trace (above) for the root cause.",
                             "InternalServerError", 500)
            self.close_connection = True
            self._send_json(500, body, rec)
            st._engine_died()
            return
        last_at = first_at + step * max(len(tokens) - 1, 0) if tokens else role_at
        self._sleep_until(st, last_at)
        text = "".join(tokens)
        usage = st._usage(plan["prompt_tokens"], len(tokens))
        now = int(time.time())
        if plan["chat"]:
            body = {"id": plan["id"], "object": "chat.completion", "created": now, "model": plan["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                                         "refusal": None, "tool_calls": []},
                                 "logprobs": None, "finish_reason": plan["finish"], "stop_reason": None}],
                    "usage": usage}
        else:
            body = {"id": plan["id"], "object": "text_completion", "created": now, "model": plan["model"],
                    "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": plan["finish"],
                                 "stop_reason": None}],
                    "usage": usage}
        if tokens:
            st.metrics.observe_ttft(plan["model"], (first_at - t0) / 1e9)
        self._send_json(200, body, rec)
        rec["completion_tokens"] = len(tokens)
        rec["finish_reason"] = plan["finish"]
        st.metrics.finish(plan["model"], plan["prompt_tokens"], len(tokens), plan["finish"],
                          (_perf_ns() - t0) / 1e9)

    def _stream(self, st: "OpenAIStandin", rec: dict, plan: dict, t0: int) -> None:
        conn = self.connection
        sendall = conn.sendall
        ems = rec["emissions"]
        chunked = st.chunked
        if not chunked:
            self.close_connection = True
        llama = st.flavour == "llamacpp"
        tokens: list[str] = plan["tokens"]
        n = len(tokens)
        role_at, first_at, step = self._deadlines(st, t0, n)
        die_after = st.die_after_chunks if st.die_now(rec) else None
        error_after = st.error_after_chunks
        fillers = [(b": ping\n\n", "comment")] * max(st.comments, 0) + [(b"\n", "keepalive")] * max(st.keepalives, 0)
        model_json = json.dumps(plan["model"], ensure_ascii=False)
        created = int(time.time())
        data_chunks = 0
        cont = plan["continuous_usage"]
        prompt_tokens = plan["prompt_tokens"]

        def send(kind: str, data: bytes) -> None:
            if chunked:
                data = b"%x\r\n%s\r\n" % (len(data), data)
            if ems is not None:
                ems.append((kind, _perf_ns()))
            try:
                sendall(data)
            except OSError as e:
                rec["client_gone"] = True
                raise _Abort from e

        def fill(prev_at: int, next_at: int, extra: list | None = None) -> None:
            items = (extra or []) + fillers
            if not items:
                return
            self._sleep_until(st, (prev_at + next_at) // 2)
            for data, kind in items:
                send(kind, data)

        if plan["chat"]:
            head = ('data: {"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s,'
                    '"choices":[{"index":0,' % (plan["id"], created, model_json)).encode()
            role = head + (b'"delta":{"role":"assistant"},"logprobs":null,"finish_reason":null}]}\n\n' if llama
                           else b'"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n')
            tok_a = head + b'"delta":{"content":'
            tok_b = b'},"logprobs":null,"finish_reason":null}]'
            empty = head + b'"delta":{"content":""},"logprobs":null,"finish_reason":null}]'
            fin_delta = b'"delta":{}' if llama else b'"delta":{"content":""}'
            finish = head + fin_delta + b',"logprobs":null,"finish_reason":"%s"}]' % plan["finish"].encode()
        else:
            head = ('data: {"id":"%s","object":"text_completion","created":%d,"model":%s,'
                    '"choices":[{"index":0,' % (plan["id"], created, model_json)).encode()
            role = None
            tok_a = head + b'"text":'
            tok_b = b',"logprobs":null,"finish_reason":null,"stop_reason":null}]'
            empty = head + b'"text":"","logprobs":null,"finish_reason":null,"stop_reason":null}]'
            finish = head + (b'"text":"","logprobs":null,"finish_reason":"%s","stop_reason":null}]'
                             % plan["finish"].encode())

        def tail(done: int) -> bytes:
            if cont:
                u = st._usage(prompt_tokens, done)
                return b',"usage":' + json.dumps(u, separators=(",", ":")).encode() + b"}\n\n"
            return b"}\n\n"

        def mid_stream_checks() -> bool:
            nonlocal data_chunks
            data_chunks += 1
            if die_after is not None and data_chunks >= die_after:
                self._die(st, rec)
                return True
            if error_after is not None and data_chunks >= error_after:
                err = {"error": {"message": st.stream_error_message, "type": "InternalServerError",
                                 "param": None, "code": 500}}
                send("error", b"data: " + json.dumps(err, separators=(",", ":")).encode() + b"\n\n")
                send("done", b"data: [DONE]\n\n")
                if chunked:
                    if ems is not None:
                        ems.append(("end", _perf_ns()))
                    try:
                        sendall(b"0\r\n\r\n")
                    except OSError:
                        pass
                rec["finish_reason"] = "error"
                return True
            return False

        # response head: uvicorn writes it as soon as the StreamingResponse starts
        extra = "transfer-encoding: chunked" if chunked else ""
        send_head = self._head(200, "text/event-stream; charset=utf-8", None, extra)
        if ems is not None:
            ems.append(("headers", _perf_ns()))
        try:
            sendall(send_head)
        except OSError as e:
            raise _Abort from e
        rec["status"] = 200
        self.log_request(200)
        if die_after is not None and die_after <= 0:
            self._die(st, rec)
            return
        prev_at = t0
        if role is not None:
            self._sleep_until(st, role_at)
            send("role", role if not cont else role[:-3] + tail(0))
            prev_at = role_at
            if mid_stream_checks():
                return
        empties = [(empty + tail(0), "empty")] * max(st.empty_chunks, 0)
        cache: dict[str, bytes] = {}
        at = first_at
        observed = False
        for i, tok in enumerate(tokens):
            fill(prev_at, at, empties if i == 0 else None)
            self._sleep_until(st, at)
            tj = cache.get(tok)
            if tj is None:
                tj = cache[tok] = json.dumps(tok, ensure_ascii=False).encode("utf-8")
            send("token" if tok else "empty", tok_a + tj + tok_b + tail(i + 1))
            if not observed and tok:
                observed = True
                st.metrics.observe_ttft(plan["model"], (_perf_ns() - t0) / 1e9)
            prev_at = at
            at += step
            if mid_stream_checks():
                return
        if not tokens:
            fill(prev_at, prev_at, empties)
        send("finish", finish + tail(n))
        rec["completion_tokens"] = n
        rec["finish_reason"] = plan["finish"]
        if plan["include_usage"]:
            u = json.dumps(st._usage(prompt_tokens, n), separators=(",", ":")).encode()
            obj = "chat.completion.chunk" if plan["chat"] else "text_completion"
            send("usage", ('data: {"id":"%s","object":"%s","created":%d,"model":%s,"choices":[],"usage":'
                           % (plan["id"], obj, created, model_json)).encode() + u + b"}\n\n")
        if chunked:
            done = b"data: [DONE]\n\n"
            if ems is not None:
                ems.append(("done", _perf_ns()))
            try:
                sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
            except OSError as e:
                raise _Abort from e
        else:
            send("done", b"data: [DONE]\n\n")
        st.metrics.finish(plan["model"], prompt_tokens, n, plan["finish"], (_perf_ns() - t0) / 1e9)

    def _die(self, st: "OpenAIStandin", rec: dict) -> None:
        """The engine dies: drop the connection without finishing the response."""
        if rec["emissions"] is not None:
            rec["emissions"].append(("close", _perf_ns()))
        rec["finish_reason"] = "died"
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        st._engine_died()


class OpenAIStandin:
    """An in-process vLLM-style OpenAI-compatible server on a real socket.

    Timing attributes (``role_delay``, ``first_token_delay``, ``token_delay``, ``comments``,
    ``keepalives``, ``empty_chunks``, ``tokens`` ...) are read per request and may be changed
    between requests.
    """

    def __init__(
        self,
        models: list[str] | tuple[str, ...] | str = ("qwen-7b",),
        *,
        root: str | dict[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        max_model_len: int = DEFAULT_MAX_MODEL_LEN,
        vision: bool | list[str] | tuple[str, ...] = False,
        version: str = DEFAULT_VERSION,
        api_key: str | None = None,
        error_shape: str = "nested",
        flavour: str = "vllm",
        health: bool | None = None,
        honour_include_usage: bool | None = None,
        force_include_usage: bool = False,
        any_model: bool | None = None,
        max_num_seqs: int | None = None,
        tokens: list[str] | None = None,
        output_tokens: int | None = None,
        role_delay: float = 0.0,
        first_token_delay: float | None = None,
        token_delay: float = 0.0,
        comments: int = 0,
        keepalives: int = 0,
        empty_chunks: int = 0,
        ready_after: float = 0.0,
        ready_mode: str = "refuse",
        die_after_chunks: int | None = None,
        die_after_requests: int = 0,
        exit_on_die: bool = False,
        error_after_chunks: int | None = None,
        stream_error_message: str = "The engine failed while generating.",
        exit_after_requests: int | None = None,
        exit_code: int | None = None,
        chunked: bool = True,
        record_emissions: bool = True,
        access_log=None,
    ) -> None:
        if isinstance(models, str):
            models = [models]
        if not models:
            raise ValueError("at least one served model name is needed")
        if flavour not in ("vllm", "llamacpp"):
            raise ValueError("flavour must be 'vllm' or 'llamacpp'")
        if error_shape not in ("nested", "flat"):
            raise ValueError("error_shape must be 'nested' or 'flat'")
        if ready_mode not in ("refuse", "503", "hang", "reset"):
            raise ValueError("ready_mode must be one of refuse, 503, hang, reset")
        llama = flavour == "llamacpp"
        self.models = list(models)
        if isinstance(root, dict):
            self.roots = {m: root.get(m, m) for m in self.models}
        else:
            self.roots = {m: (root or self.models[0]) for m in self.models}
        self.host = host
        self.port = port
        self.max_model_len = int(max_model_len)
        if isinstance(vision, bool):
            self.vision_models = set(self.models) if vision else set()
        else:
            self.vision_models = set(vision)
        self.version = version
        self.api_key = api_key
        self.error_shape = error_shape
        self.flavour = flavour
        self.health = (not llama) if health is None else health
        self.honour_include_usage = (not llama) if honour_include_usage is None else honour_include_usage
        self.force_include_usage = force_include_usage
        self.any_model = llama if any_model is None else any_model
        if max_num_seqs is None and llama:
            max_num_seqs = 1
        self.max_num_seqs = max_num_seqs
        self.tokens = tokens
        self.output_tokens = output_tokens
        self.role_delay = role_delay
        self.first_token_delay = first_token_delay
        self.token_delay = token_delay
        self.comments = comments
        self.keepalives = keepalives
        self.empty_chunks = empty_chunks
        self.ready_after = ready_after
        self.ready_mode = ready_mode
        self.die_after_chunks = die_after_chunks
        self.die_after_requests = die_after_requests
        self.exit_on_die = exit_on_die
        self.error_after_chunks = error_after_chunks
        self.stream_error_message = stream_error_message
        self.exit_after_requests = exit_after_requests
        self.exit_code_default = exit_code
        self.chunked = chunked
        self.record_emissions = record_emissions
        self.access_log = access_log

        self.emissions: list[list[tuple[str, int]] | None] = []
        self.requests: list[dict] = []
        self.metrics = _Metrics()
        self.ready = threading.Event()
        self.exited = threading.Event()
        self.exit_code: int | None = None
        self.engine_dead = False
        self._died = False
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ready_now = threading.Event()
        self._conns: set = set()
        self._threads: list[threading.Thread] = []
        self._httpd: _Server | None = None
        self._serving = False
        self._finished = 0
        self._slots = threading.BoundedSemaphore(max_num_seqs) if max_num_seqs else None

    # -- public API ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = self.host if self.host not in ("0.0.0.0", "", "::") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def start(self) -> "OpenAIStandin":
        """Bind the port (raises OSError if taken) and start serving (or loading)."""
        if self._httpd is not None:
            raise RuntimeError("already started")
        httpd = _Server((self.host, self.port), _Handler, bind_and_activate=False)
        httpd.standin = self
        try:
            httpd.server_bind()
        except OSError:
            httpd.server_close()
            raise
        self._httpd = httpd
        self.port = httpd.server_address[1]
        bind_late = self.ready_mode == "refuse" and self.ready_after > 0
        if not bind_late:
            httpd.server_activate()   # listen(): before this the port refuses connections
            self._serving = True
            self._spawn(self._serve, "standin-serve")
        if self.ready_after > 0:
            self._spawn(self._load, "standin-load")
        else:
            self.ready.set()
        return self

    def make_ready(self) -> None:
        """End the loading phase now instead of after ``ready_after``."""
        self._ready_now.set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self.ready.wait(timeout)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving, drop open connections and free the port. Idempotent."""
        with self._lock:
            self._stopping.set()
            self._ready_now.set()   # wakes the loading thread, which sees _stopping
            serving = self._serving
            httpd = self._httpd
        if httpd is not None:
            if serving:
                httpd.shutdown()
            httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        me = threading.current_thread()
        for t in self._threads:
            if t is not me:
                t.join(timeout)
        if self.exit_code is None:
            self.exit_code = 0
        self.exited.set()

    def __enter__(self) -> "OpenAIStandin":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kill_engine(self) -> None:
        """Simulate an engine crash outside any request."""
        self._engine_died()

    # -- internals -----------------------------------------------------------------------
    def _spawn(self, fn, name: str) -> None:
        t = threading.Thread(target=fn, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def _serve(self) -> None:
        assert self._httpd is not None
        try:
            self._httpd.serve_forever(poll_interval=0.05)
        except (OSError, ValueError):
            pass

    def _load(self) -> None:
        self._ready_now.wait(None if math.isinf(self.ready_after) else self.ready_after)
        with self._lock:
            if self._stopping.is_set():
                return
            if not self._serving:
                assert self._httpd is not None
                self._httpd.server_activate()
                self._serving = True
                self._spawn(self._serve, "standin-serve")
        self.ready.set()

    def _track(self, conn, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def _exit(self, code: int) -> None:
        """The whole server goes away (as the vLLM process exits), from any thread."""
        with self._lock:
            if self.exit_code is None:
                self.exit_code = code
        threading.Thread(target=self.stop, name="standin-exit", daemon=True).start()

    def _engine_died(self) -> None:
        self.engine_dead = True
        self._died = True
        if self.exit_on_die:
            self._exit(1 if self.exit_code_default is None else self.exit_code_default)

    def die_now(self, rec: dict) -> bool:
        """Whether the engine dies during this request."""
        if self.die_after_chunks is None or self._died:
            return False
        return rec["index"] >= self.die_after_requests

    def _new_record(self, path: str, raw: bytes, headers: dict, t0: int) -> dict:
        ems: list | None = [("received", t0)] if self.record_emissions else None
        with self._lock:
            index = len(self.requests)
            rec = {"index": index, "path": path, "raw": raw, "headers": headers, "status": None,
                   "model": None, "stream": None, "prompt_tokens": None, "completion_tokens": None,
                   "finish_reason": None, "emissions": ems}
            self.requests.append(rec)
            self.emissions.append(ems)
        try:
            rec["body"] = json.loads(raw)
        except ValueError:
            rec["body"] = None
        return rec

    def _request_done(self, rec: dict) -> None:
        with self._lock:
            self._finished += 1
            finished = self._finished
        if self.exit_after_requests is not None and finished >= self.exit_after_requests:
            self._exit(0 if self.exit_code_default is None else self.exit_code_default)

    def _models_body(self) -> dict:
        if not self.ready.is_set():
            return {"object": "list", "data": []}
        created = int(time.time())
        if self.flavour == "llamacpp":
            return {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "me", "permissions": []}
                                               for m in self.models]}
        data = []
        for m in self.models:
            data.append({
                "id": m, "object": "model", "created": created, "owned_by": "vllm", "root": self.roots[m],
                "parent": None, "max_model_len": self.max_model_len,
                "permission": [{"id": f"modelperm-{uuid.uuid4().hex}", "object": "model_permission",
                                "created": created, "allow_create_engine": False, "allow_sampling": True,
                                "allow_logprobs": True, "allow_search_indices": False, "allow_view": True,
                                "allow_fine_tuning": False, "organization": "*", "group": None,
                                "is_blocking": False}],
            })
        return {"object": "list", "data": data}

    def _error(self, message: str, type_: str, code: int, param: str | None = None) -> dict:
        if self.flavour == "llamacpp":
            return {"error": {"message": message, "type": "internal_server_error" if code >= 500 else "invalid_request_error",
                              "param": param, "code": None}}
        if self.error_shape == "flat":
            return {"object": "error", "message": message, "type": type_, "param": None, "code": code}
        return {"error": {"message": message, "type": type_, "param": param, "code": code}}

    def _bad(self, message: str, param: str | None = None) -> _HTTPError:
        if self.flavour == "llamacpp":   # llama_cpp.server answers malformed bodies with 500
            return _HTTPError(500, self._error(message, "InternalServerError", 500, param))
        return _HTTPError(400, self._error(message, "BadRequestError", 400, param))

    @staticmethod
    def _usage(prompt: int, completion: int) -> dict:
        return {"prompt_tokens": prompt, "total_tokens": prompt + completion, "completion_tokens": completion,
                "prompt_tokens_details": None}

    def _plan(self, path: str, raw: bytes) -> dict:
        """Validate a request and decide the tokens to send (raises _HTTPError)."""
        chat = path.endswith("/chat/completions")
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise self._bad(f"[{{'type': 'json_invalid', 'loc': ('body', {getattr(e, 'pos', 0)}), "
                            f"'msg': 'JSON decode error', 'ctx': {{'error': '{e.args[0] if e.args else e}'}}}}]")
        if not isinstance(body, dict):
            raise self._bad("[{'type': 'model_attributes_type', 'loc': ('body',), "
                            "'msg': 'Input should be a valid dictionary or object to extract fields from'}]")
        model = body.get("model")
        if model is None:
            model = self.models[0]
        if not isinstance(model, str):
            raise self._bad("[{'type': 'string_type', 'loc': ('body', 'model'), 'msg': 'Input should be a valid string'}]")
        if model not in self.models:
            if not self.any_model:
                msg = f"The model `{model}` does not exist."
                if self.error_shape == "flat":
                    body_ = self._error(msg, "NotFoundError", 404)
                else:
                    body_ = {"error": {"message": msg, "type": "NotFoundError", "param": "model", "code": 404}}
                raise _HTTPError(404, body_)
            model = self.models[0]
        images = 0
        if chat:
            messages = body.get("messages")
            if messages is None:
                raise self._bad("[{'type': 'missing', 'loc': ('body', 'messages'), 'msg': 'Field required'}]")
            if not isinstance(messages, list) or not messages:
                raise self._bad("[{'type': 'list_type', 'loc': ('body', 'messages'), 'msg': 'Input should be a valid list'}]")
            texts: list[str] = []
            last_user = ""
            for m in messages:
                if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                    raise self._bad("[{'type': 'missing', 'loc': ('body', 'messages', 'role'), 'msg': 'Field required'}]")
                text, n_img = self._message_text(m.get("content"), model)
                images += n_img
                texts.append(text)
                if m["role"] == "user":
                    last_user = text
            prompt_tokens = sum(len(tokenize(t)) + 4 for t in texts) + 2 + 64 * images
            matching = last_user or " ".join(texts)
            max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        else:
            prompt = body.get("prompt")
            if prompt is None:
                raise self._bad("[{'type': 'missing', 'loc': ('body', 'prompt'), 'msg': 'Field required'}]")
            if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
                prompt = prompt[0]
            if isinstance(prompt, str):
                matching = prompt
                prompt_tokens = len(tokenize(prompt)) + 1
            elif isinstance(prompt, list) and prompt and all(isinstance(x, int) for x in prompt):
                matching = " ".join(map(str, prompt))
                prompt_tokens = len(prompt)
            else:
                raise self._bad("The stand-in serves one prompt (a string or a list of token ids) per request.",
                                "prompt")
            max_tokens = body.get("max_tokens", 16)   # OpenAI's default for completions
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise self._bad("[{'type': 'bool_type', 'loc': ('body', 'stream'), 'msg': 'Input should be a valid boolean'}]")
        so = body.get("stream_options")
        if so is not None and not isinstance(so, dict):
            raise self._bad("[{'type': 'model_type', 'loc': ('body', 'stream_options'), 'msg': 'Input should be an object'}]")
        if so and not stream and self.flavour == "vllm":
            raise self._bad("Stream options can only be defined when `stream=True`.", "stream_options")
        n = body.get("n", 1)
        if n not in (1, None):
            raise self._bad("The stand-in only supports n=1.", "n")
        if prompt_tokens > self.max_model_len:
            raise self._bad(f"This model's maximum context length is {self.max_model_len} tokens. However, your "
                            f"request has {prompt_tokens} input tokens. Please reduce the length of the input messages.")
        if max_tokens is None:
            max_tokens = self.max_model_len - prompt_tokens
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise self._bad(f"max_tokens must be at least 1, got {max_tokens}.", "max_tokens")
        if prompt_tokens + max_tokens > self.max_model_len and self.flavour == "vllm":
            raise self._bad(f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's "
                            f"maximum context length is {self.max_model_len} tokens and your request has "
                            f"{prompt_tokens} input tokens ({max_tokens} > {self.max_model_len} - {prompt_tokens}).",
                            "max_tokens")

        # -- the answer --
        if callable(self.tokens):
            natural = list(self.tokens(body))
        elif self.tokens is not None:
            natural = list(self.tokens)
        else:
            natural = tokenize(answer_for(matching, images))
        want = self.output_tokens
        if body.get("ignore_eos"):
            want = max_tokens
        min_tokens = body.get("min_tokens") or 0
        if isinstance(min_tokens, int) and min_tokens > (want if want is not None else len(natural)):
            want = min_tokens
        if want is not None:
            natural = self._cycle(natural, want)
        finish = "stop"
        tokens = natural
        # ignore_eos, or min_tokens up to max_tokens, keep the end of sequence from ever coming: the answer runs
        # into max_tokens ("length"), as vLLM's does
        pinned = bool(body.get("ignore_eos")) or (isinstance(min_tokens, int) and min_tokens >= max_tokens)
        if len(tokens) > max_tokens or (pinned and len(tokens) == max_tokens):
            tokens = tokens[:max_tokens]
            finish = "length"
        stop = body.get("stop")
        if isinstance(stop, str):
            stop = [stop]
        if stop:
            tokens, cut = self._apply_stop(tokens, [s for s in stop if isinstance(s, str) and s])
            if cut:
                finish = "stop"
        include_usage = bool(so and so.get("include_usage")) or self.force_include_usage
        include_usage = include_usage and self.honour_include_usage and stream
        continuous = bool(so and so.get("continuous_usage_stats")) and self.honour_include_usage
        return {"chat": chat, "model": model, "stream": stream, "tokens": tokens, "finish": finish,
                "prompt_tokens": prompt_tokens, "include_usage": include_usage, "continuous_usage": continuous,
                "id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex}

    @staticmethod
    def _cycle(tokens: list[str], n: int) -> list[str]:
        if n <= len(tokens):
            return tokens[:n]
        base = tokens or ["token"]
        again = tokenize(" " + "".join(base).strip()) or base
        out = list(tokens)
        while len(out) < n:
            out.extend(again[: n - len(out)])
        return out

    @staticmethod
    def _apply_stop(tokens: list[str], stops: list[str]) -> tuple[list[str], bool]:
        text = "".join(tokens)
        hits = [i for i in (text.find(s) for s in stops) if i >= 0]
        if not hits:
            return tokens, False
        cut = min(hits)
        out, pos = [], 0
        for t in tokens:
            if pos + len(t) <= cut:
                out.append(t)
                pos += len(t)
            else:
                if cut > pos:
                    out.append(t[: cut - pos])
                break
        return out, True

    def _message_text(self, content: object, model: str) -> tuple[str, int]:
        if content is None or isinstance(content, str):
            return content or "", 0
        if not isinstance(content, list):
            raise self._bad("[{'type': 'string_type', 'loc': ('body', 'messages', 'content'), "
                            "'msg': 'Input should be a valid string'}]")
        texts, images = [], 0
        for part in content:
            if not isinstance(part, dict):
                raise self._bad("Each content part must be an object.")
            kind = part.get("type")
            if kind == "text":
                texts.append(str(part.get("text", "")))
            elif kind in ("image_url", "input_image", "image"):
                if model not in self.vision_models:
                    raise self._bad(f"{model} is not a multimodal model")
                iu = part.get("image_url")
                url = iu.get("url") if isinstance(iu, dict) else iu
                if not isinstance(url, str) or not url:
                    raise self._bad("image_url.url is required.", "messages")
                if url.startswith("data:"):
                    m = _DATA_URL_RE.match(url)
                    if not m:
                        raise self._bad("Invalid image data URL: expected data:<mime>;base64,<data>.")
                    try:
                        base64.b64decode(m.group(3), validate=True)
                    except (binascii.Error, ValueError):
                        raise self._bad("Invalid base64 image data.") from None
                elif not url.startswith(("http://", "https://")):
                    raise self._bad("The URL must be either a HTTP, data or file URL.")
                images += 1
            else:
                if model not in self.vision_models:
                    raise self._bad(f"{model} is not a multimodal model")
                raise self._bad(f"Unknown part type: {kind}")
        return "\n".join(texts), images


# ------------------------------------------------------------------------------------------
# command line: mimics `vllm serve`
# ------------------------------------------------------------------------------------------
_VLLM_BOOL_FLAGS = (
    "--enforce-eager", "--trust-remote-code", "--enable-prefix-caching", "--no-enable-prefix-caching",
    "--disable-log-requests", "--enable-log-requests", "--disable-log-stats", "--enable-chunked-prefill",
    "--no-enable-chunked-prefill", "--enable-auto-tool-choice", "--disable-frontend-multiprocessing",
    "--disable-custom-all-reduce", "--enable-lora", "--enable-prompt-tokens-details",
    "--disable-fastapi-docs", "--enable-sleep-mode", "--disable-uvicorn-access-log",
    "--enable-server-load-tracking", "--headless",
)
_VLLM_VALUE_FLAGS = (
    "--dtype", "--tensor-parallel-size", "-tp", "--pipeline-parallel-size", "--limit-mm-per-prompt",
    "--download-dir", "--quantization", "-q", "--kv-cache-dtype", "--seed", "--tokenizer", "--revision",
    "--tokenizer-revision", "--chat-template", "--max-num-batched-tokens", "--swap-space",
    "--uvicorn-log-level", "--generation-config", "--hf-token", "--cpu-offload-gb", "--block-size",
    "--tool-call-parser", "--reasoning-parser", "--load-format", "--config-format", "--tokenizer-mode",
    "--override-generation-config", "--compilation-config", "-O", "--hf-overrides", "--task", "--runner",
    "--data-parallel-size", "-dp", "--distributed-executor-backend", "--root-path", "--config",
)


def _parse_len(value: str) -> int:
    v = value.strip().lower()
    mult = {"k": 1000, "m": 1000_000}.get(v[-1:], 1)
    return int(float(v[:-1] if mult > 1 else v) * mult)


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vllm serve", allow_abbrev=False, description="vLLM OpenAI-compatible server stand-in "
                                "(Jarvis tests). Unknown flags are accepted and ignored.")
    p.add_argument("model_tag", nargs="?", help="model (HF repo ID or path), as `vllm serve MODEL`")
    p.add_argument("--model", help="same as the positional model")
    p.add_argument("--served-model-name", nargs="+", help="name(s) clients use; default: the model")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-model-len", type=_parse_len, default=None)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--api-key", default=os.environ.get("VLLM_API_KEY"))
    p.add_argument("--enable-force-include-usage", action="store_true")
    p.add_argument("--max-num-seqs", "--max_num_seqs", type=int, default=None,
                   help="requests generated at once; the rest wait (vLLM's scheduler)")
    for flag in _VLLM_BOOL_FLAGS:
        p.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    for flag in _VLLM_VALUE_FLAGS:
        p.add_argument(flag, help=argparse.SUPPRESS)
    s = p.add_argument_group("stand-in behaviour")
    s.add_argument("--version-string", default=DEFAULT_VERSION, help="what GET /version reports")
    s.add_argument("--flavour", "--flavor", choices=("vllm", "llamacpp"), default="vllm")
    s.add_argument("--vision", action="store_true", help="the model accepts image parts")
    s.add_argument("--legacy-errors", action="store_true", help="flat pre-0.10.1 error bodies")
    s.add_argument("--no-health", action="store_true", help="GET /health answers 404")
    s.add_argument("--no-include-usage", action="store_true", help="ignore stream_options.include_usage")
    s.add_argument("--ready-after", type=float, default=0.0, help="seconds of simulated model loading")
    s.add_argument("--ready-mode", choices=("refuse", "503", "hang", "reset"), default="refuse",
                   help="during loading: refuse connections (vLLM), 503, accept and hang, accept and reset")
    s.add_argument("--exit-after-requests", type=int, default=None, help="exit after N completion requests")
    s.add_argument("--exit-code", type=int, default=None, help="exit status of a scripted exit")
    s.add_argument("--die-after-chunks", type=int, default=None, help="engine dies: drop the stream after N data chunks")
    s.add_argument("--die-after-requests", type=int, default=0, help="requests that succeed before the engine dies")
    s.add_argument("--keep-running-on-die", action="store_true", help="don't exit when the engine dies (/health 503)")
    s.add_argument("--error-after-chunks", type=int, default=None, help="send an SSE error event after N data chunks")
    s.add_argument("--role-delay", type=float, default=0.0)
    s.add_argument("--first-token-delay", type=float, default=None)
    s.add_argument("--token-delay", type=float, default=0.0)
    s.add_argument("--tokens", default=None, help="scripted answer: a JSON list of strings")
    s.add_argument("--output-tokens", type=int, default=None, help="every answer has this many tokens")
    s.add_argument("--fail-start", default=None, metavar="MESSAGE",
                   help="fail to start: print MESSAGE after --ready-after seconds and exit 1")
    s.add_argument("--simulate-free-memory", type=float, default=None, metavar="FRACTION",
                   help="fraction of GPU memory free; startup fails if --gpu-memory-utilization is above it")
    s.add_argument("--check-hf-cache", action="store_true",
                   help="with HF_HUB_OFFLINE=1, exit 1 (LocalEntryNotFoundError) if the model is not cached")
    s.add_argument("--log-stream", choices=("stdout", "stderr"), default="stdout")
    s.add_argument("--access-log", action="store_true")
    return p


def _split_known(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], list[str]]:
    """Drop flags the parser does not know (with their value when one follows)."""
    known = set(parser._option_string_actions)
    kept, ignored = [], []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("-") and len(a) > 1 and not _is_number(a):
            name = a.split("=", 1)[0]
            if name not in known:
                ignored.append(a)
                if "=" not in a and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                    ignored.append(argv[i + 1])
                    i += 1
                i += 1
                continue
        kept.append(a)
        i += 1
    return kept, ignored


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _hf_cached(model: str) -> bool:
    if os.path.isabs(model) or model.startswith("."):
        return os.path.exists(model)
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub")
    snaps = os.path.join(cache, "models--" + model.replace("/", "--"), "snapshots")
    try:
        return any(os.scandir(snaps))
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = os.environ.get("JARVIS_STANDIN_ARGS")
    if extra:
        argv += shlex.split(extra)
    parser = _build_parser()
    kept, ignored = _split_known(parser, argv)
    if kept[:1] == ["serve"]:   # the image's entrypoint already is `vllm serve`
        parser.error("unrecognized arguments: serve")
    args = parser.parse_args(kept)
    out = sys.stdout if args.log_stream == "stdout" else sys.stderr

    def log(line: str) -> None:
        try:
            print(line, file=out, flush=True)
        except (OSError, ValueError):
            pass

    def vlog(msg: str, where: str = "api_server.py:1") -> None:
        log(f"INFO {time.strftime('%m-%d %H:%M:%S')} [{where}] {msg}")

    model = args.model or args.model_tag or "Qwen/Qwen3-0.6B"
    served = args.served_model_name or [model]
    term = threading.Event()

    def on_signal(signum, frame) -> None:  # noqa: ARG001
        term.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    vlog(f"vLLM API server version {args.version_string}")
    vlog(f"non-default args: {{'model_tag': {model!r}, 'host': {args.host!r}, 'port': {args.port}, "
         f"'served_model_name': {served!r}, 'max_model_len': {args.max_model_len}, "
         f"'enforce_eager': {args.enforce_eager}"
         + (f", 'max_num_seqs': {args.max_num_seqs}" if args.max_num_seqs is not None else "")
         + f"}} (stand-in; ignored: {ignored!r})", "utils.py:1")

    def fail(message: str) -> int:
        if term.wait(max(args.ready_after, 0.0)):
            return 0
        print(message, file=sys.stderr, flush=True)
        return 1

    if args.fail_start:
        return fail(args.fail_start)
    if args.check_hf_cache and os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True", "YES", "yes") \
            and not _hf_cached(model):
        return fail("huggingface_hub.errors.LocalEntryNotFoundError: Cannot find an appropriate cached snapshot "
                    f"folder for the specified revision on the local disk and outgoing traffic has been disabled. "
                    f"To enable repo look-ups and downloads online, pass 'local_files_only=False' as input. "
                    f"(model {model!r})")
    if args.simulate_free_memory is not None and args.gpu_memory_utilization > args.simulate_free_memory:
        total = 80.0
        return fail(f"ValueError: Free memory on device cuda:0 ({args.simulate_free_memory * total:.2f}/{total:.2f} "
                    f"GiB) on startup is less than desired GPU memory utilization "
                    f"({args.gpu_memory_utilization}, {args.gpu_memory_utilization * total:.2f} GiB). Decrease GPU "
                    f"memory utilization or reduce GPU memory used by other processes.")
    tokens = None
    if args.tokens:
        tokens = json.loads(args.tokens)
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            parser.error("--tokens must be a JSON list of strings")

    server = OpenAIStandin(
        served, root=model, host=args.host, port=args.port,
        max_model_len=args.max_model_len or DEFAULT_MAX_MODEL_LEN, vision=args.vision,
        version=args.version_string, api_key=args.api_key,
        error_shape="flat" if args.legacy_errors else "nested", flavour=args.flavour,
        health=False if args.no_health else None,
        honour_include_usage=False if args.no_include_usage else None,
        force_include_usage=args.enable_force_include_usage, max_num_seqs=args.max_num_seqs,
        tokens=tokens, output_tokens=args.output_tokens, role_delay=args.role_delay,
        first_token_delay=args.first_token_delay, token_delay=args.token_delay,
        ready_after=args.ready_after, ready_mode=args.ready_mode,
        die_after_chunks=args.die_after_chunks, die_after_requests=args.die_after_requests,
        exit_on_die=not args.keep_running_on_die, error_after_chunks=args.error_after_chunks,
        exit_after_requests=args.exit_after_requests, exit_code=args.exit_code,
        record_emissions=False, access_log=log if args.access_log else None,
    )
    try:
        server.start()
    except OSError as e:
        print(f"ERROR:    [Errno {e.errno}] error while attempting to bind on address "
              f"({args.host!r}, {args.port}): {(e.strerror or str(e)).lower()}", file=sys.stderr, flush=True)
        return 1
    vlog(f"Loading model {model} (stand-in, ready in {args.ready_after:g} s)", "gpu_model_runner.py:1")
    while not server.ready.wait(0.05):
        if term.is_set() or server.exited.is_set():
            break
    if server.ready.is_set() and not term.is_set():
        vlog(f"Starting vLLM API server 0 on http://{args.host}:{server.port}", "launcher.py:1")
        log(f"INFO:     Started server process [{os.getpid()}]")
        log("INFO:     Waiting for application startup.")
        log("INFO:     Application startup complete.")
        log(f"INFO:     Uvicorn running on http://{args.host}:{server.port} (Press CTRL+C to quit)")
    while not term.wait(0.05):
        if server.exited.is_set():
            break
    if term.is_set():
        log("INFO:     Shutting down")
        server.stop(timeout=1.0)
        log("INFO:     Application shutdown complete.")
        log(f"INFO:     Finished server process [{os.getpid()}]")
        return 0
    code = server.exit_code or 0
    if code:
        print("ERROR: EngineCore encountered a fatal error; the API server exits.", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
