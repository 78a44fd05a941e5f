"""A stand-in OpenAI-compatible server for load tests and benchmarks: one asyncio event loop serves any number of
streams at once with scripted timing, so the best a client can do is known exactly.

    python -m tests.standins.load_server [--ttft 0.08] [--tokens 20] [--gap 0.015] [--slots N] [--model NAME]

Every request is answered after `ttft` seconds with its first token, then `tokens - 1` more `gap` seconds apart, as
SSE chunks (a role-only chunk first, usage last) or one JSON body. `max_tokens` below `tokens` shortens the answer;
`ignore_eos`/`min_tokens` make it exactly `max_tokens` long. With `--slots N` at most N requests generate at once and
the others wait their turn (like vLLM's `--max-num-seqs`, llama.cpp's slots). Timestamps are `time.perf_counter_ns()`,
CLOCK_MONOTONIC on Linux, so a client in another process can compare them with its own. `GET /stats` returns, per
request in arrival order, its tag (the last message's text before its first colon), when it was received, started
generating, sent its first and last token, and finished the answer (`done`) or found the client gone in mid-answer
(`gone`: the connection closed; checked before each token).

Prints `{"port": P}` once listening; exits when stdin closes. Standard library only (uvloop where
installed).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
import time

clock = time.perf_counter_ns


class LoadStandin:
    def __init__(self, *, ttft: float, tokens: int, gap: float, slots: int | None, model: str) -> None:
        self.ttft, self.tokens, self.gap, self.model = ttft, tokens, gap, model
        self.slots = asyncio.Semaphore(slots) if slots else None
        self.stats: list[dict[str, int | str | None]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                received = clock()
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                length = next((int(line.split(":", 1)[1]) for line in lines[1:]
                               if line.lower().startswith("content-length:")), 0)
                body = json.loads(await reader.readexactly(length)) if length else {}
                if method == "POST" and path == "/v1/chat/completions":
                    await self.complete(reader, writer, body, received)
                elif path == "/v1/models":
                    self.send_json(writer, {"object": "list", "data": [{"id": self.model, "object": "model"}]})
                elif path == "/stats":
                    self.send_json(writer, self.stats)
                else:
                    self.send_json(writer, {"status": "ok"} if path == "/health" else {"error": "not found"},
                                   200 if path == "/health" else 404)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went, or the server is shutting down
        finally:
            writer.close()

    @staticmethod
    def send_json(writer: asyncio.StreamWriter, obj: object, status: int = 200) -> None:
        data = json.dumps(obj).encode()
        writer.write(f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                     .encode() + data)

    async def complete(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: dict,
                       received: int) -> None:
        limit = body.get("max_tokens")
        exact = bool(body.get("ignore_eos")) or bool(body.get("min_tokens"))
        count = int(limit) if exact and limit else min(self.tokens, int(limit)) if limit else self.tokens
        messages = body.get("messages") or [{}]
        tag = str(messages[-1].get("content", "")).split(":")[0][:40]  # "Request 17": which request this was
        stat: dict[str, int | str | None] = {"tag": tag, "received": received, "started": None, "first": None,
                                             "last": None, "done": None, "gone": None}
        self.stats.append(stat)
        if self.slots is not None:
            await self.slots.acquire()
        try:
            stat["started"] = start = clock()
            stream = bool(body.get("stream"))
            if stream:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                             + ROLE_CHUNK)
            for i in range(count):
                delay = start + int((self.ttft + i * self.gap) * 1e9) - clock()
                if delay > 0:
                    await asyncio.sleep(delay / 1e9)
                if reader.at_eof() or writer.is_closing():  # the client closed the connection: stop generating
                    stat["gone"] = clock()
                    return
                stat["last"] = clock()
                if stat["first"] is None:
                    stat["first"] = stat["last"]
                if stream:
                    writer.write(token_chunk(i))
                    await self.drain(writer)
            reason = "length" if limit and count >= int(limit) else "stop"
            usage = {"prompt_tokens": 10, "completion_tokens": count, "total_tokens": 10 + count}
            if stream:
                self.chunk(writer, {"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
                self.chunk(writer, {"choices": [], "usage": usage})
                writer.write(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
            else:
                self.send_json(writer, {"object": "chat.completion", "model": self.model, "usage": usage,
                                        "choices": [{"index": 0, "finish_reason": reason, "message": {
                                            "role": "assistant", "content": "".join(f" w{i}" for i in range(count))}}]})
            await writer.drain()
            stat["done"] = clock()
        finally:
            if self.slots is not None:
                self.slots.release()

    @staticmethod
    def chunk(writer: asyncio.StreamWriter, obj: dict) -> None:
        writer.write(encode_chunk(obj))

    @staticmethod
    async def drain(writer: asyncio.StreamWriter) -> None:
        # Waiting on every chunk costs the stand-in a task switch per token, CPU it shares with the client under test
        # on one machine: wait only when the client stops reading.
        if writer.transport.get_write_buffer_size() > 65536:
            await writer.drain()


def encode_chunk(obj: dict) -> bytes:
    """One SSE event as one HTTP chunk."""
    data = b"data: " + json.dumps(obj).encode() + b"\n\n"
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


ROLE_CHUNK = encode_chunk({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})


@functools.lru_cache(maxsize=None)
def token_chunk(i: int) -> bytes:
    return encode_chunk({"choices": [{"index": 0, "delta": {"content": f" w{i}"}}]})


async def main(args: argparse.Namespace) -> None:
    standin = LoadStandin(ttft=args.ttft, tokens=args.tokens, gap=args.gap, slots=args.slots, model=args.model)
    server = await asyncio.start_server(standin.handle, "127.0.0.1", args.port, backlog=4096)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    server.close()
    for task in asyncio.all_tasks() - {asyncio.current_task()}:
        task.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ttft", type=float, default=0.08)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--gap", type=float, default=0.015)
    parser.add_argument("--slots", type=int, default=None)
    parser.add_argument("--model", default="load-model")
    try:  # uvloop where installed: the stand-in then leaves more of a shared machine to the client under test
        from uvloop import run
    except ImportError:
        run = asyncio.run
    run(main(parser.parse_args()))
