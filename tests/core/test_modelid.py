"""The model-ID grammar: prefixes, default engine, flags, canonical form."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jarvis_core.engine import EngineSpec
from jarvis_core.errors import EngineNotInstalledError, ModelIdError, UnknownFlagError
from jarvis_core.modelid import FLAG_SPECS, Flags, resolve
from jarvis_core.registry import EngineRegistry


@pytest.fixture
def registry() -> EngineRegistry:
    reg = EngineRegistry()
    reg.register(EngineSpec("ollama", ("ol_",)), "jarvis-ollama")
    reg.register(EngineSpec("vllm", ("vllm:", "vl_")), "jarvis-vllm")
    return reg


def test_prefix_routes_and_is_case_insensitive(registry):
    ref = resolve("OL_qwen2.5:0.5b#stream", registry, "ollama")
    assert (ref.engine, ref.name, ref.flags.stream) == ("ollama", "qwen2.5:0.5b", True)
    assert ref.canonical == "ol_qwen2.5:0.5b#stream"


def test_vllm_prefixes_share_one_canonical_form(registry):
    a = resolve("vllm:Qwen/Qwen2.5-0.5B-Instruct", registry, "ollama")
    b = resolve("VL_Qwen/Qwen2.5-0.5B-Instruct", registry, "ollama")
    assert a == b
    assert a.engine == "vllm" and a.name == "Qwen/Qwen2.5-0.5B-Instruct"
    assert a.canonical == "vllm:Qwen/Qwen2.5-0.5B-Instruct"


@pytest.mark.parametrize("model_id", ["qwen2.5:0.5b", "library/llama3", "hf.co/org/repo:Q4_K_M"])
def test_unprefixed_id_with_colon_or_slash_goes_to_default_engine(registry, model_id):
    ref = resolve(model_id, registry, "ollama")
    assert ref.engine == "ollama" and ref.name == model_id


def test_default_engine_comes_from_config(registry):
    assert resolve("Qwen/Qwen2.5-0.5B-Instruct", registry, "vllm").engine == "vllm"


def test_unprefixed_id_without_colon_or_slash_shows_format_and_prefixes(registry):
    with pytest.raises(ModelIdError) as exc:
        resolve("llama3", registry, "ollama")
    message = str(exc.value)
    assert "[prefix]name[#flag...]" in message
    assert "ol_ (ollama)" in message and "vllm: (vllm)" in message


def test_flags_never_reach_the_model_name(registry):
    ref = resolve("ol_qwen2.5:0.5b#stream#repeat=5#temperature=0.2", registry, "ollama")
    assert ref.name == "qwen2.5:0.5b"
    assert ref.flags == Flags(stream=True, repeat=5, temperature=0.2)
    assert ref.canonical == "ol_qwen2.5:0.5b#stream#repeat=5#temperature=0.2"


def test_canonical_form_orders_flags_and_drops_defaults(registry):
    ref = resolve("ol_m:1#repeat=3#stream=false#seed=7", registry, "ollama")
    assert ref.canonical == "ol_m:1#repeat=3#seed=7"


@pytest.mark.parametrize("model_id, fragment", [
    ("ol_m:1#bogus", "Unknown flag '#bogus'"),
    ("ol_m:1#repeat", "needs a value"),
    ("ol_m:1#repeat=0", "expects an integer from 1 to 10000"),
    ("ol_m:1#repeat=x", "expects an integer"),
    ("ol_m:1#temperature=nan", "expects a number from 0 to 2"),
    ("ol_m:1#stream=maybe", "is a switch"),
    ("ol_m:1#stream#stream", "given twice"),
])
def test_bad_flags_are_named(registry, model_id, fragment):
    with pytest.raises(UnknownFlagError) as exc:
        resolve(model_id, registry, "ollama")
    assert fragment in str(exc.value)


def test_unknown_flag_lists_the_known_ones(registry):
    with pytest.raises(UnknownFlagError) as exc:
        resolve("ol_m:1#fast", registry, "ollama")
    for spec in FLAG_SPECS:
        assert f"#{spec.name}" in str(exc.value)


@pytest.mark.parametrize("model_id", ["", "   ", "ol_", "ol_#stream", "ol_a b:1", "ol_m:1##stream"])
def test_malformed_ids_are_errors(registry, model_id):
    with pytest.raises(ModelIdError):
        resolve(model_id, registry, "ollama")


def test_prefix_of_an_uninstalled_first_party_plugin_says_what_to_install():
    reg = EngineRegistry()
    reg.register(EngineSpec("ollama", ("ol_",)), "jarvis-ollama")
    with pytest.raises(EngineNotInstalledError, match="pip install jarvis-vllm"):
        resolve("vllm:Qwen/Qwen2.5-0.5B-Instruct", reg, "ollama")


def test_default_engine_not_installed_is_an_error():
    with pytest.raises(EngineNotInstalledError, match="default_engine"):
        resolve("qwen2.5:0.5b", EngineRegistry(), "ollama")


# --- properties --------------------------------------------------------------------------------------------------

BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
name_chars = st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"),
                           blacklist_characters="#\x85\xa0" + BIDI_CONTROLS)  # refused by the parser
part = st.text(name_chars, min_size=1, max_size=15)
names = st.builds(lambda a, sep, b: f"{a}{sep}{b}", part, st.sampled_from([":", "/"]), part)
flag_values = st.fixed_dictionaries({}, optional={
    "stream": st.booleans(),
    "repeat": st.integers(1, 10_000),
    "warmup": st.integers(0, 100),
    "max_tokens": st.integers(1, 10_000_000),
    "temperature": st.floats(0, 2, allow_nan=False),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "timeout": st.floats(0.001, 86_400, allow_nan=False),
})


@settings(max_examples=300)
@given(prefix=st.sampled_from(["ol_", "OL_", "vllm:", "Vl_", ""]), name=names, flags=flag_values)
def test_round_trip_through_the_canonical_form(prefix, name, flags):
    reg = EngineRegistry()
    reg.register(EngineSpec("ollama", ("ol_",)), "a")
    reg.register(EngineSpec("vllm", ("vllm:", "vl_")), "b")
    text = prefix + name + "".join(f"#{k}" if v is True else f"#{k}={v!r}" if isinstance(v, float) else f"#{k}={v}"
                                   for k, v in flags.items())
    try:
        ref = resolve(text, reg, "ollama")
    except ModelIdError:
        # Only legitimate refusals: the name itself starts like a known prefix of an uninstalled plugin.
        assert not prefix
        return
    again = resolve(ref.canonical, reg, "ollama")
    assert again == ref
    assert ref.flags == Flags(**flags)
    assert "#" not in ref.name


@settings(max_examples=500)
@given(st.text(max_size=60))
def test_no_input_raises_anything_but_the_documented_error(text):
    reg = EngineRegistry()
    reg.register(EngineSpec("ollama", ("ol_",)), "a")
    reg.register(EngineSpec("vllm", ("vllm:", "vl_")), "b")
    try:
        ref = resolve(text, reg, "ollama")
    except ModelIdError:
        return
    assert ref.name and "#" not in ref.name
    assert resolve(ref.canonical, reg, "ollama") == ref
