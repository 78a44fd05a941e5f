"""A stand-in for `python -m llama_cpp.server`, for the quick tests (standard library only).

It takes the same flags the plugin passes (unknown ones are ignored), refuses a model file that does not start with
the GGUF magic the way llama-cpp-python does (a traceback ending in ValueError, exit 1), binds its port only once
"loaded", and answers like llama.cpp: `/v1/models` lists the alias, no `/health`, a role chunk first, one chunk per
word, no usage in streams, one request generated at a time (the others wait, as with llama_cpp.server's lock),
`max_tokens` and `min_tokens` honoured (words repeat until min_tokens; "length" at max_tokens). Each request's body is
printed to its log as `request: {...}`. With `--api_key KEY` (as llama_cpp.server takes it) every request must carry
`Authorization: Bearer KEY`, else 401; the key is printed in its log, as a server echoing its settings would.
Test-only flags: `--fake_ready_after S` (load time), `--fake_child True`
(start a child process, to check that the whole tree is ended), `--fake_word_delay S` (seconds per word).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = "The capital of France is Paris."


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--model_alias", default=None)
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api_key", default=None)
    parser.add_argument("--fake_ready_after", type=float, default=0.0)
    parser.add_argument("--fake_child", default="False")
    parser.add_argument("--fake_word_delay", type=float, default=0.002)
    args, _unknown = parser.parse_known_args()
    print(f"fake llama_cpp.server: loading {args.model}" + (f" (api_key={args.api_key!r})" if args.api_key else ""),
          flush=True)
    try:
        with open(args.model, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        magic = b""
        print(f"cannot open model: {exc}", file=sys.stderr, flush=True)
    if magic != b"GGUF":
        print("Traceback (most recent call last):\n  ...", file=sys.stderr)
        print(f"ValueError: Failed to load model from file: {args.model}", file=sys.stderr, flush=True)
        return 1
    child = None
    if args.fake_child == "True":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    time.sleep(args.fake_ready_after)
    alias = args.model_alias or args.model
    one_at_a_time = threading.Lock()  # llama_cpp.server generates under one lock around its model

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: object) -> None:
            pass

        def _json(self, status: int, payload: object) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _refused(self) -> bool:
            if args.api_key and self.headers.get("Authorization") != f"Bearer {args.api_key}":
                self._json(401, {"detail": "Invalid API key"})
                return True
            return False

        def do_GET(self) -> None:
            if self._refused():
                return
            if self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": alias, "object": "model", "owned_by": "me"}]})
            else:
                self._json(404, {"detail": "Not Found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if self._refused():
                return
            if self.path != "/v1/chat/completions":
                self._json(404, {"detail": "Not Found"})
                return
            print(f"request: {json.dumps(body)}", flush=True)
            with one_at_a_time:
                self._answer(body)

        def _answer(self, body: dict) -> None:
            prompt = body["messages"][-1]["content"]
            answer = ANSWER if "France" in prompt else "Red."
            words = [w + " " for w in answer.split(" ")]
            words[-1] = words[-1].rstrip()
            finish = "stop"
            min_tokens, max_tokens = body.get("min_tokens") or 0, body.get("max_tokens")
            natural = len(words)
            while len(words) < min_tokens:  # the end of sequence is held back: it goes on talking
                words.append(" " + words[len(words) % natural].strip())
            if max_tokens is not None and len(words) >= max_tokens and (len(words) > max_tokens or min_tokens):
                words, finish = words[:max_tokens], "length"
            answer = "".join(words)
            if not body.get("stream"):
                time.sleep(args.fake_word_delay * len(words))
                self._json(200, {"object": "chat.completion", "model": body.get("model"),
                                 "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                              "finish_reason": finish}],
                                 "usage": {"prompt_tokens": 9, "completion_tokens": len(words),
                                           "total_tokens": 9 + len(words)}})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

            def send(event: object) -> None:
                data = b"data: " + (event if isinstance(event, bytes) else json.dumps(event).encode()) + b"\r\n\r\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            send({"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
            for word in words:
                time.sleep(args.fake_word_delay)
                send({"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]})
            send({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
            send(b"[DONE]")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in args.host else socket.AF_INET  # `--host ::` as uvicorn takes it

    server = Server((args.host, args.port), Handler)
    print(f"fake llama_cpp.server: serving {alias} on {args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    finally:
        if child is not None:
            child.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
