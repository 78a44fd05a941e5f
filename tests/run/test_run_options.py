"""`jarvis run` options and exit codes, in-process: --strict, --setup, --repeat and #repeat, warmup 0 (the cold sample
kept apart), --force-download, --json, plain-list setups, an engine whose plugin is absent. The vLLM plugin talks to
an in-process vLLM-like stand-in through `engines.vllm.url` here (nothing to start), the Ollama plugin to the fake
`ollama` it starts itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jarvis_core.results import read_results, summarize
from tests.standins.openai_server import OpenAIStandin

from tests.run.conftest import cells, records, samples

TESTS = """
tests:
  - id: capital
    prompt: What is the capital of France?
    check: {contains: Paris}
  - id: week
    prompt: How many days are in a week?
    check: {contains_any: ["7", seven]}
"""


@pytest.fixture
def vllm_server(campaign):
    """An in-process vLLM-like server Jarvis only talks to (engines.vllm.url)."""
    server = OpenAIStandin(models=["Org/Remote"], token_delay=0.0005).start()
    campaign.config(engines={"vllm": {"url": server.url}})
    yield server
    server.stop()


def statuses(out: Path) -> dict[tuple[str, str, str], str]:
    return {row.key: row.status for row in summarize(read_results(out / "results.jsonl"))}


# --- exit codes ------------------------------------------------------------------------------------------------------


def test_missing_and_unavailable_exit_0_and_strict_exits_1(campaign) -> None:
    campaign.setups(TESTS + """
setups:
  gap: [ol_absent:1b]
  nothing: [lc_nowhere]
""")
    plain = campaign.run("run", "--output", "plain")
    assert plain.exit_code == 0, plain.output
    assert set(statuses(campaign.root / "plain").values()) == {"missing", "unavailable"}
    assert (campaign.root / "plain" / "report.xlsx").is_file()
    for setup in ("gap", "nothing"):
        strict = campaign.run("run", "--setup", setup, "--strict", "--output", f"strict-{setup}")
        assert strict.exit_code == 1, strict.output
        assert {k[0] for k in statuses(campaign.root / f"strict-{setup}")} == {setup}, "--setup runs only that one"
    # nothing was started to find out: the models are checked on disk while Ollama is down
    assert not list(campaign.state_dir.glob("logs/ollama-serve.log"))


def test_all_ok_exits_0_even_with_skipped_cells(campaign, vllm_server) -> None:
    campaign.setups(TESTS + """
  - id: picture
    prompt: What is this?
    requires: [vision]
setups:
  remote: ["vllm:Org/Remote#stream"]
""")
    result = campaign.run("run", "--output", "out")
    assert result.exit_code == 0, result.output
    assert statuses(campaign.root / "out") == {("remote", "vllm:Org/Remote#stream", "capital"): "ok",
                                               ("remote", "vllm:Org/Remote#stream", "week"): "ok",
                                               ("remote", "vllm:Org/Remote#stream", "picture"): "skipped"}


def test_failed_check_exits_1(campaign, vllm_server) -> None:
    campaign.setups("tests:\n  - {id: t, prompt: 'What is the capital of France?', check: {contains: Rome}}\n"
                    "setups: ['vllm:Org/Remote']\n")
    result = campaign.run("run", "--output", "out")
    assert result.exit_code == 1
    assert set(statuses(campaign.root / "out").values()) == {"failed"}


def test_an_engine_whose_plugin_is_not_installed_is_unavailable(campaign, vllm_server) -> None:
    from jarvis_core import plugins

    plugins.unregister("llamacpp")
    campaign.setups(TESTS + "setups:\n  s: [lc_model, 'vllm:Org/Remote']\n")
    result = campaign.run("run", "--output", "out")
    assert result.exit_code == 0, result.output
    found = cells(campaign.root / "out" / "results.jsonl")
    assert [r["status"] for r in found[("s", "lc_model", "capital")]] == ["unavailable"]
    assert "pip install jarvis-llamacpp" in found[("s", "lc_model", "capital")][0]["reason"]
    assert found[("s", "vllm:Org/Remote", "capital")][0]["status"] == "ok", "the setup goes on with the rest"


# --- repetitions, warmup, cold start ---------------------------------------------------------------------------------


def test_repeat_option_and_flag(campaign, vllm_server) -> None:
    campaign.setups("defaults: {repetitions: 2, warmup: 0}\n" + TESTS +
                    "setups:\n  s: ['vllm:Org/Remote', 'vllm:Org/Remote#repeat=3']\n")
    campaign.run("run", "--output", "flags")
    per_model = {}
    for r in samples(campaign.root / "flags" / "results.jsonl"):
        per_model.setdefault((r["model"], r["test"]), []).append(r["repetition"])
    assert per_model[("vllm:Org/Remote", "capital")] == [1, 2]
    assert per_model[("vllm:Org/Remote#repeat=3", "capital")] == [1, 2, 3]
    campaign.run("run", "--output", "cli", "--repeat", "1")
    assert {len(v) for v in cells(campaign.root / "cli" / "results.jsonl").values()} == {1}, "--repeat wins"


def test_warmup_0_makes_the_first_sample_the_cold_one_kept_out_of_warm_statistics(campaign, vllm_server) -> None:
    calls = []

    def tokens(body):  # the first request is slow to its first token: a cold load
        calls.append(body)
        vllm_server.first_token_delay = 0.3 if len(calls) == 1 else None
        return ["The", " capital", " of", " France", " is", " Paris", "."]

    vllm_server.tokens = tokens
    campaign.setups("defaults: {repetitions: 4, warmup: 0}\n" + TESTS +
                    "setups:\n  s: ['vllm:Org/Remote#stream']\n")
    result = campaign.run("run", "--output", "out")
    assert result.exit_code == 1, result.output  # `week` fails its check: every answer is about Paris
    recs = records(campaign.root / "out" / "results.jsonl")
    assert not [r for r in recs if r["type"] == "warmup"], "no warmup request with warmup: 0"
    timed = [r for r in recs if r["type"] == "sample"]
    assert len(calls) == len(timed) == 8
    cold = [r for r in timed if r["cold"]]
    assert [(r["test"], r["repetition"]) for r in cold] == [("capital", 1)], "exactly the first request is cold"
    warm_ttfts = [r["ttft_s"] for r in timed if not r["cold"]]
    assert cold[0]["ttft_s"] > max(warm_ttfts)
    rows = {row.test: row for row in summarize(read_results(campaign.root / "out" / "results.jsonl"))}
    capital = rows["capital"]
    assert capital.stats["ttft_s"].count == 3, "the cold sample is not a warm sample"
    assert capital.stats["ttft_s"].max < cold[0]["ttft_s"]
    assert capital.cold_start_s == cold[0]["e2e_s"], "reported apart, as cold start"
    assert capital.ok == 4
    assert rows["week"].stats["ttft_s"].count == 4 and rows["week"].status == "failed"
    assert "[cold]" in result.output


def test_repetitions_go_round_the_tests_so_no_prompt_follows_itself(campaign, vllm_server) -> None:
    campaign.setups("defaults: {repetitions: 3, warmup: 0}\n" + TESTS + "setups:\n  s: ['vllm:Org/Remote']\n")
    assert campaign.run("run", "--output", "out").exit_code == 0
    prompts = [json.loads(r["raw"])["messages"][-1]["content"] for r in vllm_server.requests]
    assert len(prompts) == 6
    assert all(a != b for a, b in zip(prompts, prompts[1:])), prompts
    order = [(r["test"], r["repetition"]) for r in samples(campaign.root / "out" / "results.jsonl")]
    assert order == [("capital", 1), ("week", 1), ("capital", 2), ("week", 2), ("capital", 3), ("week", 3)]


def test_warmup_requests_use_a_prompt_unlike_the_tests(campaign, vllm_server) -> None:
    campaign.setups("defaults: {repetitions: 1, warmup: 2}\n" + TESTS + "setups:\n  s: ['vllm:Org/Remote']\n")
    assert campaign.run("run", "--output", "out").exit_code == 0
    prompts = [json.loads(r["raw"])["messages"][-1]["content"] for r in vllm_server.requests
               if r["path"].endswith("/chat/completions")]
    assert len(prompts) == 2 + 2  # two warmups, two tests
    test_prompts = {"What is the capital of France?", "How many days are in a week?"}
    assert set(prompts[2:]) == test_prompts
    assert not set(prompts[:2]) & test_prompts
    assert not any(r["cold"] for r in samples(campaign.root / "out" / "results.jsonl"))


# --- downloads, output, plain lists ----------------------------------------------------------------------------------


def test_force_download_pulls_a_missing_model_instead_of_marking_it(campaign) -> None:
    campaign.ollama_config(pullable=["smollm2:135m"], pull_seconds=0.05)
    campaign.setups("defaults: {repetitions: 1}\n" + TESTS + "setups: ['ol_smollm2:135m']\n")
    missing = campaign.run("run", "--output", "missing")
    assert set(statuses(campaign.root / "missing").values()) == {"missing"}
    pulled = campaign.run("run", "--output", "pulled", "--force-download")
    assert pulled.exit_code == 0, pulled.output
    assert set(statuses(campaign.root / "pulled").values()) == {"ok"}
    assert (campaign.models_dir / "manifests" / "registry.ollama.ai" / "library" / "smollm2" / "135m").is_file()
    run = records(campaign.root / "pulled" / "results.jsonl")[0]
    assert run["force_download"] is True
    assert missing.exit_code == 0


def test_json_output(campaign, vllm_server) -> None:
    campaign.setups("defaults: {repetitions: 2}\n" + TESTS + "setups:\n  s: ['vllm:Org/Remote#stream', "
                                                              "'ol_absent:1b']\n")
    result = campaign.run("run", "--output", "out", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout[result.stdout.index("{"):])
    assert data["interrupted"] is False
    assert Path(data["results"]) == Path("out") / "results.jsonl" and data["report"].endswith("report.xlsx")
    by_key = {(c["model"], c["test"]): c for c in data["cells"]}
    ok = by_key[("vllm:Org/Remote#stream", "capital")]
    assert ok["status"] == "ok" and ok["ok"] == 2
    assert ok["stats"]["ttft_s"]["p50"] > 0 and set(ok["stats"]["ttft_s"]) == {
        "mean", "sd", "min", "p50", "p90", "p95", "p99", "max"}
    assert by_key[("ol_absent:1b", "capital")]["status"] == "missing"
    assert by_key[("ol_absent:1b", "capital")]["stats"]["ttft_s"] is None


def test_default_output_folder_comes_from_config(campaign, vllm_server) -> None:
    campaign.setups(TESTS + "setups: ['vllm:Org/Remote']\n")
    campaign.run("run", "--repeat", "1")
    [folder] = list((campaign.root / "results").iterdir())
    assert (folder / "results.jsonl").is_file() and (folder / "report.xlsx").is_file()


def test_plain_list_setups_run_every_test_per_model(campaign, vllm_server) -> None:
    campaign.setups("defaults: {repetitions: 1}\n" + TESTS +
                    "setups:\n  - 'vllm:Org/Remote'\n  - 'vllm:Org/Remote#stream'\n")
    assert campaign.run("run", "--output", "out").exit_code == 0
    assert set(statuses(campaign.root / "out")) == {
        ("vllm:Org/Remote", "vllm:Org/Remote", "capital"), ("vllm:Org/Remote", "vllm:Org/Remote", "week"),
        ("vllm:Org/Remote#stream", "vllm:Org/Remote#stream", "capital"),
        ("vllm:Org/Remote#stream", "vllm:Org/Remote#stream", "week")}


def test_a_remote_vllm_server_is_used_and_never_stopped(campaign, vllm_server) -> None:
    campaign.setups("defaults: {repetitions: 1}\n" + TESTS + "setups: ['vllm:Org/Remote']\n")
    assert campaign.run("run", "--output", "out").exit_code == 0
    engine = [r for r in records(campaign.root / "out" / "results.jsonl") if r["type"] == "engine"]
    assert engine[0]["started_by_jarvis"] is False and engine[0]["address"] == vllm_server.url
    assert not vllm_server.exited.is_set()
    import httpx

    assert httpx.get(vllm_server.url + "/v1/models").status_code == 200, "still serving after the run"


# --- resume ----------------------------------------------------------------------------------------------------------


def crash_after(results: Path, timed: int) -> None:
    """Cut a results file back to what a run killed after `timed` timed samples had written (no `end` record)."""
    kept, seen = [], 0
    for line in results.read_text().splitlines():
        record = json.loads(line)
        if record["type"] == "end":
            break
        if record["type"] == "sample" and record["repetition"] is not None:
            if seen == timed:
                break
            seen += 1
        kept.append(line)
    results.write_text("\n".join(kept) + "\n")


def test_resume_measures_only_what_is_missing(campaign, vllm_server) -> None:
    campaign.setups("defaults: {repetitions: 3, warmup: 1}\n" + TESTS +
                    "setups:\n  a: ['vllm:Org/Remote#stream', ol_absent:1b]\n  b: ['vllm:Org/Remote']\n")
    assert campaign.run("run", "--output", "out").exit_code == 0
    results = campaign.root / "out" / "results.jsonl"
    complete = {(r["setup"], r["model"], r["test"], r["repetition"]) for r in samples(results)}
    crash_after(results, 4)
    kept = samples(results)
    served = len(vllm_server.requests)
    resumed = campaign.run("run", "--resume", "out")
    assert resumed.exit_code == 0, resumed.output
    after = samples(results)
    assert after[:len(kept)] == kept
    found = [(r["setup"], r["model"], r["test"], r["repetition"]) for r in after]
    assert sorted(found, key=str) == sorted(complete, key=str), "every sample once, none repeated"
    untimed = sum(1 for key in complete if key[3] is None)  # the MISSING cells: nothing was sent for them
    assert untimed == 2
    timed_again = len(complete) - untimed - 4
    warmups = 2  # one per model that still had work: a's streamed model and b's
    assert len(vllm_server.requests) - served == timed_again + warmups
    assert [r["type"] for r in records(results)].count("end") == 1


def test_resume_of_a_finished_run_measures_nothing(campaign, vllm_server) -> None:
    campaign.setups("defaults: {repetitions: 1}\n" + TESTS + "setups:\n  a: ['vllm:Org/Remote']\n")
    campaign.run("run", "--output", "out")
    served = len(vllm_server.requests)
    again = campaign.run("run", "--resume", "out")
    assert again.exit_code == 0
    assert len(vllm_server.requests) == served
    assert len(samples(campaign.root / "out" / "results.jsonl")) == 2


def test_resume_without_results_is_a_usage_error(campaign) -> None:
    (campaign.root / "empty").mkdir()
    result = campaign.run("run", "--resume", "empty")
    assert result.exit_code == 2 and "holds no results.jsonl to resume" in result.output


def test_resume_keeps_the_setups_and_downloads_the_run_was_started_with(campaign, vllm_server) -> None:
    campaign.setups("defaults: {repetitions: 2}\n" + TESTS +
                    "setups:\n  a: ['vllm:Org/Remote']\n  b: ['vllm:Org/Remote#stream']\n")
    campaign.run("run", "--setup", "a", "--force-download", "--output", "out")
    results = campaign.root / "out" / "results.jsonl"
    crash_after(results, 1)
    campaign.run("run", "--resume", "out")
    assert {r["setup"] for r in samples(results)} == {"a"}, "setup b was never asked for"
    assert len(samples(results)) == 4
    runs = [r for r in records(results) if r["type"] == "run"]
    assert [r["force_download"] for r in runs] == [True, True]


def test_resume_keeps_the_repetitions_the_run_was_started_with(campaign, vllm_server) -> None:
    campaign.setups("defaults: {repetitions: 3}\n" + TESTS + "setups:\n  a: ['vllm:Org/Remote']\n")
    campaign.run("run", "--repeat", "1", "--output", "out")
    results = campaign.root / "out" / "results.jsonl"
    crash_after(results, 1)
    campaign.run("run", "--resume", "out")
    assert sorted((r["test"], r["repetition"]) for r in samples(results)) == [("capital", 1), ("week", 1)]
