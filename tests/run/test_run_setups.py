"""test_setups.yaml: every way to get it wrong gives one message with the file, the place and the fix; the accepted
forms (plain list, `tests:` restriction, messages, images implying vision) parse into what `jarvis run` runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jarvis_core.errors import ConfigError, UsageError
from jarvis_core.setups import Check, find_setups, load_suite

from tests.run.conftest import PNG_1PX, REPO

TESTS_OK = "tests:\n  - {id: t1, prompt: Hi}\n"
SETUPS_OK = "setups:\n  s: [ol_a:1b]\n"

# (case, file text, the place named in the message, a fragment of the fix)
ERRORS = [
    ("not a mapping", "- a\n- b\n", None, "expected a mapping with 'tests' and 'setups'"),
    ("unknown section", TESTS_OK + SETUPS_OK + "extra: 1\n", "extra", "expected 'defaults', 'tests' and 'setups'"),
    ("no tests", SETUPS_OK, "setups.s", "add tests (under 'tests:') or a 'load:' block"),
    ("empty tests", "tests: []\n" + SETUPS_OK, "setups.s", "add tests (under 'tests:') or a 'load:' block"),
    ("tests a mapping", "tests: {a: 1}\n" + SETUPS_OK, "tests", "expected a list of tests"),
    ("test not a mapping", "tests: [hello]\n" + SETUPS_OK, "tests[0]", "expected a mapping with 'id' and 'prompt'"),
    ("unknown test key", "tests:\n  - {id: a, prompt: x, promt: y}\n" + SETUPS_OK, "tests[0].promt",
     "expected one of: check, id, images"),
    ("no id", "tests:\n  - {prompt: x}\n" + SETUPS_OK, "tests[0].id", "every test needs an 'id'"),
    ("blank id", "tests:\n  - {id: ' ', prompt: x}\n" + SETUPS_OK, "tests[0].id", "every test needs an 'id'"),
    ("duplicate id", "tests:\n  - {id: a, prompt: x}\n  - {id: a, prompt: y}\n" + SETUPS_OK, "tests[1].id",
     "give each test its own id"),
    ("system not text", "tests:\n  - {id: a, prompt: x, system: [1]}\n" + SETUPS_OK, "tests[0].system",
     "expected text"),
    ("prompt and messages", "tests:\n  - {id: a, prompt: x, messages: [{role: user, content: y}]}\n" + SETUPS_OK,
     "tests[0]", "either 'prompt' or 'messages', not both"),
    ("messages empty", "tests:\n  - {id: a, messages: []}\n" + SETUPS_OK, "tests[0].messages",
     "list of {role, content}"),
    ("message role", "tests:\n  - {id: a, messages: [{role: robot, content: y}]}\n" + SETUPS_OK,
     "tests[0].messages[0]", "role: system|user|assistant"),
    ("message content", "tests:\n  - {id: a, messages: [{role: user}]}\n" + SETUPS_OK, "tests[0].messages[0]",
     "content: text"),
    ("no prompt", "tests:\n  - {id: a}\n" + SETUPS_OK, "tests[0].prompt", "needs a 'prompt' (text) or 'messages'"),
    ("blank prompt", "tests:\n  - {id: a, prompt: '  '}\n" + SETUPS_OK, "tests[0].prompt", "needs a 'prompt'"),
    ("image not found", "tests:\n  - {id: a, prompt: x, images: [nope.png]}\n" + SETUPS_OK, "tests[0].images[0]",
     "relative to the setups file"),
    ("unknown capability", "tests:\n  - {id: a, prompt: x, requires: [telepathy]}\n" + SETUPS_OK,
     "tests[0].requires", "known: vision"),
    ("max_tokens text", "tests:\n  - {id: a, prompt: x, max_tokens: many}\n" + SETUPS_OK, "tests[0].max_tokens",
     "expected a number"),
    ("seed bool", "tests:\n  - {id: a, prompt: x, seed: true}\n" + SETUPS_OK, "tests[0].seed", "expected a number"),
    ("temperature text", "tests:\n  - {id: a, prompt: x, temperature: hot}\n" + SETUPS_OK, "tests[0].temperature",
     "expected a number"),
    ("check not a mapping", "tests:\n  - {id: a, prompt: x, check: Paris}\n" + SETUPS_OK, "tests[0].check",
     "such as {contains: Paris}"),
    ("check empty", "tests:\n  - {id: a, prompt: x, check: {}}\n" + SETUPS_OK, "tests[0].check",
     "such as {contains: Paris}"),
    ("unknown check", "tests:\n  - {id: a, prompt: x, check: {startswith: P}}\n" + SETUPS_OK,
     "tests[0].check.startswith", "expected one of: contains, contains_any"),
    ("contains_any not a list", "tests:\n  - {id: a, prompt: x, check: {contains_any: P}}\n" + SETUPS_OK,
     "tests[0].check.contains_any", "non-empty list of texts"),
    ("contains_all empty", "tests:\n  - {id: a, prompt: x, check: {contains_all: []}}\n" + SETUPS_OK,
     "tests[0].check.contains_all", "non-empty list of texts"),
    ("bad regex", "tests:\n  - {id: a, prompt: x, check: {regex: '(unclosed'}}\n" + SETUPS_OK,
     "tests[0].check.regex", "invalid regular expression"),
    ("json not true", "tests:\n  - {id: a, prompt: x, check: {json: yes please}}\n" + SETUPS_OK,
     "tests[0].check.json", "write 'json: true'"),
    ("contains a list", "tests:\n  - {id: a, prompt: x, check: {contains: [a, b]}}\n" + SETUPS_OK,
     "tests[0].check.contains", "expected a text"),
    ("equals bool", "tests:\n  - {id: a, prompt: x, check: {equals: true}}\n" + SETUPS_OK, "tests[0].check.equals",
     "expected a text"),
    ("no setups", TESTS_OK, "setups", "mapping of setup names to model lists, or a plain list"),
    ("setups empty mapping", TESTS_OK + "setups: {}\n", "setups", "or a plain list of model IDs"),
    ("setups text", TESTS_OK + "setups: ol_a:1b\n", "setups", "or a plain list of model IDs"),
    ("setups empty list", TESTS_OK + "setups: []\n", "setups", "at least one model ID"),
    ("plain list entry", TESTS_OK + "setups: [ol_a:1b, 42]\n", "setups[1]", "expected a model ID such as"),
    ("setup not a list", TESTS_OK + "setups:\n  s: 5\n", "setups.s", "a list of model IDs, or a mapping with 'models'"),
    ("setup unknown key", TESTS_OK + "setups:\n  s: {models: [ol_a:1b], test: [t1]}\n", "setups.s.test",
     "a setup has 'models', and optionally 'tests' and 'load'"),
    ("setup without models", TESTS_OK + "setups:\n  s: {tests: [t1]}\n", "setups.s.models",
     "non-empty list of model IDs"),
    ("setup empty models", TESTS_OK + "setups:\n  s: []\n", "setups.s.models", "non-empty list of model IDs"),
    ("model entry blank", TESTS_OK + "setups:\n  s: ['  ']\n", "setups.s.models[0]", "expected a model ID such as"),
    ("model entry without id", TESTS_OK + "setups:\n  s: [{capabilities: [vision]}]\n", "setups.s.models[0]",
     "{id: ..., capabilities: [vision]}"),
    ("model capabilities", TESTS_OK + "setups:\n  s: [{id: ol_a:1b, capabilities: [hearing]}]\n",
     "setups.s.models[0].capabilities", "expected a list of: vision"),
    ("model capabilities text", TESTS_OK + "setups:\n  s: [{id: ol_a:1b, capabilities: vision}]\n",
     "setups.s.models[0].capabilities", "expected a list of: vision"),
    ("model entry unknown key", TESTS_OK + "setups:\n  s: [{id: ol_a:1b, stream: true}]\n",
     "setups.s.models[0].stream", "a model entry has 'id' and 'capabilities'"),
    ("setup tests empty", TESTS_OK + "setups:\n  s: {models: [ol_a:1b], tests: []}\n", "setups.s.tests",
     "expected a list of test ids"),
    ("setup tests text", TESTS_OK + "setups:\n  s: {models: [ol_a:1b], tests: t1}\n", "setups.s.tests",
     "expected a list of test ids"),
    ("setup unknown test", TESTS_OK + "setups:\n  s: {models: [ol_a:1b], tests: [t1, t9]}\n", "setups.s.tests[1]",
     "no test with id 't9'; known: t1"),
    ("defaults not a mapping", "defaults: [1]\n" + TESTS_OK + SETUPS_OK, "defaults", "expected a mapping"),
    ("defaults unknown key", "defaults: {repeats: 3}\n" + TESTS_OK + SETUPS_OK, "defaults.repeats",
     "expected one of: max_tokens, repetitions"),
    ("defaults wrong type", "defaults: {repetitions: many}\n" + TESTS_OK + SETUPS_OK, "defaults.repetitions",
     "expected an integer"),
    ("defaults repetitions 0", "defaults: {repetitions: 0}\n" + TESTS_OK + SETUPS_OK, "defaults.repetitions",
     "expected 1 to 10000"),
    ("defaults warmup negative", "defaults: {warmup: -1}\n" + TESTS_OK + SETUPS_OK, "defaults.warmup",
     "expected 0 to 100"),
    ("defaults timeout 0", "defaults: {timeout: 0}\n" + TESTS_OK + SETUPS_OK, "defaults.timeout",
     "expected seconds above 0"),
]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "test_setups.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("case, text, place, fix", ERRORS, ids=[e[0] for e in ERRORS])
def test_every_error_names_file_place_and_fix(tmp_path: Path, case: str, text: str, place: str | None,
                                              fix: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_suite(path)
    message = str(caught.value)
    assert "\n" not in message, f"{case}: one line, not {message!r}"
    assert message.startswith(f"{path}"), f"{case}: the file comes first: {message}"
    if place is None:
        assert caught.value.path in (None, "")
    else:
        assert caught.value.path == place, message
        assert f"at '{place}'" in message, message
    assert fix in message, f"{case}: no fix ({fix!r}) in {message!r}"
    assert caught.value.exit_code == 2


CLI_CASES = ("unknown section", "duplicate id", "unknown check", "setup unknown test", "defaults repetitions 0")


@pytest.mark.parametrize("case, text, place, fix", [e for e in ERRORS if e[0] in CLI_CASES], ids=CLI_CASES)
def test_cli_reports_a_bad_setups_file_in_one_line_with_exit_code_2(campaign, case, text, place, fix) -> None:
    path = campaign.setups(text)
    result = campaign.run("run", "--setups", str(path))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert str(path) in lines[0] and f"at '{place}'" in lines[0] and fix in lines[0]
    assert not list(campaign.root.glob("results/*")), "nothing may run with a bad setups file"


def test_invalid_yaml_names_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, TESTS_OK + "setups:\n  s: [ol_a:1b\n")
    with pytest.raises(ConfigError) as caught:
        load_suite(path)
    assert re.match(rf"^{re.escape(str(path))}:\d+:\d+: invalid YAML: ", str(caught.value)), str(caught.value)


def test_missing_setups_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"test_setups\.yaml' does not exist; create test_setups\.yaml here .*"
                                          r"--setups FILE"):
        find_setups(None)
    with pytest.raises(ConfigError, match=r"other\.yaml' does not exist; pass an existing file to --setups"):
        find_setups(tmp_path / "other.yaml")


def test_model_id_errors_name_file_and_setup_before_anything_starts(campaign) -> None:
    path = campaign.setups(TESTS_OK + "setups:\n  broken: ['ol_qwen2.5:0.5b#strem']\n")
    result = campaign.run("run")
    assert result.exit_code == 2, result.output
    assert f"{path}, setup 'broken':" in result.output and "strem" in result.output
    assert not campaign.state_dir.joinpath("state.json").exists() or "ollama" not in \
        campaign.state_dir.joinpath("state.json").read_text()


def test_unknown_setup_name_is_a_usage_error(campaign) -> None:
    campaign.setups(TESTS_OK + "setups:\n  alpha: [ol_a:1b]\n  beta: [ol_b:1b]\n")
    result = campaign.run("run", "--setup", "gamma")
    assert result.exit_code == 2
    assert "No setup named 'gamma'" in result.output and "known: alpha, beta" in result.output


# --- accepted forms --------------------------------------------------------------------------------------------------


def test_plain_list_makes_each_model_its_own_setup_running_every_test(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, "tests:\n  - {id: a, prompt: x}\n  - {id: b, prompt: y}\n"
                                       "setups:\n  - ol_qwen2.5:0.5b#stream\n"
                                       "  - {id: 'vllm:Org/VL', capabilities: [vision]}\n"))
    assert [s.name for s in suite.setups] == ["ol_qwen2.5:0.5b#stream", "vllm:Org/VL"]
    assert [[m.id for m in s.models] for s in suite.setups] == [["ol_qwen2.5:0.5b#stream"], ["vllm:Org/VL"]]
    assert suite.setups[1].models[0].capabilities == ("vision",)
    assert suite.setups[0].models[0].capabilities is None
    for setup in suite.setups:
        assert setup.tests is None
        assert [t.id for t in suite.tests_for(setup)] == ["a", "b"]


def test_tests_restriction_runs_only_the_named_tests_in_their_order(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, "tests:\n  - {id: a, prompt: x}\n  - {id: b, prompt: y}\n"
                                       "  - {id: 7, prompt: z}\n"
                                       "setups:\n  some: {models: [ol_a:1b], tests: [7, a]}\n"
                                       "  every: [ol_a:1b]\n"))
    some, every = suite.setups
    assert some.tests == ("7", "a")
    assert [t.id for t in suite.tests_for(some)] == ["7", "a"]
    assert [t.id for t in suite.tests_for(every)] == ["a", "b", "7"]


def test_test_forms_messages_system_images_and_settings(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "cat.png").write_bytes(PNG_1PX)
    suite = load_suite(write(tmp_path, """
defaults: {repetitions: 2, warmup: 0, timeout: 9.5, max_tokens: null, temperature: 0.5, seed: 1}
tests:
  - id: chat
    system: Be brief.
    messages:
      - {role: user, content: My name is Ada.}
      - {role: assistant, content: Hello Ada!}
      - {role: user, content: "What is my name?"}
    check: {contains: Ada, regex: 'a.a'}
  - id: picture
    prompt: What is this?
    images: img/cat.png
    max_tokens: 16
    temperature: 1
    seed: 7
setups: [ol_a:1b]
"""))
    assert (suite.defaults.repetitions, suite.defaults.warmup, suite.defaults.timeout) == (2, 0, 9.5)
    assert suite.defaults.max_tokens is None and suite.defaults.temperature == 0.5
    chat, picture = suite.tests.values()
    assert chat.messages == (("system", "Be brief."), ("user", "My name is Ada."), ("assistant", "Hello Ada!"),
                             ("user", "What is my name?"))
    assert chat.checks == (Check("contains", "Ada"), Check("regex", "a.a"))
    assert chat.requires == ()
    assert picture.images == (tmp_path / "img" / "cat.png",)
    assert picture.requires == ("vision",), "an image implies the vision requirement"
    assert (picture.max_tokens, picture.temperature, picture.seed) == (16, 1, 7)


@pytest.mark.parametrize("check, answer, passes", [
    ({"contains": "paris"}, "It is PARIS.", True),
    ({"contains": "Paris"}, "It is Lyon.", False),
    ({"contains_any": ["4", "four"]}, "Four.", True),
    ({"contains_all": ["a", "z"]}, "abc", False),
    ({"regex": r"^\s*\d+\s*$"}, " 42 ", True),
    ({"equals": "Tokyo"}, "  tokyo \n", True),
    ({"equals": "Tokyo"}, "Tokyo.", False),
    ({"json": True}, '```json\n{"a": 1}\n```', True),
    ({"json": True}, "{not json", False),
])
def test_checks(tmp_path: Path, check, answer, passes) -> None:
    import yaml

    suite = load_suite(write(tmp_path, yaml.safe_dump({"tests": [{"id": "t", "prompt": "x", "check": check}],
                                                       "setups": ["ol_a:1b"]})))
    [parsed] = suite.tests["t"].checks
    ok, why = parsed.passes(answer)
    assert ok is passes
    assert (why == "") is passes
    if not passes:
        assert why.startswith("expected ") and "got " in why


def test_shipped_example_parses() -> None:
    suite = load_suite(REPO / "test_setups.yaml")
    assert suite.setups and suite.tests
    for setup in suite.setups:
        assert suite.tests_for(setup)


def test_docs_example_parses(tmp_path: Path) -> None:
    docs = (REPO / "docs" / "test-setups.md").read_text()
    example = re.search(r"```yaml\n(.*?)```", docs, re.DOTALL)
    assert example, "docs/test-setups.md shows an example file"
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "cat.png").write_bytes(PNG_1PX)
    suite = load_suite(write(tmp_path, example.group(1)))
    assert [s.name for s in suite.setups] == ["smoke", "vllm-only"]
    assert suite.tests["describe-image"].requires == ("vision",)


def test_errors_are_usage_errors() -> None:
    assert issubclass(ConfigError, UsageError)
