"""Child process for item 3: N concurrent streams, each making K requests back to back; prints one JSON line.

    python -m benchmarks.concurrency_client URL N K TOKENS CLIENT

CLIENT is one of:
- `jarvis`: N threads sharing one `jarvis_core.http.make_client` client, each calling `openai_api.chat` (what a
  plugin does; `chat` is synchronous);
- `httpx-async` / `httpx2-async`: one `AsyncClient` of httpx 0.28 (httpcore 1.0.9) or of httpx2 (httpcore2, whose
  pool has the assignment fixes), generous limits, pool warmed with N connections first, N tasks reading the SSE
  stream with arrival stamps like `openai_api.chat`.

Every request's prompt is unique (`s<stream>-r<k>`), so the parent can match it with the server's record.
Per request it reports t_send, when httpcore had written the request (its trace event), t_end, the chunk arrival
stamps and the token count; for the process: wall time, CPU time,
peak RSS (VmHWM, and psutil sampled every 20 ms), and from httpcore's pool (instrumented here): assignment passes,
requests handed a connection another request had taken (ConnectionNotAvailable), and connections opened.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import MODEL, RssSampler, cpu_seconds, peak_rss_mb  # noqa: E402


def _body(prompt: str, tokens: int) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "stream": True,
            "max_tokens": tokens, "stream_options": {"include_usage": True}}


def run_threads(url: str, n: int, k: int, tokens: int) -> tuple[list[dict], dict]:
    from jarvis_core.engine import ChatRequest, Message
    from jarvis_core.http import make_client
    from jarvis_core.openai_api import chat

    import httpcore

    counts = {"assign_passes": 0, "connection_not_available": 0, "connections_opened": 0, "readability_polls": 0}
    pool_cls, conn_cls = httpcore.ConnectionPool, httpcore.HTTPConnection
    original_assign, original_handle = pool_cls._assign_requests_to_connections, conn_cls.handle_request
    original_connect = conn_cls._connect

    def counted_assign(self: Any, *a: Any, **kw: Any) -> Any:
        counts["assign_passes"] += 1
        return original_assign(self, *a, **kw)

    def counted_handle(self: Any, request: Any) -> Any:
        try:
            return original_handle(self, request)
        except httpcore.ConnectionNotAvailable:
            counts["connection_not_available"] += 1
            raise

    def counted_connect(self: Any, request: Any) -> Any:
        counts["connections_opened"] += 1
        return original_connect(self, request)

    import httpcore._backends.sync as sync_backend

    original_readable = sync_backend.is_socket_readable

    def counted_readable(sock: Any) -> bool:  # a poll() syscall per idle connection per assignment pass
        counts["readability_polls"] += 1
        return original_readable(sock)

    pool_cls._assign_requests_to_connections = counted_assign
    conn_cls.handle_request = counted_handle
    conn_cls._connect = counted_connect
    sync_backend.is_socket_readable = counted_readable
    client = make_client(url)
    local = threading.local()
    original_stream = client.stream

    def stream_traced(*args: Any, **kwargs: Any) -> Any:  # stamps when httpcore has written the request
        theirs = (kwargs.get("extensions") or {}).get("trace")

        def trace(name: str, info: Any) -> None:
            if name == "http11.send_request_body.complete":
                local.written = time.perf_counter_ns()
            if theirs is not None:
                theirs(name, info)

        kwargs["extensions"] = {**(kwargs.get("extensions") or {}), "trace": trace}
        return original_stream(*args, **kwargs)

    client.stream = stream_traced  # type: ignore[method-assign]
    out: list[dict] = []
    lock = threading.Lock()
    go = threading.Event()

    def stream(s: int) -> None:
        go.wait()
        for r in range(k):
            prompt = f"s{s}-r{r}"
            res = chat(client, MODEL, ChatRequest([Message("user", prompt)], stream=True, max_tokens=tokens,
                                                  timeout=60))
            with lock:
                out.append({"prompt": prompt, "t_send": res.t_send, "written": getattr(local, "written", None),
                            "t_end": res.t_end, "chunks": res.chunk_times, "tokens": res.output_tokens or 0,
                            "error": res.error})

    threads = [threading.Thread(target=stream, args=(s,), daemon=True) for s in range(n)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(120)
    client.close()
    return out, counts


def run_async(url: str, n: int, k: int, tokens: int, flavour: str) -> tuple[list[dict], dict]:
    import asyncio

    if flavour == "httpx2":
        import httpcore2 as httpcore
        import httpx2 as httpx
    else:
        import httpcore
        import httpx

    counts = {"assign_passes": 0, "connection_not_available": 0, "connections_opened": 0, "loop_lag_max_ms": 0.0}
    pool_cls = httpcore.AsyncConnectionPool
    original_assign = pool_cls._assign_requests_to_connections

    def counted_assign(self: Any, *a: Any, **kw: Any) -> Any:
        counts["assign_passes"] += 1
        return original_assign(self, *a, **kw)

    pool_cls._assign_requests_to_connections = counted_assign
    conn_cls = httpcore.AsyncHTTPConnection
    original_handle = conn_cls.handle_async_request

    async def counted_handle(self: Any, request: Any) -> Any:
        try:
            return await original_handle(self, request)
        except httpcore.ConnectionNotAvailable:
            counts["connection_not_available"] += 1
            raise

    conn_cls.handle_async_request = counted_handle
    original_connect = conn_cls._connect

    async def counted_connect(self: Any, request: Any) -> Any:
        counts["connections_opened"] += 1
        return await original_connect(self, request)

    conn_cls._connect = counted_connect
    clock = time.perf_counter_ns
    decode = json.JSONDecoder().decode

    async def one(client: Any, prompt: str) -> dict:
        body = json.dumps(_body(prompt, tokens)).encode()
        chunks: list[int] = []
        written: list[int] = []

        async def trace(name: str, info: Any) -> None:
            if name == "http11.send_request_body.complete":
                written.append(clock())

        t_send = clock()
        async with client.stream("POST", "/v1/chat/completions", content=body,
                                 headers={"Content-Type": "application/json"},
                                 extensions={"trace": trace}) as response:
            pending = b""
            async for data in response.aiter_raw():
                arrived = clock()
                lines = (pending + data).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
                        event = decode(line[5:].strip().decode())
                        for choice in event.get("choices") or ():
                            if (choice.get("delta") or {}).get("content"):
                                chunks.append(arrived)
        return {"prompt": prompt, "t_send": t_send, "written": written[-1] if written else None, "t_end": clock(),
                "chunks": chunks, "tokens": len(chunks), "error": None}

    async def main() -> list[dict]:
        limits = httpx.Limits(max_connections=n + 8, max_keepalive_connections=n + 8)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60, trust_env=False) as client:
            # warm the pool: n connections open and idle before the timed part
            await asyncio.gather(*(client.get("/v1/models") for _ in range(n)))
            counts["assign_passes"] = counts["connection_not_available"] = counts["connections_opened"] = 0
            stop = asyncio.Event()

            async def ticker() -> None:  # how late the event loop runs a 5 ms timer: its backlog
                while not stop.is_set():
                    t = time.perf_counter()
                    await asyncio.sleep(0.005)
                    counts["loop_lag_max_ms"] = max(counts["loop_lag_max_ms"], (time.perf_counter() - t - 0.005) * 1e3)

            tick = asyncio.create_task(ticker())

            async def stream(s: int) -> list[dict]:
                return [await one(client, f"s{s}-r{r}") for r in range(k)]

            results = await asyncio.gather(*(stream(s) for s in range(n)))
            stop.set()
            await tick
        return [r for rs in results for r in rs]

    return asyncio.run(main()), counts


def main(argv: list[str]) -> int:
    url, n, k, tokens, kind = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), argv[4]
    # imports happen before the clock starts; the RSS includes them (they are part of any client)
    if kind == "jarvis":
        import jarvis_core.openai_api  # noqa: F401
    with RssSampler() as rss:
        c0, t0 = cpu_seconds(), time.perf_counter()
        if kind == "jarvis":
            results, extra = run_threads(url, n, k, tokens)
        elif kind in ("httpx-async", "httpx2-async"):
            results, extra = run_async(url, n, k, tokens, kind.split("-")[0])
        else:
            raise SystemExit(f"unknown client {kind}")
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    print(json.dumps({"results": results, "wall_s": wall, "cpu_s": cpu, "sampled_rss_mb": rss.peak / 2**20,
                      "peak_rss_mb": peak_rss_mb(), **extra}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
