"""HTTP plumbing shared by engine plugins: a client for local engines, one pooled client per address, and line
streaming with arrival stamps.

Stamps follow docs/metrics.md: a line gets the `perf_counter_ns()` of the network read that completed it, taken before
any parsing, so JSON decoding never leaks into TTFT.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import httpx


def make_client(base_url: str = "", *, timeout: float = 300.0, connect_timeout: float = 5.0,
                headers: dict[str, str] | None = None) -> httpx.Client:
    """An httpx client for an engine. Environment proxies are ignored: engines are local, and a corporate proxy
    must not see (or break) traffic to 127.0.0.1. Compression is refused so stamps see bytes as the engine sends them."""
    import httpx

    # Generous pool limits: httpcore compares *all* its connections with the keep-alive limit, so with the default
    # of 20 every connection going idle under 21+ parallel requests is closed and reopened (benchmarks, item 3). And a
    # load run with N requests in flight must never wait for a pooled connection: that wait would hide in its TTFT.
    return httpx.Client(base_url=base_url, timeout=httpx.Timeout(timeout, connect=connect_timeout), trust_env=False,
                        headers={"Accept-Encoding": "identity", **(headers or {})},
                        limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS))


#: Connections one client keeps open at most: above the highest load level a run may ask for.
MAX_CONNECTIONS = 1024


def http_answer(client: httpx.Client, path: str, timeout: float = 2.0) -> tuple[httpx.Response | None, str | None]:
    """GET `path` to learn what listens at a port: `(response, None)`; `(None, why)` when something accepts
    connections but gives no HTTP answer; `(None, None)` when nothing accepts them. For telling a foreign program on
    an engine's port from the engine."""
    import httpx

    try:
        return client.get(path, timeout=timeout), None
    except httpx.ConnectError:
        return None, None
    except httpx.TimeoutException:
        return None, "it accepts connections but sends no HTTP answer"
    except httpx.HTTPError as exc:
        return None, f"it does not speak HTTP ({type(exc).__name__})"


_shared: dict[str, httpx.Client] = {}


def shared_client(address: str) -> httpx.Client:
    """The one pooled keep-alive client for an engine's address, so no measured request pays for a new client or a
    TCP connect. Per-request timeouts are the caller's; `close_shared` ends it when the engine stops."""
    client = _shared.get(address)
    if client is None or client.is_closed:
        client = _shared[address] = make_client(address)
    return client


def close_shared(address: str | None = None) -> None:
    """Close the shared client of one address (all of them with None)."""
    for key in [address] if address is not None else list(_shared):
        client = _shared.pop(key, None) if key is not None else None
        if client is not None:
            client.close()


class stamped_lines:  # noqa: N801 - used like a generator function
    """Iterate `(arrival_ns, line)` over a streamed body, each line without its line ending, stamped with the
    network read that completed it. `first_byte` holds the stamp of the very first read, once there was one."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.first_byte: int | None = None

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        clock = time.perf_counter_ns
        pending = b""
        for data in self._response.iter_raw():
            arrived = clock()
            if self.first_byte is None:
                self.first_byte = arrived
            if b"\n" not in data:
                pending += data
                continue
            lines = (pending + data).split(b"\n")
            pending = lines.pop()
            for line in lines:
                yield arrived, line.rstrip(b"\r")
        if pending:
            yield clock(), pending.rstrip(b"\r")


def read_stamped(response: httpx.Response) -> tuple[bytes, int | None, int]:
    """A whole (non-streamed) body with the stamps of its first byte and of its end: `(body, first_byte, end)`."""
    clock = time.perf_counter_ns
    chunks = []
    first = None
    for data in response.iter_raw():
        if first is None:
            first = clock()
        chunks.append(data)
    return b"".join(chunks), first, clock()


def error_message(status: int, body: bytes) -> str:
    """One line from an engine's error response: OpenAI/vLLM nested or flat shapes, Ollama's, or raw text."""
    import json

    text = body.decode("utf-8", "replace").strip()
    try:
        data: Any = json.loads(text)
    except ValueError:
        data = None
    message = None
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            message = err.get("message") or err.get("detail")
        elif isinstance(err, str):
            message = err
        message = message or data.get("detail") or data.get("message")
    if not message:
        message = text[:300] or "no body"
    return f"HTTP {status}: {message}" if status else str(message)
