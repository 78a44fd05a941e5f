"""Item 1, TTFT truth: Jarvis's TTFT against the stand-in's true time to first token, on one clock.

Each answer is scripted like vLLM's: an empty role chunk at once, then halfway to the first token an empty content
chunk, an SSE comment (`: ping`) and a blank keep-alive line, then the first non-empty token `FIRST_TOKEN_S` after
the request was received, then two more tokens 1 ms apart.

The stand-in runs twice: in this process (its stamps and the client's are the same `time.perf_counter_ns()`, but
server and client threads share one GIL) and in a child process (no GIL sharing; `perf_counter_ns` is
CLOCK_MONOTONIC on Linux, one clock for every process, so the stamps still subtract exactly). Requests go one after
another on one client, as `jarvis run` sends them.

Definitions (per request), all stamps `perf_counter_ns`:
- w = the moment the request was completely written: httpcore's `http11.send_request_body.complete` trace event,
  stamped in the client (metrics.md: t_send is "request written");
- e_token = the server's stamp taken just before it writes the first non-empty token;
- true TTFT = e_token − w;
- Jarvis TTFT = t_first_token − t_send, as `openai_api.chat` returns them;
- error = Jarvis TTFT − true TTFT = (w − t_send) + (t_first_token − e_token): t_send stamped before httpx has built
  the request, opened a connection if needed and written it, plus the first token's way out (loopback, httpcore
  reading, until the stamp);
- shown for information, not part of the error: the server reading the request (e_received − w, the stand-in's own
  HTTP parsing: engine time, as in vLLM's own TTFT histogram, which starts when the request arrived), connections
  opened per request, and the role-chunk TTFT error, t_first_byte − t_send − true TTFT: the first SSE event carrying
  `choices` (the empty role chunk) is where `vllm bench serve` ends TTFT.
"""

from __future__ import annotations

import time
from typing import Any

from .common import MODEL, Outcome, StandinProcess, fmt_ms, median, percentile

FIRST_TOKEN_S = 0.070
TOKENS = ["Paris", " is", " it."]
SCRIPT = dict(role_delay=0.0, first_token_delay=FIRST_TOKEN_S, token_delay=0.001, comments=1, keepalives=1,
              empty_chunks=1, tokens=TOKENS)


def traced(client: Any) -> Any:
    """Wrap `client.stream` so each request also stamps when httpcore has written it, and counts connects."""
    original = client.stream
    client.written, client.connects = None, 0

    def stream(*args: Any, **kwargs: Any) -> Any:
        client.written = None
        theirs = (kwargs.get("extensions") or {}).get("trace")

        def trace(name: str, info: Any) -> None:
            if name == "http11.send_request_body.complete":
                client.written = time.perf_counter_ns()
            elif name == "connection.connect_tcp.complete":
                client.connects += 1
            if theirs is not None:
                theirs(name, info)

        kwargs["extensions"] = {**(kwargs.get("extensions") or {}), "trace": trace}
        return original(*args, **kwargs)

    client.stream = stream
    return client


def _measure(n: int, where: str) -> dict[str, Any]:
    from jarvis_core.engine import ChatRequest, Message
    from jarvis_core.http import make_client
    from jarvis_core.openai_api import chat

    from tests.standins.openai_server import OpenAIStandin

    server: Any = OpenAIStandin([MODEL], **SCRIPT) if where == "in-process" else StandinProcess(**SCRIPT)
    deadline = time.monotonic() + 90
    results, written = [], []
    with server, traced(make_client(server.url)) as client:
        chat(client, MODEL, ChatRequest([Message("user", "warm-up")], stream=True, timeout=10))
        client.connects = 0
        for i in range(n):
            if time.monotonic() > deadline:
                break
            request = ChatRequest([Message("user", f"What is the capital of France? #{i}")], stream=True,
                                  max_tokens=16, timeout=10)
            results.append(chat(client, MODEL, request))
            written.append(client.written)
        connects = client.connects
        if where == "in-process":
            records = {r["body"]["messages"][-1]["content"]: r["emissions"] for r in server.requests}
        else:
            records = {r["prompt"]: r["emissions"] for r in server.records()}
    errors, out_part, early, server_in, role_err, incomplete = [], [], [], [], [], 0
    for i, (result, w) in enumerate(zip(results, written)):
        ems = records.get(f"What is the capital of France? #{i}")
        if not result.ok or result.text != "".join(TOKENS) or result.t_first_token is None or not ems or w is None:
            incomplete += 1
            continue
        received = ems[0][1]
        token = next(t for kind, t in ems if kind == "token")
        true_ttft = token - w
        errors.append((result.t_first_token - result.t_send - true_ttft) / 1e9)
        out_part.append((result.t_first_token - token) / 1e9)
        early.append((w - result.t_send) / 1e9)
        server_in.append((received - w) / 1e9)
        role_err.append(((result.t_first_byte or 0) - result.t_send - true_ttft) / 1e9)
    return {"sent": len(results), "measured": len(errors), "incomplete": incomplete, "connects": connects,
            "errors": errors, "out": out_part, "early": early, "server_in": server_in, "role": role_err}


def _p(values: list[float]) -> str:
    return f"{fmt_ms(median(values))} / {fmt_ms(percentile(values, 99))}"


def run(quick: bool = False) -> Outcome:
    n = 50 if quick else 200
    out = Outcome()
    for where in ("in-process", "child process"):
        m = _measure(n, where)
        e = m["errors"]
        p99 = percentile(e, 99)
        tag = f"[{where}, Jarvis]"
        out.row(f"{tag} TTFT error p50 / p99 ({m['measured']} requests)", _p(e), "p99 < 1 ms", p99 < 1e-3)
        out.row(f"{tag}   t_send before the request is written (w − t_send)", _p(m["early"]))
        out.row(f"{tag}   first token out (t_first_token − e_token)", _p(m["out"]))
        out.row(f"{tag} connections opened per request; server reads the request (e_received − w, info)",
                f"{m['connects'] / max(m['sent'], 1):.2f}; {_p(m['server_in'])}")
        out.row(f"{tag} answers complete (role chunk, empty chunk, `: ping`, blank line)",
                f"{m['measured']}/{m['sent']}", "all", m["incomplete"] == 0 and m["measured"] > 0)
        out.row(f"{tag} role-chunk TTFT error (where `vllm bench serve` ends TTFT), p50", fmt_ms(median(m["role"]), 1))
        out.raw[f"{where}/Jarvis"] = {
            "requests": m["measured"], "error_p50_s": median(e), "error_p99_s": p99, "error_max_s": max(e),
            "early_p50_s": median(m["early"]), "early_p99_s": percentile(m["early"], 99),
            "out_p50_s": median(m["out"]), "out_p99_s": percentile(m["out"], 99),
            "server_in_p50_s": median(m["server_in"]), "connects_per_request": m["connects"] / max(m["sent"], 1),
            "role_chunk_error_p50_s": median(m["role"]), "incomplete": m["incomplete"]}
    out.raw["first_token_s"] = FIRST_TOKEN_S
    return out
