"""Every reported figure, defined once (docs/metrics.md): per-request figures from an InferResult, and statistics over
repetitions with linearly interpolated percentiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from .engine import InferResult

NS = 1e9

#: Column name -> (unit, definition). The report's Definitions sheet is built from this table.
DEFINITIONS: dict[str, tuple[str, str]] = {
    "ttfb_s": ("s", "Time to first byte: t_first_byte − t_send."),
    "ttft_s": ("s", "Time to first token (streaming only): t_first_token − t_send, where the first token is the first "
                    "chunk with non-empty content or reasoning text; role-only or empty deltas do not count."),
    "e2e_s": ("s", "End-to-end latency: t_last_token − t_send (trailing usage chunk and [DONE] excluded); "
                   "non-streaming: response complete − t_send."),
    "output_tokens": ("tokens", "Generated tokens: server-reported (usage.completion_tokens; Ollama eval_count) "
                                "when token_source = server, else the count of content chunks (token_source = "
                                "estimated)."),
    "itl_s": ("s", "Inter-token latency (per-token decode latency): (t_last_token − t_first_token) / (N − 1), "
                   "for N > 1, streaming only."),
    "decode_tps": ("tokens/s", "Decode rate: 1 / ITL."),
    "overall_tps": ("tokens/s", "Overall rate: N / E2E (includes time to first token)."),
    "server_decode_tps": ("tokens/s", "The engine's own decode rate where it reports one: Ollama eval_count / "
                                      "eval_duration."),
    "load_s": ("s", "The engine's own model-load time for this request (Ollama load_duration)."),
    "cold_start_s": ("s", "Cold start: wall time of the first request after the model loaded (the warmup request, "
                          "or the first sample when warmup is 0); never mixed into warm statistics."),
    "prompt_tokens": ("tokens", "Prompt tokens as the server reports them (usage.prompt_tokens; Ollama "
                                "prompt_eval_count)."),
}

#: Figures that get statistics over repetitions, in report order.
STAT_FIGURES = ("ttft_s", "e2e_s", "itl_s", "decode_tps", "overall_tps", "output_tokens")
STAT_NAMES = ("mean", "sd", "min", "p50", "p90", "p95", "p99", "max")


def _seconds(a: int | None, b: int | None) -> float | None:
    return (b - a) / NS if a is not None and b is not None else None


def figures(result: InferResult) -> dict[str, Any]:
    """The per-request figures of docs/metrics.md, in seconds and tokens/s; None where undefined."""
    n = result.output_tokens
    ttft = _seconds(result.t_send, result.t_first_token) if result.stream else None
    e2e = _seconds(result.t_send, result.t_last_token)
    itl = None
    if result.stream and n is not None and n > 1 and result.t_first_token is not None:
        span = _seconds(result.t_first_token, result.t_last_token)
        itl = span / (n - 1) if span is not None else None
    server = result.server or {}
    eval_count, eval_ns = server.get("eval_count"), server.get("eval_duration")
    load_ns = server.get("load_duration")
    return {
        "ttfb_s": _seconds(result.t_send, result.t_first_byte),
        "ttft_s": ttft,
        "e2e_s": e2e,
        "output_tokens": n,
        "token_source": result.token_source if n is not None else None,
        "prompt_tokens": result.prompt_tokens,
        "itl_s": itl,
        "decode_tps": 1 / itl if itl else None,
        "overall_tps": n / e2e if n and e2e else None,
        "server_decode_tps": eval_count / eval_ns * NS if eval_count and eval_ns else None,
        "load_s": load_ns / NS if isinstance(load_ns, (int, float)) else None,
    }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), `q` in [0, 100]."""
    if not sorted_values:
        raise ValueError("no values")
    pos = (len(sorted_values) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


@dataclass(frozen=True)
class Stats:
    count: int
    mean: float
    sd: float
    """Sample standard deviation (n − 1); 0 for a single value."""
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in STAT_NAMES}


def stats(values: Iterable[float | None]) -> Stats | None:
    data = sorted(v for v in values if v is not None and math.isfinite(v))
    if not data:
        return None
    n = len(data)
    mean = math.fsum(data) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in data) / (n - 1)) if n > 1 else 0.0
    return Stats(n, mean, sd, data[0], percentile(data, 50), percentile(data, 90), percentile(data, 95),
                 percentile(data, 99), data[-1])
