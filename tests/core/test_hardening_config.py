"""Hostile and broken YAML, and numbers out of range: every one ends in one ConfigError line naming the file (and the
line, or the key path), quickly; nothing else escapes."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from jarvis_core.config import (MAX_ALIAS_EXPANSION, MAX_YAML_BYTES, PORT, Config, Timeouts, bounded,
                                build_settings, field_bounds, load_config, load_yaml)
from jarvis_core.errors import ConfigError


def write(tmp_path: Path, data: bytes | str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def error_of(path: Path, load=load_yaml) -> str:
    with pytest.raises(ConfigError) as caught:
        load(path)
    message = str(caught.value)
    assert "\n" not in message and "\x1b" not in message, message
    assert message.startswith(str(path)), message
    return message


def billion_laughs(levels: int = 9) -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    previous = "a"
    for name in "bcdefghijklmnop"[:levels - 1]:
        text += f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]\n"
        previous = name
    return text


# --- size, encoding, binary --------------------------------------------------------------------------------------


def test_a_file_over_the_size_limit_names_the_file_and_the_limit(tmp_path):
    path = write(tmp_path, b"a: " + b"x" * MAX_YAML_BYTES + b"\n")
    assert "larger than 1 MiB" in error_of(path)


def test_a_file_at_the_limit_is_read(tmp_path):
    body = b"a: " + b"x" * (MAX_YAML_BYTES - 5) + b"\n"
    assert len(body) <= MAX_YAML_BYTES
    assert load_yaml(write(tmp_path, body)) == {"a": "x" * (MAX_YAML_BYTES - 5)}


@pytest.mark.parametrize("data, fragment", [
    ("a: café\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 on line 1); save it as UTF-8"),
    (b"a: 1\nb: \xff\xfe\n", "not UTF-8 text (byte 0xff on line 2)"),
    ("a: 1\n".encode("utf-16"), "UTF-16 text; save it as UTF-8"),
    ("a: 1\n".encode("utf-32"), "UTF-32 text; save it as UTF-8"),
    (b"\x7fELF\x02\x01\x01\x00\x00\x00", "binary, not YAML text"),
    (b"a: 1\nb: x\x01y\n", ":2:5: invalid YAML: "),
])
def test_files_that_are_not_utf8_text_are_one_clear_error(tmp_path, data, fragment):
    assert fragment in error_of(write(tmp_path, data))


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    assert load_yaml(write(tmp_path, b"\xef\xbb\xbfdefault_engine: ollama\n")) == {"default_engine": "ollama"}


def test_a_folder_or_unreadable_file_is_one_error(tmp_path):
    (tmp_path / "dir.yaml").mkdir()
    assert "cannot read the file" in error_of(tmp_path / "dir.yaml")


# --- aliases ------------------------------------------------------------------------------------------------------


def test_billion_laughs_ends_in_one_clear_error_in_well_under_a_second(tmp_path):
    path = write(tmp_path, billion_laughs(9))
    started = time.perf_counter()
    message = error_of(path)
    assert time.perf_counter() - started < 0.5
    assert f"aliases expand to more than {MAX_ALIAS_EXPANSION} values" in message
    assert message.startswith(f"{path}:")  # and the line where it happens


def test_billion_laughs_through_the_config_and_setups_loaders(tmp_path):
    from jarvis_core.setups import load_suite

    path = write(tmp_path, billion_laughs(12))
    started = time.perf_counter()
    error_of(path, load_config)
    error_of(path, load_suite)
    assert time.perf_counter() - started < 1.0


def test_mapping_laughs_are_bounded_too(tmp_path):
    text = "a: &a {x1: lol, x2: lol, x3: lol, x4: lol, x5: lol, x6: lol, x7: lol, x8: lol}\n"
    previous = "a"
    for name in "bcdefgh":
        text += f"{name}: &{name} {{" + ", ".join(f"k{i}: *{previous}" for i in range(8)) + "}\n"
        previous = name
    assert "aliases expand" in error_of(write(tmp_path, text))


@pytest.mark.parametrize("text", ["a: &a [*a]\n", "a: &a {b: *a}\n", "a: &a [1, {b: [2, *a]}]\n"])
def test_an_alias_inside_its_own_anchor_is_an_error(tmp_path, text):
    assert "an alias refers to the block that contains it" in error_of(write(tmp_path, text))


def test_ordinary_aliases_and_merge_keys_still_work(tmp_path):
    text = ("base: &base {x: 1, y: 2}\nfirst: &models [ol_a:1, ol_b:2]\nsecond: *models\n"
            "derived:\n  <<: *base\n  x: 3\n")
    data = load_yaml(write(tmp_path, text))
    assert data["second"] == ["ol_a:1", "ol_b:2"]
    assert data["derived"] == {"x": 3, "y": 2}


def test_many_references_to_one_anchor_within_the_bound_are_fine(tmp_path):
    text = "a: &a [" + ",".join(["x"] * 1000) + "]\nb: [" + ",".join(["*a"] * 90) + "]\n"
    assert len(load_yaml(write(tmp_path, text))["b"]) == 90


# --- duplicate keys, nesting, bad values ------------------------------------------------------------------------


def test_a_duplicate_key_names_the_key_and_both_lines(tmp_path):
    path = write(tmp_path, "timeouts:\n  start: 1\n  stop: 2\n  start: 3\n")
    message = error_of(path)
    assert message.startswith(f"{path}:4:3: ") and "duplicate key 'start' (first on line 2)" in message


def test_a_duplicate_top_level_section_is_an_error(tmp_path):
    assert "duplicate key 'engines'" in error_of(write(tmp_path, "engines: {}\nloadouts: {}\nengines: {}\n"))


def test_keys_that_differ_in_type_are_not_duplicates(tmp_path):
    assert load_yaml(write(tmp_path, "1: a\n'1': b\n")) == {1: "a", "1": "b"}


@pytest.mark.parametrize("text", ["[" * 200 + "]" * 200, "- " * 200 + "x\n", "a:\n" + "".join(
    "  " * i + f"k{i}:\n" for i in range(1, 120)) + "  " * 120 + "v\n"])
def test_deep_nesting_is_an_error(tmp_path, text):
    message = error_of(write(tmp_path, text))
    assert "nested" in message or "nesting" in message


def test_deep_nesting_in_the_pure_python_parser_is_an_error_too(tmp_path, monkeypatch):
    import yaml

    from jarvis_core import config

    monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    monkeypatch.setattr(config, "_LOADER", None)
    try:
        started = time.perf_counter()
        assert "nested deeper than" in error_of(write(tmp_path, "[" * 5000 + "]" * 5000))
        assert time.perf_counter() - started < 1.0
        assert "aliases expand" in error_of(write(tmp_path, billion_laughs(9), "laughs.yaml"))
        assert "duplicate key 'a'" in error_of(write(tmp_path, "a: 1\na: 2\n", "dup.yaml"))
    finally:
        config._LOADER = None


@pytest.mark.parametrize("text, fragment", [
    ("a: 1\nb: 2001-13-01\n", ":2:4: invalid YAML: invalid value: month must be in 1..12"),
    ("a: !!int abc\n", "invalid YAML: invalid value"),
    ("a: !!float x\n", "invalid YAML: invalid value"),
    ("a: !!int " + "1" * 5000 + "\n", "invalid YAML: invalid value"),
    ("a: !!python/object:os.system x\n", "invalid YAML: could not determine a constructor"),
    ("{[1]: 2}\n", "invalid YAML: found unhashable key"),
    ("a: *nowhere\n", "invalid YAML: found undefined alias"),
    ("a: [1\n", "invalid YAML"),
])
def test_bad_values_and_tags_name_file_and_line(tmp_path, text, fragment):
    assert fragment in error_of(write(tmp_path, text))


def test_control_characters_in_keys_are_shown_escaped(tmp_path):
    path = write(tmp_path, '"bad\\e[31m\\u202e": 1\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\x1b" not in message and "\u202e" not in message
    assert "bad\\x1b[31m\\u202e" in message


# --- numbers in range -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, fragment", [
    ("timeouts: {start: .nan}\n", "at 'timeouts.start': expected a finite number, found nan"),
    ("timeouts: {request: .inf}\n", "at 'timeouts.request': expected a finite number"),
    ("timeouts: {stop: -.inf}\n", "at 'timeouts.stop': expected a finite number"),
    ("timeouts: {stop: 1.0e+400}\n", "at 'timeouts.stop': expected a finite number"),
    ("timeouts: {start: 0x" + "f" * 400 + "}\n", "at 'timeouts.start': expected a finite number, found a number of"),
    ("timeouts: {start: 0}\n", "at 'timeouts.start': expected seconds above 0, at most 604800 (a week), found 0.0"),
    ("timeouts: {request: -5}\n", "at 'timeouts.request': expected seconds above 0"),
    ("timeouts: {stop: 604801}\n", "at 'timeouts.stop': expected seconds above 0"),
])
def test_timeouts_are_positive_finite_and_bounded(tmp_path, text, fragment):
    assert fragment in error_of(write(tmp_path, text), load_config)


def test_timeouts_at_their_bounds_are_accepted(tmp_path):
    config = load_config(write(tmp_path, "timeouts: {start: 0.001, request: 604800, stop: 1}\n"))
    assert config.timeouts == Timeouts(start=0.001, request=604800.0, stop=1.0)


@dataclass
class PluginSettings:
    port: int = 8300
    metrics_port: int | None = None
    ports: list[int] = dataclasses.field(default_factory=list)
    ratio: float = bounded(0.5, above=0, high=1)
    workers: int = bounded(1, low=1, high=64)
    scores: list[float] = bounded(default_factory=list, low=0)
    count: int = 0


@pytest.mark.parametrize("values, path, fragment", [
    ({"port": 0}, "port", "expected a port from 1 to 65535, found 0"),
    ({"port": 65536}, "port", "expected a port from 1 to 65535, found 65536"),
    ({"metrics_port": -1}, "metrics_port", "expected a port from 1 to 65535"),
    ({"ratio": 0}, "ratio", "expected a number above 0 and at most 1, found 0.0"),
    ({"ratio": 1.5}, "ratio", "expected a number above 0 and at most 1"),
    ({"ratio": float("nan")}, "ratio", "expected a finite number"),
    ({"workers": 0}, "workers", "expected a number from 1 to 64, found 0"),
    ({"scores": [1.0, -2.0]}, "scores", "expected a number at least 0, found -2.0"),
    ({"count": 2**63}, "count", "expected an integer of at most 64 bits"),
    ({"count": -(2**63) - 1}, "count", "expected an integer of at most 64 bits"),
])
def test_bounds_apply_to_any_settings_dataclass(values, path, fragment):
    with pytest.raises(ConfigError) as caught:
        build_settings(PluginSettings, values, source="config.yaml", path="engines.mine")
    assert f"at 'engines.mine.{path}'" in str(caught.value) and fragment in str(caught.value)


def test_values_within_bounds_are_kept():
    built = build_settings(PluginSettings, {"port": 1, "metrics_port": 65535, "ratio": 1, "workers": 64,
                                            "scores": [0, 2.5], "count": 2**63 - 1, "ports": [1, 70000]},
                           source="config.yaml", path="engines.mine")
    assert (built.port, built.metrics_port, built.ratio, built.workers, built.count) == (1, 65535, 1.0, 64, 2**63 - 1)
    assert built.ports == [1, 70000]  # a list of ports has no automatic bounds: give it `bounded` if it needs them


def test_port_bounds_follow_the_name_and_the_type():
    fields = {f.name: f for f in dataclasses.fields(PluginSettings)}
    assert field_bounds(fields["port"], int) is PORT
    assert field_bounds(fields["metrics_port"], int | None) is PORT
    assert field_bounds(fields["count"], int) is None


def test_bounded_refuses_low_and_above_together():
    with pytest.raises(ValueError):
        bounded(1, low=0, above=0)


# --- engines known to the registry ---------------------------------------------------------------------------------


def test_an_unknown_engine_section_names_the_installed_engines(tmp_path):
    config = load_config(write(tmp_path, "engines:\n  olama: {url: x}\n"))
    with pytest.raises(ConfigError) as caught:
        config.check_engines(["ollama", "echo"])
    message = str(caught.value)
    assert message.startswith(str(tmp_path / "config.yaml")) and "at 'engines.olama'" in message
    assert "unknown engine 'olama' (did you mean 'ollama'?); installed engines: echo, ollama" in message


def test_an_unknown_default_engine_names_the_installed_engines(tmp_path):
    config = load_config(write(tmp_path, "default_engine: turbo\n"))
    with pytest.raises(ConfigError, match=r"at 'default_engine': unknown engine 'turbo'; installed engines: echo"):
        config.check_engines(["echo"])


def test_sections_of_engines_published_with_jarvis_are_allowed_when_switched_off(tmp_path):
    config = load_config(write(tmp_path, "default_engine: ollama\nengines:\n  vllm: {}\n  llamacpp: {}\n"))
    config.check_engines([])  # no plugin loaded (JARVIS_LOAD_PLUGINS=''): the shipped config.yaml still loads
    Config().check_engines(["echo"])


def test_the_shipped_config_passes_every_check():
    from tests.conftest import REPO

    config = load_config(REPO / "config.yaml")
    config.check_engines(["ollama", "vllm", "llamacpp"])
