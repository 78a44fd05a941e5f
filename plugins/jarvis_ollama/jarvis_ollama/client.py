"""Ollama's native REST API (`/api/...`): liveness, models on disk and in memory, load/unload, pull and chat.

Chat follows docs/metrics.md, as `jarvis_core.openai_api` does: `t_send` is when the request body is on the wire (httpx
trace), over the core's one pooled client per server (`shared_client` from `jarvis_core.api`); every NDJSON line is
stamped on arrival, before parsing; the first token is the first line with non-empty `message.content` or
`message.thinking`; token counts are the server's (`eval_count`). An error line inside a stream, a stream that ends
without its `done` line, or a broken connection make an error result. `client_for` makes short-lived clients for
probes, pulls and unloads.
"""

from __future__ import annotations

import base64
import json
import time
from typing import TYPE_CHECKING, Any, Callable

from jarvis_core.api import (
    ChatRequest,
    InferResult,
    Message,
    error_message,
    make_client,
    post_chat,
    read_stamped,
    shared_client,
    stamped_lines,
)

from .names import same_model

if TYPE_CHECKING:
    import httpx

#: The server's own figures kept in `InferResult.server` (integers; durations in nanoseconds).
SERVER_FIELDS = ("load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration",
                 "total_duration")
_JSON = {"Content-Type": "application/json"}


class OllamaAPIError(Exception):
    """Ollama answered with an error: an HTTP status >= 400, or an `{"error": ...}` object (then status is 200)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"HTTP {status}: {message}" if status >= 400 else message)


# Basic authentication for servers whose address carried user information (`https://user:password@proxy`), by
# address: the address itself (settings.url, records, messages) never carries it.
_authorization: dict[str, str] = {}


def authorize(url: str, userinfo: str | None) -> None:
    """Send `userinfo` (`user:password`, percent-encoded as in a URL) as basic authentication to the server at
    `url` from now on. None changes nothing."""
    if not userinfo:
        return
    from urllib.parse import unquote

    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
    _authorization[url] = f"Basic {token}"


def auth_headers(url: str) -> dict[str, str] | None:
    found = _authorization.get(url)
    return {"Authorization": found} if found else None


def client_for(url: str, timeout: float = 300.0) -> httpx.Client:
    """A new client, for one-off calls (probes, pulls, unloads); close it after use."""
    return make_client(url, timeout=timeout, connect_timeout=min(5.0, timeout), headers=auth_headers(url))


def shared(url: str) -> httpx.Client:
    """The core's pooled keep-alive client of `url` (`shared_client`), carrying the server's authentication."""
    client = shared_client(url)
    found = _authorization.get(url)
    if found and client.headers.get("Authorization") != found:
        client.headers["Authorization"] = found
    return client


def version(client: httpx.Client, timeout: float = 2.0) -> str | None:
    """The server's version when an Ollama server answers, else None (down, or not Ollama)."""
    import httpx

    try:
        response = client.get("/api/version", timeout=timeout)
        if response.status_code != 200:
            return None
        value = response.json().get("version")
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def _json(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise OllamaAPIError(response.status_code, _error_text(response.status_code, response.read()))
    try:
        data = response.json()
    except ValueError:
        raise OllamaAPIError(response.status_code, f"unreadable answer: {response.text[:200]!r}") from None
    if isinstance(data, dict) and data.get("error"):
        raise OllamaAPIError(response.status_code, str(data["error"]))
    return data


def _error_text(status: int, body: bytes) -> str:
    return error_message(0, body) if body.strip() else f"HTTP {status}"


def _models(data: Any) -> list[dict[str, Any]]:
    models = data.get("models") if isinstance(data, dict) else None
    return [m for m in models if isinstance(m, dict)] if isinstance(models, list) else []


def tags(client: httpx.Client, timeout: float = 10.0) -> list[dict[str, Any]]:
    """`GET /api/tags`: the models on the server's disk."""
    return _models(_json(client.get("/api/tags", timeout=timeout)))


def ps(client: httpx.Client, timeout: float = 10.0) -> list[dict[str, Any]]:
    """`GET /api/ps`: the models loaded in memory now."""
    return _models(_json(client.get("/api/ps", timeout=timeout)))


def capabilities(client: httpx.Client, model: str, timeout: float = 10.0) -> tuple[str, ...] | None:
    """What the model can do, from `POST /api/show` (`capabilities`; older servers: a `clip` family means vision).
    None when the server does not say."""
    import httpx

    try:
        data = post(client, "/api/show", {"model": model}, timeout)
    except (httpx.HTTPError, OllamaAPIError):
        return None
    caps = data.get("capabilities")
    if isinstance(caps, list):
        return tuple(str(c) for c in caps)
    families = (data.get("details") or {}).get("families") if isinstance(data.get("details"), dict) else None
    if isinstance(families, list) and families:
        return ("completion", "vision") if "clip" in families else ("completion",)
    return None


def memory(entry: dict[str, Any]) -> int | None:
    """The bytes a loaded model holds (`/api/ps` `size`: GPU and CPU memory together)."""
    size = entry.get("size")
    return size if isinstance(size, int) else None


def find(models: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    for entry in models:
        if any(isinstance(entry.get(k), str) and same_model(entry[k], name) for k in ("name", "model")):
            return entry
    return None


def post(client: httpx.Client, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    """POST a JSON body and return the single JSON object of the answer; errors raise OllamaAPIError."""
    response = client.post(path, content=json.dumps(body).encode(), headers=_JSON, timeout=timeout)
    data = _json(response)
    return data if isinstance(data, dict) else {}


def load(client: httpx.Client, model: str, *, keep_alive: int | str, options: dict[str, Any],
         timeout: float) -> dict[str, Any]:
    """Load a model without generating: a chat with no messages (`done_reason: "load"`)."""
    body: dict[str, Any] = {"model": model, "messages": [], "stream": False, "keep_alive": keep_alive}
    if options:
        body["options"] = options
    return post(client, "/api/chat", body, timeout)


def unload(client: httpx.Client, model: str, timeout: float = 30.0) -> dict[str, Any]:
    """Unload a model now (`keep_alive: 0`); its runner exits and gives its memory back."""
    return post(client, "/api/generate", {"model": model, "keep_alive": 0, "stream": False}, timeout)


class PullBrokeOff(OllamaAPIError):
    """A pull's stream ended without an error and without `success` (the server stopped mid-download)."""


#: The start of the error Ollama ends a pull with when a downloaded file fails its sha256 check (`errDigestMismatch`);
#: the server has deleted the file by then, so the next pull downloads it again.
DIGEST_MISMATCH = "digest mismatch"


def is_digest_mismatch(message: str) -> bool:
    """Whether a pull's error says the download was corrupted (a layer failed its sha256 check)."""
    return message.lower().startswith(DIGEST_MISMATCH)


def pull(client: httpx.Client, model: str, on_progress: Callable[[int, int], None],
         on_status: Callable[[str], None] | None = None, timeout: float = 300.0) -> None:
    """`POST /api/pull`, streamed. Progress is summed over every layer (distinct digest) and given to `on_progress`
    as (bytes done, bytes known so far); each new status line before `success` ("pulling manifest",
    "pulling <digest>", "verifying sha256 digest", "writing manifest", "removing unused layers") goes to
    `on_status`, once. An error line inside the stream raises OllamaAPIError (`is_digest_mismatch` tells a corrupted
    download); a stream that ends without `success`, PullBrokeOff."""
    layers: dict[str, tuple[int, int]] = {}
    success = False
    last_status = ""
    body = json.dumps({"model": model, "stream": True}).encode()
    with client.stream("POST", "/api/pull", content=body, headers=_JSON, timeout=timeout) as response:
        if response.status_code >= 400:
            raise OllamaAPIError(response.status_code, _error_text(response.status_code, response.read()))
        for _, line in stamped_lines(response):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                raise OllamaAPIError(200, f"unreadable progress line: {line[:200]!r}") from None
            if not isinstance(event, dict):
                continue
            if event.get("error"):
                raise OllamaAPIError(200, str(event["error"]))
            digest = event.get("digest")
            if isinstance(digest, str) and isinstance(event.get("total"), int):
                completed = event.get("completed") if isinstance(event.get("completed"), int) else 0
                layers[digest] = (min(completed, event["total"]), event["total"])
                on_progress(sum(c for c, _ in layers.values()), sum(t for _, t in layers.values()))
            status = str(event.get("status") or "")
            if status == "success":
                success = True
            elif status and status != last_status:  # after the figures: a display draws a new status at once
                last_status = status
                if on_status is not None:
                    on_status(status)
    if not success:
        raise PullBrokeOff(200, "the server ended the stream before 'success'")


# --- chat ---------------------------------------------------------------------------------------------------------


def _message(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": msg.role, "content": msg.content}
    if msg.images:
        out["images"] = [base64.b64encode(img).decode("ascii") for img in msg.images]  # plain base64, no data: URL
    return out


def options_for(request: ChatRequest | None, num_ctx: int | None) -> dict[str, Any]:
    """Ollama's `options`: the request's sampling settings, and the context size from the engine's settings.

    Ollama cannot pin the output length (no ignore_eos or min_tokens): with `request.exact_tokens` it still gets
    `num_predict` = max_tokens and nothing more, and an answer that ends early says so in `done_reason`."""
    options: dict[str, Any] = {}
    if request is not None:
        for key, value in (("temperature", request.temperature), ("num_predict", request.max_tokens),
                           ("seed", request.seed)):
            if value is not None:
                options[key] = value
    if num_ctx is not None:
        options["num_ctx"] = num_ctx
    return options


def chat_body(model: str, request: ChatRequest, *, keep_alive: int | str | None, num_ctx: int | None = None
              ) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [_message(m) for m in request.messages],
                            "stream": request.stream}
    options = options_for(request, num_ctx)
    if options:
        body["options"] = options
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    return body


def chat(client: httpx.Client, model: str, request: ChatRequest, *, keep_alive: int | str | None = None,
         num_ctx: int | None = None) -> InferResult:
    """POST /api/chat, streamed (NDJSON) or not, returning the answer with its stamps. Never raises for a failed
    request: the failure is the result's `error`."""
    import httpx

    body = json.dumps(chat_body(model, request, keep_alive=keep_alive, num_ctx=num_ctx)).encode()
    result = InferResult(stream=request.stream, t_send=0)
    clock = time.perf_counter_ns

    def trace(event: str, info: Any) -> None:
        # docs/metrics.md: t_send is "request written", stamped as jarvis_core.openai_api does: when httpcore has put
        # the body on the wire, so building the request and, on a fresh connection, the TCP connect stay out of TTFT.
        if event == "http11.send_request_body.complete":
            result.t_send = clock()

    deadline = 0
    try:
        result.t_send = clock()  # kept if the request never gets written (connection refused)
        deadline = result.t_send + int(request.timeout * 1e9)
        with client.stream("POST", "/api/chat", content=body, headers=_JSON, timeout=request.timeout,
                           extensions={"trace": trace}) as response:
            if response.status_code >= 400:
                result.t_first_byte = time.perf_counter_ns()
                result.error = error_message(response.status_code, response.read())
            elif request.stream:
                _read_stream(response, result, deadline)
            else:
                _read_whole(response, result)
    except httpx.TimeoutException:
        result.error = f"timed out after {request.timeout:g} s"
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        result.error = f"the connection broke mid-answer (Ollama or its runner died?): {exc or type(exc).__name__}"
    except httpx.TransportError as exc:
        result.error = f"cannot reach Ollama: {exc or type(exc).__name__}"
    if result.t_end is None:
        result.t_end = time.perf_counter_ns()
    return result


def _take_final(event: dict[str, Any], result: InferResult) -> None:
    result.finish_reason = event.get("done_reason") or "stop"
    for key in SERVER_FIELDS:
        value = event.get(key)
        result.server[key] = value if isinstance(value, int) else 0  # omitempty: absent means 0
    if isinstance(event.get("eval_count"), int):
        result.output_tokens = event["eval_count"]
        result.token_source = "server"
    if isinstance(event.get("prompt_eval_count"), int):
        result.prompt_tokens = event["prompt_eval_count"]


class StreamReader:
    """Reads a streamed chat answer (NDJSON) into `result`, line by line, whichever client read it: `line(arrived,
    text)` per line, stamped by the caller when its network read arrived (before parsing), until it returns True
    (the `done` line, or an error); then `finish(now)`."""

    __slots__ = ("result", "pieces", "done")

    def __init__(self, result: InferResult) -> None:
        self.result = result
        self.pieces: list[str] = []
        self.done = False

    def line(self, arrived: int, line: str | bytes) -> bool:
        result = self.result
        if not line.strip():
            return False
        try:
            event = json.loads(line)
        except ValueError:
            result.error = f"unreadable line from Ollama: {line[:200]!r}"
            return True
        if not isinstance(event, dict):
            return False
        if event.get("error"):
            result.error = str(event["error"])
            return True
        message = event.get("message") if isinstance(event.get("message"), dict) else {}
        content = message.get("content") if isinstance(message.get("content"), str) else ""
        thinking = message.get("thinking") if isinstance(message.get("thinking"), str) else ""
        if content or thinking:
            if result.t_first_token is None:
                result.t_first_token = arrived
            result.t_last_token = arrived
            result.chunk_times.append(arrived)
            if content:
                self.pieces.append(content)
        if event.get("done"):
            _take_final(event, result)
            self.done = True
            return True
        return False

    def finish(self, now: int) -> None:
        result = self.result
        result.t_end = now
        result.text = "".join(self.pieces)
        if result.error is None and not self.done:
            result.error = "the stream ended before the answer was complete (Ollama or its runner died?)"
        if result.output_tokens is None and result.chunk_times:
            result.output_tokens = len(result.chunk_times)
            result.token_source = "estimated"


def _read_stream(response: httpx.Response, result: InferResult, deadline: int) -> None:
    reader = StreamReader(result)
    lines = stamped_lines(response)
    reads = iter(lines)
    for arrived, line in reads:
        if result.t_first_byte is None:
            result.t_first_byte = lines.first_byte
        if reader.line(arrived, line):
            break
        if arrived > deadline:
            result.error = "timed out before the answer was complete"
            break
    reader.finish(time.perf_counter_ns())
    if reader.done:
        for _ in reads:  # read the body's end, so the connection goes back to the pool for the next request
            pass


class LineFeed:
    """`StreamReader` fed with network reads (the event loop's client): each read cut into NDJSON lines, every line
    stamped with its read's arrival."""

    __slots__ = ("reader", "pending")

    def __init__(self, result: InferResult) -> None:
        self.reader = StreamReader(result)
        self.pending = b""

    @property
    def done(self) -> bool:
        return self.reader.done

    def feed(self, data: bytes, arrived: int) -> bool:
        if self.reader.result.t_first_byte is None:
            self.reader.result.t_first_byte = arrived
        *complete, self.pending = (self.pending + data).split(b"\n")
        return any(self.reader.line(arrived, line) for line in complete)

    def finish(self, now: int) -> None:
        if not self.reader.done and self.reader.result.error is None and self.pending:
            self.reader.line(now, self.pending)
        self.reader.finish(now)


async def chat_async(url: str, model: str, request: ChatRequest, *, keep_alive: int | str | None = None,
                     num_ctx: int | None = None) -> InferResult:
    """`chat` from an event loop (the `infer_async` hook, for load levels), over the loop's aiohttp session of
    `url`: the same body, stamps, reading and error results."""
    body = json.dumps(chat_body(model, request, keep_alive=keep_alive, num_ctx=num_ctx)).encode()
    return await post_chat(url, "/api/chat", body, request, stream_reader=LineFeed, read_whole=_parse_whole,
                           headers=auth_headers(url), who="Ollama", died="Ollama or its runner died?")


def _read_whole(response: httpx.Response, result: InferResult) -> None:
    raw, result.t_first_byte, result.t_end = read_stamped(response)
    result.t_last_token = result.t_end
    _parse_whole(raw, result)


def _parse_whole(raw: bytes, result: InferResult) -> None:
    try:
        event = json.loads(raw)
        if not isinstance(event, dict):
            raise ValueError
    except ValueError:
        result.error = f"unreadable answer from Ollama: {raw[:200]!r}"
        return
    if event.get("error"):
        result.error = str(event["error"])
        return
    message = event.get("message") if isinstance(event.get("message"), dict) else {}
    result.text = message.get("content") if isinstance(message.get("content"), str) else ""
    _take_final(event, result)
    if not event.get("done", True):
        result.error = "Ollama's answer is not complete ('done' is false)"
