"""A client for OpenAI-compatible chat servers (vLLM, llama.cpp's server, and others), shared by engine plugins.

It measures as metrics.md says: TTFT ends at the first chunk with non-empty content or reasoning text (never at the
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
from .http import error_message, read_stamped, stamped_lines

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


def chat_body(model: str, request: ChatRequest, *, include_usage: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [_message(m) for m in request.messages],
                            "stream": request.stream}
    if request.stream and include_usage:
        body["stream_options"] = {"include_usage": True}
    for key, value in (("max_tokens", request.max_tokens), ("temperature", request.temperature),
                       ("seed", request.seed)):
        if value is not None:
            body[key] = value
    return body


def chat(client: httpx.Client, model: str, request: ChatRequest, *, path: str = "/v1/chat/completions",
         include_usage: bool = True) -> InferResult:
    """POST one chat completion, streamed (SSE) or not, and return the answer with its stamps."""
    import httpx

    body = json.dumps(chat_body(model, request, include_usage=include_usage)).encode()
    result = InferResult(stream=request.stream, t_send=0)
    try:
        result.t_send = time.perf_counter_ns()
        with client.stream("POST", path, content=body, headers={"Content-Type": "application/json"},
                           timeout=request.timeout) as response:
            if response.status_code >= 400:
                result.error = error_message(response.status_code, response.read())
                result.t_end = time.perf_counter_ns()
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
        result.t_end = time.perf_counter_ns()
    return result


def _read_whole(response: httpx.Response, result: InferResult) -> None:
    body, result.t_first_byte, result.t_end = read_stamped(response)
    result.t_last_token = result.t_end
    try:
        payload = json.loads(body)
        choice = payload["choices"][0]
        result.text = (choice.get("message") or {}).get("content") or choice.get("text") or ""
        result.finish_reason = choice.get("finish_reason")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        result.error = f"unreadable answer from the engine: {body[:200]!r}"
        return
    _take_usage(payload.get("usage"), result)


def _read_sse(response: httpx.Response, result: InferResult) -> None:
    pieces: list[str] = []
    done = False
    lines = stamped_lines(response)
    for arrived, line in lines:
        if result.t_first_byte is None:
            result.t_first_byte = lines.first_byte
        if not line.startswith(b"data:"):
            continue  # blank separators, `: ping` comments, `event:`/`id:` fields
        payload = line[5:].strip()
        if payload == b"[DONE]":
            done = True
            break
        try:
            event = json.loads(payload)
        except ValueError:
            result.error = f"unreadable stream event from the engine: {payload[:200]!r}"
            break
        if "error" in event:
            result.error = error_message(0, json.dumps(event).encode())
            break
        for choice in event.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning") or \
                choice.get("text") or ""
            if text:
                if result.t_first_token is None:
                    result.t_first_token = arrived
                result.t_last_token = arrived
                result.chunk_times.append(arrived)
                if delta.get("content") or choice.get("text"):
                    pieces.append(delta.get("content") or choice.get("text"))
            if choice.get("finish_reason"):
                result.finish_reason = choice["finish_reason"]
        if event.get("usage"):
            _take_usage(event["usage"], result)
    result.t_end = time.perf_counter_ns()
    result.text = "".join(pieces)
    if result.error is None and not done and result.finish_reason is None:
        result.error = "the stream ended before the answer was complete (engine died?)"
    if result.output_tokens is None and result.chunk_times:
        result.output_tokens = len(result.chunk_times)
        result.token_source = "estimated"


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
