"""Fuzzing redaction: no secret from any source (option values, URL user information, secret-named environment
variables, Authorization headers, explicit secrets) survives in any form the text takes on its way out (plain,
shlex-joined, JSON, repr), and ordinary text comes back unchanged."""

from __future__ import annotations

import json
import os
import shlex
from contextlib import contextmanager
from urllib.parse import quote

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from jarvis_core.redact import MASK, is_secret_name, redact, redact_argv

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextmanager
def environment(**values: str):
    """Exactly these secret-named variables (the machine's own are set aside meanwhile)."""
    saved = {k: v for k, v in os.environ.items() if is_secret_name(k)}
    for name in saved:
        del os.environ[name]
    os.environ.update(values)
    try:
        yield
    finally:
        for name in values:
            os.environ.pop(name, None)
        os.environ.update(saved)


# Secrets: anything printable or not, without the mask's own character (a secret holding '***' could be re-formed by
# the mask itself) and without NUL (which no command line or environment can carry).
secret_chars = st.characters(blacklist_characters="*\x00", blacklist_categories=("Cs",))
secrets = st.text(secret_chars, min_size=4, max_size=24).filter(lambda s: s.strip().lower() not in {
    "true", "false", "none", "null", "unset", "yes", "no", "on", "off", "auto", "default"})
words = st.text(st.characters(whitelist_categories=("Ll", "Lu", "Nd"), whitelist_characters="-_./:"), min_size=1,
                max_size=10)
ordinary_args = st.lists(st.one_of(words, st.sampled_from(["--port", "8000", "--max-model-len", "4096", "-m",
                                                           "--max-num-batched-tokens", "--tokenizer", "serve"])),
                         max_size=5)
secret_words = st.sampled_from(["key", "token", "secret", "password", "KEY", "Token", "apikey", "passwd"])
secret_flags = st.builds(lambda dashes, a, word, b: f"{dashes}{a}{word}{b}", st.sampled_from(["--", "-"]),
                         st.sampled_from(["", "api-", "hf-", "hf_", "db-", "x.", "openai-"]), secret_words,
                         st.sampled_from(["", "-file", "_value", "-2"]))


def survives(secret: str, text: str) -> bool:
    return secret in text


@FUZZ
@given(before=ordinary_args, flag=secret_flags, secret=secrets, after=ordinary_args, joined=st.booleans())
def test_option_values_never_survive(before, flag, secret, after, joined):
    assume(not secret.startswith("--"))
    if joined:
        argv = ["prog", *before, f"{flag}={secret}", *after]
    else:
        argv = ["prog", *before, flag, secret, *after]
    others = " ".join(["prog", *before, flag, *after])
    assume(secret not in others and shlex.quote(secret) not in shlex.join(["prog", *before, flag, *after]))
    with environment():
        out = redact_argv(argv)
        assert not any(survives(secret, part) for part in out), out
        assert not survives(secret, redact(shlex.join(argv)))
        assert not survives(shlex.quote(secret), redact(shlex.join(argv)))
        assert not survives(json.dumps(secret)[1:-1], redact(json.dumps(argv)))
        assert not survives(secret, redact(" ".join(argv))) or any(c.isspace() for c in secret)


@FUZZ
@given(user=secrets, password=secrets, host=words, scheme=st.sampled_from(["http", "https", "tcp", "ssh"]),
       around=words)
def test_url_user_information_never_survives(user, password, host, scheme, around):
    userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}"
    assume(quote(password, safe="") not in f"{host} {around}")
    text = f"{around} {scheme}://{userinfo}@{host}:8000/v1 {around}"
    with environment():
        out = redact(text)
    assert quote(password, safe="") not in out and f"{scheme}://{MASK}@{host}:8000/v1" in out


@FUZZ
@given(name=st.builds(lambda a, w, b: f"{a}{w}{b}", st.sampled_from(["", "HF_", "WANDB_API_", "MY_APP_", "DB_"]),
                      st.sampled_from(["TOKEN", "KEY", "SECRET", "PASSWORD"]), st.sampled_from(["", "_2", "_FILE"])),
       secret=secrets, before=st.text(max_size=20), after=st.text(max_size=20))
def test_secret_named_environment_values_never_survive(name, secret, before, after):
    assume(secret not in before and secret not in after)
    with environment(**{name: secret}):
        text = before + secret + after
        assert not survives(secret, redact(text))
        assert not survives(secret, redact(shlex.join(["run", text])))
        assert not survives(json.dumps(secret)[1:-1], redact(json.dumps({"detail": text})))
        assert not survives(json.dumps(secret, ensure_ascii=False)[1:-1],
                            redact(json.dumps({"detail": text}, ensure_ascii=False)))


token_chars = st.characters(whitelist_categories=("Ll", "Lu", "Nd"), whitelist_characters="-._~+/=")


@FUZZ
@given(token=st.text(token_chars, min_size=4, max_size=40), scheme=st.sampled_from(["Bearer", "bearer", "Basic",
                                                                                     "token"]),
       style=st.sampled_from(["Authorization: {s} {t}", "authorization={s} {t}", "{{'Authorization': '{s} {t}'}}",
                              '-H "Authorization: {s} {t}"', '"authorization": "{s} {t}"']))
def test_authorization_values_never_survive(token, scheme, style):
    text = style.format(s=scheme, t=token)
    assume(token not in style.format(s=scheme, t=""))
    with environment():
        assert not survives(token, redact(text))


@FUZZ
@given(secret=secrets, before=st.text(max_size=30), after=st.text(max_size=30), others=st.lists(secrets, max_size=3))
def test_explicit_secrets_never_survive(secret, before, after, others):
    assume(secret not in before and secret not in after)
    text = before + secret + after
    with environment():
        assert not survives(secret, redact(text, [secret, *others]))
        assert not survives(json.dumps(secret)[1:-1], redact(json.dumps([text]), [secret]))
        assert not survives(shlex.quote(secret), redact(shlex.join([text]), [secret]))
        assert all(not survives(secret, part) for part in redact_argv(["x", text], secrets=[secret]))


ordinary_words = st.sampled_from([
    "Loaded", "model", "qwen2.5:0.5b", "ol_qwen2.5:0.5b#stream", "vllm:Qwen/Qwen2.5-0.5B-Instruct", "in", "3.2", "s",
    "http://127.0.0.1:11434/api/chat", "https://huggingface.co/Qwen/Qwen2.5-0.5B", "--port", "8300",
    "--max-model-len", "4096", "--max-num-batched-tokens", "8192", "--tokenizer", "Qwen/Qwen2.5", "max_tokens=128",
    "tokens/s", "12.3", "ok", "MISSING", "unavailable", "[one]", "ttft", "45 ms", "GPU", "memory", "came", "back",
    "/home/user/.cache/jarvis", "C:\\Users\\x", "it's", "\"quoted\"", "(paren)", "a=b", "x,y", "monkey", "keyboard",
    "secretary", "passwords:", "tokenizer.json", "e-mail:", "me@example.com", "100%", "→", "中文", "é",
])


@FUZZ
@given(st.lists(ordinary_words, max_size=20), st.sampled_from([" ", "  ", ", ", "\t", "\n"]))
def test_ordinary_text_is_unchanged(parts, sep):
    text = sep.join(parts)
    with environment():
        assert redact(text) == text
        assert redact_argv(parts) == parts


@FUZZ
@given(st.text(max_size=60))
def test_text_without_credential_markers_is_unchanged(text):
    lowered = text.lower()
    assume(not any(marker in lowered for marker in ("key", "token", "secret", "passw", "authoriz", "bearer", "@")))
    with environment():
        assert redact(text) is text


@FUZZ
@given(st.text(max_size=80), st.lists(secrets, max_size=2))
def test_redaction_never_raises_and_is_stable(text, given_secrets):
    with environment():
        once = redact(text, given_secrets)
        assert redact(once, given_secrets) == redact(redact(once, given_secrets), given_secrets)
