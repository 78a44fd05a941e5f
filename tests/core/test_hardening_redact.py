"""One redaction function for every text that leaves Jarvis: secret-looking options, URL user information,
secret-named environment values, Authorization headers, and secrets given explicitly."""

from __future__ import annotations

import json
import os
import shlex
import time

import pytest

from jarvis_core.redact import environment_secrets, is_secret_name, redact, redact_argv


@pytest.fixture(autouse=True)
def no_secret_environment(monkeypatch):
    """The machine's own secret-named variables must not change what these tests expect."""
    for name in list(os.environ):
        if is_secret_name(name):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("text, expected", [
    ("vllm serve m --api-key sk-abc123 --port 8000", "vllm serve m --api-key *** --port 8000"),
    ("llama-server --hf-token hf_abcdef -m x", "llama-server --hf-token *** -m x"),
    ("run --token=abc123 --x", "run --token=*** --x"),
    ("run --password hunter22", "run --password ***"),
    ("run --db-secret=s3cr3t", "run --db-secret=***"),
    ("run --ssl-keyfile /k.pem", "run --ssl-keyfile ***"),
    ("run -token abcdef", "run -token ***"),
    ("HF_TOKEN=hf_xyz docker run -e WANDB_API_KEY=abcd1234 img", "HF_TOKEN=*** docker run -e WANDB_API_KEY=*** img"),
    ("Namespace(api_key='sk-1234', port=8000, max_tokens=128)", "Namespace(api_key=***, port=8000, max_tokens=128)"),
    ("non-default args: {'api_key': 'sk-1234', 'model': 'x'}", "non-default args: {'api_key': '***', 'model': 'x'}"),
    ('{"hf_token": "hf_abc", "n": 1}', '{"hf_token": "***", "n": 1}'),
    ("['vllm', '--api-key', 'sk 1234', '--port', '8000']", "['vllm', '--api-key', '***', '--port', '8000']"),
    ('["vllm", "--api-key", "sk \\"12\\" 34", "--port"]', '["vllm", "--api-key", "***", "--port"]'),
    ('curl -H "Authorization: Bearer eyJhbG.ci.Oi" x', 'curl -H "Authorization: Bearer ***" x'),
    ("authorization: Basic dXNlcjpwYXNz", "authorization: Basic ***"),
    ("{'Authorization': 'Bearer abc123'}", "{'Authorization': 'Bearer ***'}"),
    ("sent Bearer abc.def-123 to it", "sent Bearer *** to it"),
    ("http://user:p4ss@host:8000/v1", "http://***@host:8000/v1"),
    ("http://user:p@ss@host/x", "http://***@host/x"),
    ("OLLAMA_HOST=https://tok123@ollama.example:443", "OLLAMA_HOST=https://***@ollama.example:443"),
    ("ssh://admin@gpu-box", "ssh://***@gpu-box"),
    ("https://x.com/?api_key=abc123&q=1", "https://x.com/?api_key=***&q=1"),
    ("don't pass --api-key abc, it's bad", "don't pass --api-key ***, it's bad"),
    ("--api-key 'unterminated", "--api-key ***"),
])
def test_credentials_are_masked_where_they_appear(text, expected):
    assert redact(text) == expected


def test_shlex_joined_commands_lose_every_secret_value():
    argv = ["vllm", "serve", "--hf-token", "a b'c", "--token=x y z", "--api-key", "--dash-first",
            "--max-num-batched-tokens", "8192", "--tokenizer", "Qwen/Q", "HF_TOKEN=q r"]
    text = redact(shlex.join(argv))
    assert text == ("vllm serve --hf-token *** --token=*** --api-key --dash-first --max-num-batched-tokens 8192 "
                    "--tokenizer Qwen/Q HF_TOKEN=***")


def test_redact_argv():
    argv = ["vllm", "--api-key", "s", "--token=abc", "-e", "HF_TOKEN=zz", "--port", "1", "--api-key", "--port", "2",
            "--url", "http://u:pw@h", "--max-tokens", "5"]
    assert redact_argv(argv) == ["vllm", "--api-key", "***", "--token=***", "-e", "HF_TOKEN=***", "--port", "1",
                                 "--api-key", "--port", "2", "--url", "http://***@h", "--max-tokens", "5"]
    assert redact_argv(["x", "--model", "m-SECRETVALUE"], secrets=["SECRETVALUE"]) == ["x", "--model", "m-***"]


@pytest.mark.parametrize("name, secret", [
    ("HF_TOKEN", True), ("WANDB_API_KEY", True), ("DB_PASSWORD", True), ("AWS_SECRET_ACCESS_KEY", True),
    ("--api-key", True), ("--hf-token", True), ("hf_token", True), ("TOKENIZERS_PARALLELISM", False),
    ("--max-num-batched-tokens", False), ("--tokenizer", False), ("max_tokens", False), ("--port", False),
])
def test_secret_names(name, secret):
    assert is_secret_name(name) is secret


def test_secret_named_environment_values_are_masked_longest_first(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefgh")
    monkeypatch.setenv("MY_KEY", "hf_abcd")
    monkeypatch.setenv("SHORT_TOKEN", "abc")           # too short to tell from ordinary text
    monkeypatch.setenv("USE_SECRET", "true")          # a switch, not a secret
    monkeypatch.setenv("HOME_DIRECTORY", "hf_abcdefgh_not_secret_named")
    assert redact("got hf_abcdefgh and hf_abcd, abc, true") == "got *** and ***, abc, true"
    assert environment_secrets() == tuple(sorted({"hf_abcdefgh", "hf_abcd"}))


def test_environment_changes_are_seen_at_once(monkeypatch):
    assert redact("value s3cr3t-v4lue") == "value s3cr3t-v4lue"
    monkeypatch.setenv("APP_PASSWORD", "s3cr3t-v4lue")
    assert redact("value s3cr3t-v4lue") == "value ***"
    monkeypatch.delenv("APP_PASSWORD")
    assert redact("value s3cr3t-v4lue") == "value s3cr3t-v4lue"


def test_explicit_secrets_are_masked_also_as_json_shlex_and_url_quote_them():
    secret = 'p@ss "wörd"/x'
    for form in (secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
                 shlex.quote(secret)):
        assert redact(f"before {form} after", [secret]) == "before *** after"
    assert redact("p%40ss%20%22w%C3%B6rd%22%2Fx", [secret]) == "***"


def test_ordinary_text_is_returned_unchanged():
    lines = ["Loaded qwen2.5:0.5b in 3.2 s at http://127.0.0.1:11434/api/chat",
             "INFO engine.py:123] Avg prompt throughput: 12.3 tokens/s, running: 1 reqs",
             "vllm serve Qwen/Qwen2.5-0.5B --port 8300 --max-model-len 4096 --max-num-batched-tokens 8192",
             "mail me@example.com", "[one] ol_qwen2.5:0.5b#stream  ok  12.3 tok/s", "keep_alive=5m max_tokens=128",
             "the bearer of bad news", "monkey business"]
    for line in lines:
        assert redact(line) is line or redact(line) == line


def test_fast_enough_for_every_console_line(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnop")
    lines = ["INFO 2024-01-01 12:00:00 engine.py:123] Avg prompt throughput: 12.3 tokens/s, running: 1 reqs",
             "  [one] ol_qwen2.5:0.5b#stream  t  ok  ttft 45 ms  12.3 tok/s"] * 5000
    started = time.perf_counter()
    for line in lines:
        redact(line)
    assert time.perf_counter() - started < 2.0  # about 20 µs a line here; a loaded CI machine gets ample margin


@pytest.mark.parametrize("text", ["a." * 50_000 + "@", "--a." * 25_000, "'" * 100_000 + "key", '"a": ' * 20_000 + "key",
                                  "bearer " * 30_000 + "1", "http://" * 20_000 + "@", "--api-key " * 20_000,
                                  "\\" * 100_000 + " token"])
def test_hostile_long_lines_take_linear_time(text):
    started = time.perf_counter()
    redact(text)
    assert time.perf_counter() - started < 3.0


@pytest.mark.parametrize("value", ["run --api-key sk-live-0123456789", "run --api-key ***", "serve --token=abc123xyz"])
def test_a_record_whose_text_ends_with_a_secret_flag_stays_readable(tmp_path, value):
    """A `reason` or `argv` ending in `--api-key X`: the mask must not run past the JSON string's closing quote and
    swallow the rest of the record (found by the report.html work)."""
    from jarvis_core.results import ResultsWriter, read_results

    path = tmp_path / "results.jsonl"
    writer = ResultsWriter(path)
    writer.write({"type": "run", "argv": value, "x": 1, "nested": {"api_key": "sk-0123456789", "n": [value]}})
    writer.close()
    text = path.read_text(encoding="utf-8")
    assert "sk-live" not in text and "abc123xyz" not in text and "sk-0123456789" not in text
    (record,) = list(read_results(path))
    assert record["x"] == 1 and record["argv"].endswith("***") and record["nested"]["api_key"] == "***"
    assert record["nested"]["n"] == [record["argv"]]


def test_redact_data_masks_strings_and_secret_named_keys():
    from jarvis_core.redact import redact_data

    data = {"argv": "x --api-key abcdef123", "hf_token": "hf_abcdefgh", "tokens": 5, "list": ["Bearer abcdefgh1"],
            "plain": "hello"}
    assert redact_data(data) == {"argv": "x --api-key ***", "hf_token": "***", "tokens": 5, "list": ["Bearer ***"],
                                 "plain": "hello"}
