"""A client for OpenAI-compatible chat servers (vLLM, llama.cpp's server, and others), shared by engine plugins.

It measures as docs/metrics.md says: TTFT ends at the first chunk with non-empty content or reasoning text (never at the
empty role chunk), SSE comments and keep-alive lines are skipped without ending the stream, an error event inside the
stream becomes an error result, and token counts come from `usage` when the server sends it, else from counted
chunks flagged as estimated.
"""

from __future__ import annotations

import base64
import json
import time
from typing import TYPE_CHECKING, Any

from .engine import ChatRequest, InferResult, Message
from .http import error_message, read_stamped

if TYPE_CHECKING:
    import httpx


def image_data_url(data: bytes) -> str:
    mime = "image/png" if data.startswith(b"\x89PNG") else "image/jpeg" if data.startswith(b"\xff\xd8") else \
        "image/gif" if data.startswith(b"GIF8") else "image/webp" if data[8:12] == b"WEBP" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _message(msg: Message) -> dict[str, Any]:
    if not msg.images:
        return {"role": msg.role, "content": msg.content}
    parts: list[dict[str, Any]] = [{"type": "text", "text": msg.content}]
    parts += [{"type": "image_url", "image_url": {"url": image_data_url(img)}} for img in msg.images]
    return {"role": msg.role, "content": parts}


def chat_body(model: str, request: ChatRequest, *, include_usage: bool = True,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [_message(m) for m in request.messages],
                            "stream": request.stream}
    if request.stream and include_usage:
        body["stream_options"] = {"include_usage": True}
    for key, value in (("max_tokens", request.max_tokens), ("temperature", request.temperature),
                       ("seed", request.seed)):
        if value is not None:
            body[key] = value
    return {**body, **(extra or {})}


def chat(client: httpx.Client, model: str, request: ChatRequest, *, path: str = "/v1/chat/completions",
         include_usage: bool = True, extra: dict[str, Any] | None = None) -> InferResult:
    """POST one chat completion, streamed (SSE) or not, and return the answer with its stamps. `extra` adds an
    engine's own body fields (vLLM `ignore_eos`)."""
    import httpx

    body = json.dumps(chat_body(model, request, include_usage=include_usage, extra=extra)).encode()
    result = InferResult(stream=request.stream, t_send=0)
    clock = time.perf_counter_ns

    def trace(event: str, info: Any) -> None:
        # docs/metrics.md: t_send is "request written". httpcore reports when the body is on the wire; stamping before
        # the call would also count httpx building the request and, on a fresh connection, the TCP connect.
        if event == "http11.send_request_body.complete":
            result.t_send = clock()

    try:
        result.t_send = clock()  # kept if the request never gets written (connection refused)
        with client.stream("POST", path, content=body, headers={"Content-Type": "application/json"},
                           timeout=request.timeout, extensions={"trace": trace}) as response:
            if response.status_code >= 400:
                result.error = error_message(response.status_code, response.read())
                result.t_end = clock()
                return result
            if request.stream:
                _read_sse(response, result)
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


def _read_whole(response: httpx.Response, result: InferResult) -> None:
    body, result.t_first_byte, result.t_end = read_stamped(response)
    result.t_last_token = result.t_end
    parse_whole(body, result)


def parse_whole(body: bytes, result: InferResult) -> None:
    """Fill `result` from a non-streamed answer's body (stamps are the caller's)."""
    try:
        payload = json.loads(body)
        choice = payload["choices"][0]
        result.text = (choice.get("message") or {}).get("content") or choice.get("text") or ""
        result.finish_reason = choice.get("finish_reason")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        result.error = f"unreadable answer from the engine: {body[:200]!r}"
        return
    _take_usage(payload.get("usage"), result)


_decode = json.JSONDecoder().decode


class SseReader:
    """Reads an SSE stream into `result` from network reads, whichever client made them: `feed(data, arrived)` per
    read, stamped once by the caller before any parsing (every event of that read gets its stamp), until it returns
    True (`[DONE]` or an error event); then `finish(now)`. This is the client's hot path (benchmarks/RESULTS.md,
    item 2): keep it lean."""

    __slots__ = ("result", "pieces", "pending", "done")

    def __init__(self, result: InferResult) -> None:
        self.result = result
        self.pieces: list[str] = []
        self.pending = b""
        self.done = False

    def feed(self, data: bytes, arrived: int) -> bool:
        result = self.result
        if result.t_first_byte is None:
            result.t_first_byte = arrived
        if self.pending:
            data, self.pending = self.pending + data, b""
        cut = data.rfind(b"\n")
        if cut < 0:
            self.pending = data
            return False
        data, self.pending = data[:cut], data[cut + 1:]
        for line in data.split(b"\n"):
            if not line.startswith(b"data:"):
                continue  # blank separators, `: ping` comments, `event:`/`id:` fields
            self.done = _event(line.rstrip(b"\r"), arrived, result, self.pieces)
            if self.done or result.error is not None:
                return True
        return False

    def finish(self, now: int) -> None:
        """The stream ended (or was left after `[DONE]`): stamps, text, counts, and an error for a cut-off stream."""
        result = self.result
        if not self.done and result.error is None and self.pending.startswith(b"data:"):
            self.done = _event(self.pending.rstrip(b"\r"), now, result, self.pieces)
        result.t_end = now
        times = result.chunk_times
        if times:
            result.t_first_token, result.t_last_token = times[0], times[-1]
        result.text = "".join(self.pieces)
        if result.error is None and not self.done and result.finish_reason is None:
            result.error = "the stream ended before the answer was complete (engine died?)"
        if result.output_tokens is None and times:
            result.output_tokens = len(times)
            result.token_source = "estimated"


def _read_sse(response: httpx.Response, result: InferResult) -> None:
    clock = time.perf_counter_ns
    reader = SseReader(result)
    reads = response.iter_raw()
    for data in reads:
        if reader.feed(data, clock()):
            break
    reader.finish(clock())
    if reader.done:
        for _ in reads:  # read the body's end, so the connection goes back to the pool for the next request
            pass


def _event(line: bytes, arrived: int, result: InferResult, pieces: list[str]) -> bool:
    """Handle one `data:` line; True at `[DONE]`. Sets result.error on an error event or an unreadable one."""
    payload = line[5:].strip()
    if payload == b"[DONE]":
        return True
    try:
        event = _decode(payload.decode("utf-8"))
    except ValueError:  # also UnicodeDecodeError
        event = None
    if not isinstance(event, dict):
        result.error = f"unreadable stream event from the engine: {payload[:200]!r}"
        return False
    if "error" in event:
        result.error = error_message(0, json.dumps(event).encode())
        return False
    for choice in event.get("choices") or ():
        delta = choice.get("delta") or {}
        content = delta.get("content") or choice.get("text")
        if content or delta.get("reasoning_content") or delta.get("reasoning"):
            result.chunk_times.append(arrived)
            if content:
                pieces.append(content)
        if choice.get("finish_reason"):
            result.finish_reason = choice["finish_reason"]
    if event.get("usage"):
        _take_usage(event["usage"], result)
    return False


def _take_usage(usage: Any, result: InferResult) -> None:
    if isinstance(usage, dict):
        if isinstance(usage.get("completion_tokens"), int):
            result.output_tokens = usage["completion_tokens"]
            result.token_source = "server"
        if isinstance(usage.get("prompt_tokens"), int):
            result.prompt_tokens = usage["prompt_tokens"]


def list_models(client: httpx.Client, timeout: float = 5.0) -> list[dict[str, Any]]:
    """`GET /v1/models` -> the `data` entries; raises httpx errors when the server is not (yet) there."""
    response = client.get("/v1/models", timeout=timeout)
    response.raise_for_status()
    data = response.json().get("data")
    return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []


def serves(client: httpx.Client, served_name: str, timeout: float = 5.0) -> bool:
    """True when the server answers `/v1/models` and lists `served_name`: the readiness test for eager engines."""
    import httpx

    try:
        return any(m.get("id") == served_name for m in list_models(client, timeout))
    except (httpx.HTTPError, ValueError):
        return False
