"""Item 2, streaming overhead: one answer of 20,000 chunks, sent as fast as the stand-in can, read by six clients.

The stand-in runs in a child process (benchmarks/standin_proc.py), so the client's CPU is its own. Readers, from the
floor up:
- raw socket: `recv` until the end of the chunked body, nothing parsed: the ceiling the server and kernel allow;
- httpx iter_raw: the body through httpx (h11 de-chunking), each piece only counted: the bare httpx reader;
- httpx iter_lines: the same, split into text lines, `data:` lines counted (no JSON);
- Jarvis: `openai_api.chat` (one stamp per network read, JSON per event, chunk times, text);
- Jarvis + vLLM fast path: benchmarks/proposed.py's `chat_fast`, `openai_api.chat` decoding only the content string
  of an ordinary vLLM token chunk (measured, not adopted: RESULTS.md, "What limits item 2");
- openai SDK: `OpenAI().chat.completions.create(stream=True)`, iterated.

Figures: chunks/s = content chunks / (end − start) per answer, median over repetitions, and client CPU per chunk
(process user+system time / chunks); ratios are against the bare httpx reader and the openai SDK.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .common import MODEL, PYTHON, REPO, Outcome, StandinProcess, cpu_seconds, median

CHUNKS = 20_000
_TOKEN = re.compile(rb'"delta":\{"content":"[^"]')
_TOKEN_LEN = len(b'"delta":{"content":"x')


def _body(max_tokens: int) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "stream please"}], "stream": True,
            "max_tokens": max_tokens, "stream_options": {"include_usage": True}}


def raw_socket(url: str, n: int) -> int:
    host, port = url.rsplit("//", 1)[1].split(":")
    body = json.dumps(_body(n)).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + body)
        carry, count = b"", 0
        while True:
            data = sock.recv(1 << 16)
            if not data:
                break
            buf = carry + data
            count += len(_TOKEN.findall(buf))
            carry = buf[-(_TOKEN_LEN - 1):]  # too short to hold a whole match, so none is counted twice
            if buf.endswith(b"\r\n0\r\n\r\n"):
                break
    return count


def httpx_raw(client: Any, n: int) -> int:
    pieces = 0
    with client.stream("POST", "/v1/chat/completions", json=_body(n)) as response:
        for _ in response.iter_raw():
            pieces += 1
    # One piece per HTTP chunk (one SSE event), more when a chunk straddles two reads; only counted, never parsed.
    return n if pieces >= n + 4 else pieces


def httpx_lines(client: Any, n: int) -> int:
    count = 0
    with client.stream("POST", "/v1/chat/completions", json=_body(n)) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                count += 1
    return count - 4


def jarvis(client: Any, n: int, fast: bool = False) -> int:
    from jarvis_core.engine import ChatRequest, Message
    from jarvis_core.openai_api import chat

    from .proposed import chat_fast

    request = ChatRequest([Message("user", "stream please")], stream=True, max_tokens=n, timeout=60)
    result = (chat_fast if fast else chat)(client, MODEL, request)
    if not result.ok:
        raise RuntimeError(result.error)
    return len(result.chunk_times)


def openai_sdk(client: Any, n: int) -> int:
    count = 0
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "stream please"}],
                                            stream=True, max_tokens=n, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            count += 1
    return count


def record_response(url: str, n: int) -> bytes:
    """The exact bytes the stand-in sends for one answer of n chunks (head and chunked body)."""
    host, port = url.rsplit("//", 1)[1].split(":")
    body = json.dumps(_body(n)).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    parts = []
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + body)
        while True:
            data = sock.recv(1 << 16)
            if not data:
                break
            parts.append(data)
            if b"".join(parts[-2:]).endswith(b"\r\n0\r\n\r\n"):
                break
    return b"".join(parts)


class BlastProcess:
    """benchmarks/blast_server.py in a child process, answering with `response`."""

    def __init__(self, response: bytes) -> None:
        self.response = response
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> "BlastProcess":
        self._tmp = tempfile.TemporaryDirectory(prefix="jarvis-bench-")
        path = Path(self._tmp.name) / "response.bin"
        path.write_bytes(self.response)
        self.proc = subprocess.Popen([PYTHON, "-m", "benchmarks.blast_server", str(path)], cwd=REPO,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = f"http://127.0.0.1:{json.loads(self.proc.stdout.readline())['port']}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
            self.proc.stdout.close()
        self._tmp.cleanup()


RAW, BARE, LINES, JARVIS = ("raw socket (no HTTP library)", "httpx iter_raw (bare reader)", "httpx iter_lines",
                            "Jarvis openai_api.chat")
FAST, OPENAI = "Jarvis + vLLM fast path (proposed.py)", "openai SDK"
READERS = (RAW, BARE, LINES, JARVIS, FAST, OPENAI)


def _measure(url: str, reps: int, budget_s: float) -> tuple[dict[str, float], dict[str, float], dict[str, list]]:
    import httpx
    import openai

    from jarvis_core.http import make_client

    bare = httpx.Client(base_url=url, trust_env=False, timeout=60)
    jclient = make_client(url, timeout=60)
    oclient = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    fns: dict[str, Callable[[int], int]] = {
        RAW: lambda n: raw_socket(url, n),
        BARE: lambda n: httpx_raw(bare, n),
        LINES: lambda n: httpx_lines(bare, n),
        JARVIS: lambda n: jarvis(jclient, n),
        FAST: lambda n: jarvis(jclient, n, fast=True),
        OPENAI: lambda n: openai_sdk(oclient, n),
    }
    try:
        for read in fns.values():
            read(2000)  # warm connections and code paths
        rates: dict[str, list[float]] = {name: [] for name in fns}
        cpu: dict[str, list[float]] = {name: [] for name in fns}
        deadline = time.monotonic() + budget_s
        for _ in range(reps):
            if time.monotonic() > deadline:
                break
            for name, read in fns.items():
                c0, t0 = cpu_seconds(), time.perf_counter()
                got = read(CHUNKS)
                t1, c1 = time.perf_counter(), cpu_seconds()
                if got != CHUNKS:
                    raise RuntimeError(f"{name} read {got} content chunks, expected {CHUNKS}")
                rates[name].append(CHUNKS / (t1 - t0))
                cpu[name].append((c1 - c0) / CHUNKS)
    finally:
        bare.close()
        jclient.close()
        oclient.close()
    return ({k: median(v) for k, v in rates.items()}, {k: median(v) * 1e6 for k, v in cpu.items()}, rates)


def _check_same(url: str) -> bool:
    """The fast path returns what openai_api.chat returns (text, stamps' count, tokens, finish)."""
    from jarvis_core.engine import ChatRequest, Message
    from jarvis_core.http import make_client
    from jarvis_core.openai_api import chat

    from .proposed import chat_fast

    request = ChatRequest([Message("user", "stream please")], stream=True, max_tokens=500, timeout=30)

    def key(r: Any) -> tuple:
        return (r.text, len(r.chunk_times), r.output_tokens, r.token_source, r.finish_reason, r.error)

    with make_client(url) as client:
        a = chat(client, MODEL, request)
        return key(a) == key(chat_fast(client, MODEL, request))


def run(quick: bool = False) -> Outcome:
    reps = 3 if quick else 5
    out = Outcome()
    with StandinProcess(output_tokens=CHUNKS, token_delay=0.0, record_emissions=False) as server:
        response = record_response(server.url, CHUNKS)
        paced = _measure(server.url, reps, 60 if quick else 150)
        same = _check_same(server.url)
    with BlastProcess(response) as blast:
        fast = _measure(blast.url, reps, 60 if quick else 150)
    for label, (rate, us, _) in (("stand-in", paced), ("recorded", fast)):
        for name in READERS:
            out.row(f"[{label}] {name}: chunks/s, client CPU/chunk", f"{rate[name]:,.0f} /s, {us[name]:.1f} µs")
    for label, (rate, us, _) in (("stand-in", paced), ("recorded", fast)):
        j, b, o = rate[JARVIS], rate[BARE], rate[OPENAI]
        out.row(f"[{label}] Jarvis slowdown vs bare httpx reader (chunks/s ratio)", f"{b / j:.2f}×", "≤ 1.25×",
                b / j <= 1.25)
        out.row(f"[{label}]   same, in client CPU per chunk", f"{us[JARVIS] / us[BARE]:.2f}×")
        p = rate[FAST]
        out.row(f"[{label}]   with the vLLM fast path (not adopted): bare reader ÷ it (chunks/s; CPU)",
                f"{b / p:.2f}×; {us[FAST] / us[BARE]:.2f}×", "≤ 1.25×", b / p <= 1.25)
        out.row(f"[{label}] Jarvis vs openai SDK (chunks/s ratio)", f"{j / o:.2f}×", "≥ 1.00×", j >= o)
    out.row("the vLLM fast path gives the same results as openai_api.chat", "yes" if same else "NO", "yes", same)
    out.raw = {"chunks": CHUNKS, "reps": reps, "response_bytes": len(response),
               "stand-in": {"rate_per_s": paced[0], "cpu_us_per_chunk": paced[1], "all": paced[2]},
               "recorded": {"rate_per_s": fast[0], "cpu_us_per_chunk": fast[1], "all": fast[2]}, "same": same}
    return out
