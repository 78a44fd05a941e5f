"""Model IDs holding control, bidi, line-separator or unpaired-surrogate characters are refused by the parser, with
the character shown escaped, never raw; fuzzed with hypothesis."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jarvis_core.engine import EngineSpec
from jarvis_core.errors import ModelIdError
from jarvis_core.modelid import MAX_ID_LENGTH, escape_unsafe, resolve
from jarvis_core.registry import EngineRegistry

C0 = [chr(c) for c in range(0x20)]
C1 = [chr(c) for c in range(0x80, 0xA0)]
BIDI = ["\u061c", "\u200e", "\u200f", *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A))]
UNSAFE = [*C0, "\x7f", *C1, *BIDI, "\u2028", "\u2029", "\ud800", "\udbff", "\udc00", "\udfff"]
RAW = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def registry() -> EngineRegistry:
    reg = EngineRegistry()
    reg.register(EngineSpec("ollama", ("ol_",)), "a")
    reg.register(EngineSpec("vllm", ("vllm:", "vl_")), "b")
    return reg


def escaped(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def refused(model_id: str) -> str:
    with pytest.raises(ModelIdError) as caught:
        resolve(model_id, registry(), "ollama")
    message = str(caught.value)
    assert RAW.search(message) is None, ascii(message)
    message.encode("utf-8")  # printable as UTF-8: no lone surrogate left
    return message


@pytest.mark.parametrize("char", UNSAFE, ids=[f"U+{ord(c):04X}" for c in UNSAFE])
@pytest.mark.parametrize("where", ["ol_m{}:1", "ol_m:1#stream{}", "{}ol_m:1", "ol_m:1{}", "m{}/x"])
def test_each_unsafe_character_is_refused_anywhere_and_shown_escaped(char, where):
    message = refused(where.format(char))
    assert escaped(char) in message and f"U+{ord(char):04X}" in message


def test_the_message_names_the_kind_and_position():
    assert "a control character (\\x1b, U+001B) at position 5" in refused("ol_m\x1b[31m:1")
    assert "a bidirectional-text control (\\u202e, U+202E) at position 14" in refused("ol_m:1#stream\u202e")
    assert "an unpaired surrogate (\\ud800, U+D800)" in refused("ol_\ud800x:1")
    assert "a line separator (\\u2028, U+2028)" in refused("ol_m\u2028:1")


def test_an_overlong_id_is_refused_in_one_short_line():
    message = refused("ol_" + "m" * (MAX_ID_LENGTH + 1))
    assert f"at most {MAX_ID_LENGTH}" in message and len(message) < 200


def test_ordinary_unicode_is_still_accepted():
    ref = resolve("ol_qwen2.5:0.5b-é中文", registry(), "ollama")
    assert ref.name == "qwen2.5:0.5b-é中文"


def test_escape_unsafe_keeps_ordinary_text_and_cuts_long_text():
    assert escape_unsafe("héllo wörld") == "héllo wörld"
    assert escape_unsafe("a\x1bb\u202ec") == "a\\x1bb\\u202ec"
    assert escape_unsafe("x" * 200, limit=10) == "x" * 10 + "…"


# --- properties ---------------------------------------------------------------------------------------------------

safe_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="".join(UNSAFE)), max_size=30)


@settings(max_examples=500, deadline=None)
@given(before=safe_text, char=st.sampled_from(UNSAFE), after=safe_text)
def test_any_id_holding_an_unsafe_character_is_refused(before, char, after):
    message = refused(before + char + after)
    assert escaped(RAW.search(before + char + after).group(0)) in message


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=80))
def test_no_error_message_ever_holds_a_raw_unsafe_character(text):
    try:
        ref = resolve(text, registry(), "ollama")
    except ModelIdError as exc:
        assert RAW.search(str(exc)) is None, ascii(str(exc))
        assert "\n" not in str(exc)
        return
    assert RAW.search(ref.canonical) is None and RAW.search(ref.name) is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(UNSAFE), st.characters()), min_size=1, max_size=40).map("".join))
def test_mixed_hostile_text_never_raises_anything_else(text):
    try:
        resolve(text, registry(), "ollama")
    except ModelIdError as exc:
        assert RAW.search(str(exc)) is None
