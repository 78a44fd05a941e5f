"""Child process: answers every POST with one recorded stand-in response, sent with a single `sendall`.

    python -m benchmarks.blast_server RESPONSE_FILE

The response file holds the exact bytes `OpenAIStandin` sent for one streamed answer (head and chunked body), so the
client reads the same stream as from the stand-in, but the server costs nothing per chunk: the client alone is the
bottleneck. Prints `{"port": P}` once listening; exits when stdin closes, or after 10 minutes whatever happens.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading


def _serve(conn: socket.socket, response: bytes) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buf) < length:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            buf = buf[length:]
            conn.sendall(response)


def main(argv: list[str]) -> int:
    with open(argv[0], "rb") as fh:
        response = fh.read()
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    threading.Timer(600, lambda: os._exit(3)).start()
    listener = socket.create_server(("127.0.0.1", 0))
    print(json.dumps({"port": listener.getsockname()[1]}), flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_serve, args=(conn, response), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
