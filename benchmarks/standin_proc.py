"""Child process: one `OpenAIStandin` on 127.0.0.1, in its own process so the client's CPU is measured alone.

    python -m benchmarks.standin_proc '{"models": ["m"], "token_delay": 0.02, ...}'

Prints one JSON line `{"port": P, "pid": PID}` once listening, then obeys one command per stdin line:
`dump PATH` writes every request's emission stamps (and the prompt, to match client and server records) to PATH as
JSON and answers `ok`; `clear` forgets the records so far; `quit` (or stdin closing: the parent died) stops the
server and exits. A watchdog ends the process after `max_life_s` whatever happens, so nothing is left running.

Stamps are `time.perf_counter_ns()`, which on Linux is CLOCK_MONOTONIC: one clock for every process on the machine,
so client and server stamps can be subtracted across processes.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _prompt(rec: dict) -> str | None:
    body = rec.get("body")
    if not isinstance(body, dict):
        return None
    messages = body.get("messages") or []
    return messages[-1].get("content") if messages and isinstance(messages[-1], dict) else None


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(REPO))
    from tests.standins.openai_server import OpenAIStandin

    kwargs = json.loads(argv[0]) if argv else {}
    max_life = float(kwargs.pop("max_life_s", 600.0))
    server = OpenAIStandin(**kwargs)
    server.start()
    done = threading.Event()
    threading.Thread(target=lambda: done.wait(max_life) or os._exit(3), daemon=True).start()
    print(json.dumps({"port": server.port, "pid": os.getpid()}), flush=True)
    try:
        for line in sys.stdin:
            cmd, _, arg = line.strip().partition(" ")
            if cmd == "dump":
                with server._lock:
                    records = list(server.requests)
                out = [{"index": r["index"], "prompt": _prompt(r), "status": r["status"],
                        "emissions": r["emissions"]} for r in records]
                Path(arg).write_text(json.dumps(out), encoding="utf-8")
                print("ok", flush=True)
            elif cmd == "clear":
                with server._lock:
                    server.requests.clear()
                    server.emissions.clear()
                print("ok", flush=True)
            elif cmd == "quit":
                break
    finally:
        done.set()
        server.stop(timeout=1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
