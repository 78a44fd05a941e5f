"""The one change for `jarvis_core.openai_api` that benchmarks/RESULTS.md measured and did not adopt: a fast path for
the event shape that dominates a vLLM stream (benchmark-only; nothing in Jarvis uses it).

The other changes prototyped here (t_send from httpcore's trace event, the body read to its end after `[DONE]`, the
lean SSE loop with a prebuilt `JSONDecoder`, pool limits of 100) went into `jarvis_core` in commit c4d9846.

The fast path: an ordinary vLLM token chunk is
`data: {..."choices":[{"index":0,"delta":{"content":"…"},"logprobs":null,"finish_reason":null}]}`. When a `data:`
line ends exactly so, has that one choice and no `usage`/`error` key before it, only its content string is decoded
(`json.decoder.scanstring`, the C routine `json` itself uses); every other event, and every engine whose chunks look
different, goes to `openai_api._event` (the full `JSONDecoder` path). It changes CPU cost only, never a stamp: the
line keeps the stamp of the network read it came in.

Why it was not adopted (RESULTS.md, "What limits item 2"): it saves about 1.3 µs per chunk (the only reader measured
under 1.25× the bare httpx reader, and then only barely), 0.1 % of one core at 1,000 tokens/s, and in exchange ties
Jarvis's hot path to one server's exact byte layout.

`chat_fast` is `openai_api.chat` itself, not a copy: the same code objects of `chat` and `_read_sse`, run with a copy
of `openai_api`'s globals in which `_read_sse`'s per-line handler `_event` is `_event_fast`. So the only new code is
`_event_fast`, and the benchmark measures exactly what adopting it in `_read_sse` would give.
"""

from __future__ import annotations

import json
import types
from typing import TYPE_CHECKING, Any, Callable

from jarvis_core import openai_api
from jarvis_core.openai_api import _event

if TYPE_CHECKING:
    from jarvis_core.engine import InferResult

_scanstring = json.decoder.scanstring
_HEAD = '"choices":[{"index":0,"delta":{"content":"'
_TAIL = '},"logprobs":null,"finish_reason":null}]}'
_TAIL_B = _TAIL.encode()


def _event_fast(line: bytes, arrived: int, result: InferResult, pieces: list[str]) -> bool:
    """`openai_api._event`, with the content of an ordinary non-empty vLLM token chunk taken without decoding the
    rest of it."""
    if line.endswith(_TAIL_B):
        try:
            s = line.decode("utf-8")
            i = s.find(_HEAD, 5)
            if i >= 0 and s.find('"usage"', 5, i) < 0 and s.find('"error"', 5, i) < 0:
                text, end = _scanstring(s, i + len(_HEAD))
                if text and end == len(s) - len(_TAIL):
                    result.chunk_times.append(arrived)
                    pieces.append(text)
                    return False
        except ValueError:  # UnicodeDecodeError is one; the full path reports the line
            pass
    return _event(line, arrived, result, pieces)


def _rebound(fn: Callable[..., Any], namespace: dict[str, Any]) -> Any:
    """`fn`'s own code, looking its globals up in `namespace`."""
    clone = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__)
    clone.__kwdefaults__ = fn.__kwdefaults__
    clone.__doc__ = fn.__doc__
    return clone


if "_event" not in openai_api._read_sse.__code__.co_names or "_read_sse" not in openai_api.chat.__code__.co_names:
    raise ImportError("openai_api.chat no longer reads SSE through _read_sse and _event: update benchmarks/proposed.py")
_namespace = dict(vars(openai_api), _event=_event_fast)
_namespace["_read_sse"] = _rebound(openai_api._read_sse, _namespace)
chat_fast = _rebound(openai_api.chat, _namespace)
