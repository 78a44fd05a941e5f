"""Asynchronous HTTP for load levels: one event loop drives every request in flight (aiohttp, whose C parser keeps the
client's cost per chunk low), instead of one thread per request. Engines opt in with the `infer_async` hook.

Sessions are per event loop and address: `session_for(address)` inside a load level, `close_sessions()` when the
level's loop ends. Stamps follow docs/metrics.md as in `openai_api.chat`: `t_send` when the request body is handed to
the connection, a read's arrival stamp taken before any parsing.

Open-loop levels send each request at a scheduled time. Building a request and taking a connection for it (opening a
new one when every pooled connection is busy) take from a fraction of a millisecond to several, so the load generator
starts a request a little early inside `send_at(due)`, and the send path holds it at the *send gate* (`until_due()`)
once its connection is ready, just before writing: what is left at the due time is the write alone. `post_chat` passes
the gate through aiohttp's connection trace; a plugin writing by other means awaits `until_due()` itself.

asyncio and aiohttp are imported inside the functions: every plugin imports this module (through `jarvis_core.api`)
when it loads, and `jarvis --help` loads the plugins.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

from .engine import ChatRequest, InferResult
from .http import MAX_CONNECTIONS, error_message
from .openai_api import SseReader, chat_body, parse_whole

if TYPE_CHECKING:
    import asyncio

    import aiohttp

_sessions: dict[tuple[int, str], aiohttp.ClientSession] = {}


class SendGate:
    """A request's due time (a `perf_counter_ns` stamp), for a request started before it is due. `passed` once the
    send path reached the gate; `on_pass` is then called, once."""

    __slots__ = ("due", "passed", "on_pass")

    def __init__(self, due: int, on_pass: Callable[[], None] | None = None) -> None:
        self.due, self.passed, self.on_pass = due, False, on_pass

    async def wait(self) -> None:
        self.passed = True
        if self.on_pass is not None:
            self.on_pass()
        await spin_until(self.due)


_gate: ContextVar[SendGate | None] = ContextVar("jarvis_send_gate", default=None)


@contextmanager
def send_at(due: int, on_pass: Callable[[], None] | None = None) -> Iterator[SendGate]:
    """Inside this block (one task), the request being sent is not to be written before `due`: `until_due()` waits
    for it. The gate tells whether the send path reached it (`gate.passed`): a send that never does must not be
    started early."""
    gate = SendGate(due, on_pass)
    token = _gate.set(gate)
    try:
        yield gate
    finally:
        _gate.reset(token)


async def until_due() -> None:
    """The send gate: await it just before writing a request. Inside a load level's `send_at(due)` it returns at the
    due time (at once if that has passed, or on a second call); anywhere else at once. `post_chat` awaits it once the
    request's connection is ready; an `infer_async` that writes its request by other means should await it too, or
    its open-loop requests are started only at their due time, and building them and connecting count as send lag."""
    gate = _gate.get()
    if gate is not None and not gate.passed:
        await gate.wait()


async def spin_until(due: int) -> None:
    """Return at `due` (a `perf_counter_ns` stamp), not a timer's millisecond later: sleep until 1.5 ms before it,
    then yield to the loop until it is time."""
    import asyncio

    clock = time.perf_counter_ns
    while (left := due - clock()) > 0:
        await asyncio.sleep((left - 1_500_000) / 1e9 if left > 2_000_000 else 0)


def session_for(address: str) -> aiohttp.ClientSession:
    """The running loop's session for an engine's address (created on first use). Like `http.make_client`:
    environment proxies ignored, compression refused, connections not limited below `MAX_CONNECTIONS`."""
    import asyncio

    import aiohttp

    loop = asyncio.get_running_loop()
    key = (id(loop), address)
    session = _sessions.get(key)
    if session is None or session.closed:
        trace = aiohttp.TraceConfig()
        trace.on_request_chunk_sent.append(_on_chunk_sent)
        trace.on_connection_reuseconn.append(_on_connection_ready)  # a pooled connection, or
        trace.on_connection_create_end.append(_on_connection_ready)  # a new one: either way, right before writing
        session = _sessions[key] = aiohttp.ClientSession(
            base_url=address, trust_env=False, auto_decompress=False, trace_configs=[trace],
            headers={"Accept-Encoding": "identity"},
            connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS, limit_per_host=MAX_CONNECTIONS),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5.0))
    return session


async def _on_connection_ready(session: Any, context: Any, params: Any) -> None:
    await until_due()


async def _on_chunk_sent(session: Any, context: Any, params: Any) -> None:
    stamps = context.trace_request_ctx
    if stamps is not None:
        stamps.t_send = time.perf_counter_ns()


async def close_sessions() -> None:
    """Close the running loop's sessions (and so every connection they hold)."""
    import asyncio

    loop_id = id(asyncio.get_running_loop())
    for key in [k for k in _sessions if k[0] == loop_id]:
        await _sessions.pop(key).close()


class StreamFeed(Protocol):
    """What reads a streamed answer into its `InferResult`: `feed` per network read (stamped on arrival, before any
    parsing) until it returns True; then `finish`. `openai_api.SseReader` is one."""

    done: bool

    def feed(self, data: bytes, arrived: int) -> bool: ...

    def finish(self, now: int) -> None: ...


async def post_chat(address: str, path: str, body: bytes, request: ChatRequest, *,
                    stream_reader: Callable[[InferResult], StreamFeed],
                    read_whole: Callable[[bytes, InferResult], None], headers: dict[str, str] | None = None,
                    who: str = "the engine", died: str = "engine died?") -> InferResult:
    """POST a chat request from the event loop and read the answer (streamed through `stream_reader(result)`, or
    whole through `read_whole`), with the stamps of docs/metrics.md, the request's timeout, and every failure as the
    result's error (never a raise; cancellation is raised). `who` and `died` word the errors for the engine."""
    import asyncio

    import aiohttp

    result = InferResult(stream=request.stream, t_send=0)
    clock = time.perf_counter_ns
    session = session_for(address)
    gate = _gate.get()
    # Kept if the request never gets written (no earlier than it was due); the session's trace stamps the body's end.
    result.t_send = max(clock(), gate.due) if gate is not None else clock()
    try:
        async with timeout_after(request.timeout):
            async with session.post(path, data=body, headers={"Content-Type": "application/json", **(headers or {})},
                                    trace_request_ctx=result) as response:
                if response.status >= 400:
                    result.t_first_byte = clock()
                    result.error = error_message(response.status, await response.read())
                elif request.stream:
                    reader = stream_reader(result)
                    reads = response.content.iter_any()
                    async for data in reads:
                        if reader.feed(data, clock()):
                            break
                    reader.finish(clock())
                    if reader.done:
                        async for _ in reads:  # the body's end, so the connection is kept for the next request
                            pass
                else:
                    raw = await response.read()
                    result.t_first_byte = result.t_end = result.t_last_token = clock()
                    read_whole(raw, result)
    except (asyncio.TimeoutError, TimeoutError):
        result.error = f"timed out after {request.timeout:g} s"
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
        result.error = f"the connection broke mid-answer ({died}): {exc or type(exc).__name__}"
    except (aiohttp.ClientError, OSError) as exc:
        result.error = f"cannot reach {who}: {exc or type(exc).__name__}"
    if result.t_end is None:
        result.t_end = clock()
    return result


async def openai_chat_async(address: str, model: str, request: ChatRequest, *, path: str = "/v1/chat/completions",
                            include_usage: bool = True, extra: dict[str, Any] | None = None,
                            headers: dict[str, str] | None = None) -> InferResult:
    """`openai_api.chat` for the event loop: one chat completion, streamed (SSE) or not, with the same stamps,
    parsing and error results."""
    body = json.dumps(chat_body(model, request, include_usage=include_usage, extra=extra)).encode()
    return await post_chat(address, path, body, request, stream_reader=SseReader, read_whole=parse_whole,
                           headers=headers)


def timeout_after(seconds: float | None) -> Any:
    """`async with timeout_after(s):` raises TimeoutError when the block takes longer (`asyncio.timeout`, or its
    equivalent on Python 3.10)."""
    import asyncio

    return asyncio.timeout(seconds) if hasattr(asyncio, "timeout") else _timeout(seconds)


class _timeout:
    """`asyncio.timeout` for Python 3.10."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._handle: asyncio.TimerHandle | None = None
        self._fired = False

    async def __aenter__(self) -> None:
        import asyncio

        if self.seconds is None:
            return
        task = asyncio.current_task()
        assert task is not None

        def fire() -> None:
            self._fired = True
            task.cancel()

        self._handle = asyncio.get_running_loop().call_later(self.seconds, fire)

    async def __aexit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        import asyncio

        if self._handle is not None:
            self._handle.cancel()
        if self._fired and kind is asyncio.CancelledError:
            raise TimeoutError
        return False
