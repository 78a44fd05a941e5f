"""Benchmark-only prototypes of the changes RESULTS.md proposes for `jarvis_core.openai_api` (nothing here is used by
Jarvis itself): measured side by side with the current code so each proposal comes with its evidence.

`make_client` is `jarvis_core.http.make_client` with `limits=httpx.Limits(max_connections=100,
max_keepalive_connections=100)`: with httpx's default (20 kept alive), httpcore 1.0.9's pool compares the number of
*all* its connections with the keep-alive limit (`_assign_requests_to_connections`), so once more than 20 requests
run at once every connection that goes idle is closed and the next request opens a new one.

`chat` is `openai_api.chat` with three changes:
1. `t_send` is stamped when httpcore has finished writing the request (its `http11.send_request_body.complete` trace
   event, passed through `extensions={"trace": ...}`), as metrics.md defines it ("request written"), instead of
   before httpx has built the request; the early stamp is kept as the fallback when the write never completes;
2. `_read_sse` reads `response.iter_raw()` itself instead of through the `stamped_lines` generator, skips blank
   separator lines before doing anything else, and decodes JSON with a prebuilt `JSONDecoder` on `str` (what
   `json.loads(bytes)` does after detecting the encoding, minus that detection and the wrapper calls). Stamps are
   still taken once per network read, before any parsing; results are identical (checked by the benchmark);
3. after `[DONE]` it reads the response to its end (the chunked body's terminator, already in the same network read
   for vLLM and the stand-in) instead of leaving it unread: `openai_api._read_sse` breaks out at `[DONE]`, so
   httpcore never sees the end of the message, closes the connection when the response is closed, and every
   streamed request opens a new TCP connection (after t_send: its connect time lands in TTFT);
4. optionally (`fast=True`, `chat_fast`), a fast path for the one event shape that dominates a vLLM stream, an
   ordinary token chunk `{..."choices":[{"index":0,"delta":{"content":"…"},"logprobs":null,"finish_reason":null}]}`:
   when the event's text ends exactly so, has that one choice and no `usage`/`error` key before it, only the content
   string is decoded (`json.decoder.scanstring`, the C routine `json` itself uses); every other event, and every
   engine whose chunks look different, takes the full `JSONDecoder` path. It changes CPU cost only, never a stamp.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from jarvis_core.engine import ChatRequest, InferResult
from jarvis_core.http import error_message
from jarvis_core.openai_api import _read_whole, _take_usage, chat_body

if TYPE_CHECKING:
    import httpx

_decode = json.JSONDecoder().decode
_scanstring = json.decoder.scanstring
_HEAD = '"choices":[{"index":0,"delta":{"content":"'
_TAIL = '},"logprobs":null,"finish_reason":null}]}'
_TAIL_B = _TAIL.encode()


def make_client(base_url: str = "", *, timeout: float = 300.0, connect_timeout: float = 5.0,
                headers: dict[str, str] | None = None, max_connections: int = 100) -> httpx.Client:
    import httpx

    return httpx.Client(base_url=base_url, timeout=httpx.Timeout(timeout, connect=connect_timeout), trust_env=False,
                        headers={"Accept-Encoding": "identity", **(headers or {})},
                        limits=httpx.Limits(max_connections=max_connections,
                                            max_keepalive_connections=max_connections))


def chat_fast(client: httpx.Client, model: str, request: ChatRequest) -> InferResult:
    return chat(client, model, request, fast=True)


def chat(client: httpx.Client, model: str, request: ChatRequest, *, path: str = "/v1/chat/completions",
         include_usage: bool = True, fast: bool = False) -> InferResult:
    import httpx

    body = json.dumps(chat_body(model, request, include_usage=include_usage)).encode()
    result = InferResult(stream=request.stream, t_send=0)
    clock = time.perf_counter_ns

    def trace(name: str, info: Any) -> None:
        if name == "http11.send_request_body.complete":
            result.t_send = clock()

    try:
        result.t_send = clock()
        with client.stream("POST", path, content=body, headers={"Content-Type": "application/json"},
                           timeout=request.timeout, extensions={"trace": trace}) as response:
            if response.status_code >= 400:
                result.error = error_message(response.status_code, response.read())
                result.t_end = clock()
                return result
            if request.stream:
                _read_sse(response, result, fast)
            else:
                _read_whole(response, result)
    except httpx.TimeoutException:
        result.error = f"timed out after {request.timeout:g} s"
    except httpx.RemoteProtocolError as exc:
        result.error = f"the connection broke mid-answer (engine died?): {exc}"
    except httpx.TransportError as exc:
        result.error = f"cannot reach the engine: {exc}"
    if result.t_end is None:
        result.t_end = clock()
    return result


def _read_sse(response: httpx.Response, result: InferResult, fast: bool = False) -> None:
    clock = time.perf_counter_ns
    pieces: list[str] = []
    times = result.chunk_times
    add_time, add_piece = times.append, pieces.append
    done = False
    pending = b""
    first = True
    chunks = response.iter_raw()
    for data in chunks:
        arrived = clock()
        if first:
            result.t_first_byte, first = arrived, False
        if pending:
            data, pending = pending + data, b""
        if not data.endswith(b"\n"):
            cut = data.rfind(b"\n")
            if cut < 0:
                pending = data
                continue
            data, pending = data[:cut], data[cut + 1:]
        for line in data.split(b"\n"):
            if not line.startswith(b"data:"):
                continue  # blank separators, `: ping` comments, `event:`/`id:` fields
            if fast and line.endswith(_TAIL_B):
                text = _fast_content(line)
                if text is not None:
                    add_time(arrived)
                    add_piece(text)
                    continue
            done = _event(line, arrived, result, pieces, times)
            if done or result.error is not None:
                break
        if done or result.error is not None:
            break
    else:
        if pending.startswith(b"data:"):
            done = _event(pending.rstrip(b"\r"), clock(), result, pieces, times)
    result.t_end = clock()
    if done:
        for _ in chunks:  # the body's end (chunked terminator): read, the connection goes back to the pool
            pass
    if times:
        result.t_first_token, result.t_last_token = times[0], times[-1]
    result.text = "".join(pieces)
    if result.error is None and not done and result.finish_reason is None:
        result.error = "the stream ended before the answer was complete (engine died?)"
    if result.output_tokens is None and times:
        result.output_tokens = len(times)
        result.token_source = "estimated"


def _fast_content(line: bytes) -> str | None:
    """The content of an ordinary non-empty vLLM token chunk (the line ends with _TAIL), or None."""
    try:
        s = line.decode("utf-8")
        i = s.find(_HEAD, 5)
        if i < 0 or s.find('"usage"', 5, i) >= 0 or s.find('"error"', 5, i) >= 0:
            return None
        text, end = _scanstring(s, i + len(_HEAD))
    except ValueError:  # UnicodeDecodeError is one
        return None
    return text if text and end == len(s) - len(_TAIL) else None


def _event(line: bytes, arrived: int, result: InferResult, pieces: list[str], times: list[int]) -> bool:
    """Handle one `data:` line; True at `[DONE]`. Sets result.error on a bad or error event."""
    payload = line[5:].strip()
    if payload == b"[DONE]":
        return True
    try:
        event = _decode(payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        result.error = f"unreadable stream event from the engine: {payload[:200]!r}"
        return False
    if not isinstance(event, dict):
        result.error = f"unreadable stream event from the engine: {payload[:200]!r}"
        return False
    if "error" in event:
        result.error = error_message(0, json.dumps(event).encode())
        return False
    for choice in event.get("choices") or ():
        delta = choice.get("delta") or {}
        content = delta.get("content") or choice.get("text")
        text = content or delta.get("reasoning_content") or delta.get("reasoning") or ""
        if text:
            times.append(arrived)
            if content:
                pieces.append(content)
        if choice.get("finish_reason"):
            result.finish_reason = choice["finish_reason"]
    if event.get("usage"):
        _take_usage(event["usage"], result)
    return False
