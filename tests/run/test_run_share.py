"""Sharing a run: `jarvis run` and `jarvis bench` write report.html beside report.xlsx (a page that cannot be written
is one warning line, the workbook stays), `jarvis report --html` and `--csv DIR` rebuild them from results.jsonl, and
`jarvis --quiet` silences progress (an engine starting, a download) but not the results. The vLLM plugin talks to an
in-process vLLM-like stand-in through `engines.vllm.url`; the Ollama plugin starts the fake `ollama` itself."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import openpyxl
import pytest

from tests.run.conftest import Campaign, records
from tests.standins.openai_server import OpenAIStandin

MODEL = "vllm:Org/Remote#stream"
TESTS = """
defaults: {repetitions: 2, max_tokens: 16}
tests:
  - id: capital
    prompt: What is the capital of France?
    check: {contains: Paris}
  - id: week
    prompt: How many days are in a week?
"""


@pytest.fixture
def vllm_server(campaign: Campaign):
    """An in-process vLLM-like server Jarvis only talks to (engines.vllm.url)."""
    server = OpenAIStandin(models=["Org/Remote"], token_delay=0.0005).start()
    campaign.config(engines={"vllm": {"url": server.url}})
    yield server
    server.stop()


def page_text(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    assert text.lstrip().lower().startswith("<!doctype html"), text[:200]
    return text


def test_run_writes_the_page_beside_the_workbook(campaign: Campaign, vllm_server: OpenAIStandin) -> None:
    campaign.setups(TESTS + f"setups:\n  smoke: ['{MODEL}', 'ol_absent:1b']\n")
    result = campaign.run("run", "--output", "out")
    assert result.exit_code == 0, result.output
    out = campaign.root / "out"
    assert (out / "report.xlsx").is_file()
    page = page_text(out / "report.html")
    assert MODEL in page and "MISSING" in page, "the summary, with the missing model, is on the page"
    assert f"Report:  {Path('out') / 'report.xlsx'}\nPage:    {Path('out') / 'report.html'}" in result.output
    data = campaign.run("run", "--output", "again", "--json")
    found = json.loads(data.stdout[data.stdout.index("{"):])
    assert Path(found["html"]) == Path("again") / "report.html" and Path(found["html"]).is_file()
    assert found["report"].endswith("report.xlsx")


def test_a_page_that_cannot_be_written_is_one_warning_and_the_workbook_stays(campaign: Campaign,
                                                                            vllm_server: OpenAIStandin) -> None:
    campaign.setups(TESTS + f"setups:\n  smoke: ['{MODEL}']\n")
    out = campaign.root / "out"
    (out / "report.html").mkdir(parents=True)  # a folder where the page should go
    result = campaign.run("run", "--output", "out")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "report.html" in line and "Warning" in line]
    assert len(warnings) == 1 and warnings[0].startswith("Warning: report.html was not written"), result.output
    assert "Traceback" not in result.output and "Page:" not in result.output
    assert openpyxl.load_workbook(out / "report.xlsx")["Summary"].max_row == 3  # header and two cells
    assert (out / "report.html").is_dir(), "the folder was left alone"
    assert [r["type"] for r in records(out / "results.jsonl")][-1] == "end"


def test_bench_writes_the_page_too(campaign: Campaign, vllm_server: OpenAIStandin) -> None:
    result = campaign.run("bench", "vllm:Org/Remote", "--concurrency", "1,2", "--requests", "4", "--output", "b",
                          "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout[result.stdout.index("{"):])
    assert Path(found["html"]) == Path("b") / "report.html"
    page = page_text(campaign.root / "b" / "report.html")
    assert "vllm:Org/Remote" in page and (campaign.root / "b" / "report.xlsx").is_file()


def test_report_rebuilds_the_page_and_the_csv_tables(campaign: Campaign, vllm_server: OpenAIStandin) -> None:
    campaign.setups(TESTS + f"setups:\n  smoke: ['{MODEL}']\n")
    assert campaign.run("run", "--output", "out").exit_code == 0
    results = campaign.root / "out" / "results.jsonl"
    (campaign.root / "out" / "report.html").unlink()
    with results.open("a", encoding="utf-8") as fh:
        fh.write('{"type": "sample", "torn\n')

    page = campaign.run("report", str(results), "--html")
    assert page.exit_code == 0, page.output
    assert page.stdout.strip() == f"Page:   {results.with_name('report.html')}"
    assert page.stderr.strip().startswith(f"Warning: skipped 1 unreadable line of {results}:")
    assert MODEL in page_text(results.with_name("report.html"))
    named = campaign.run("report", str(results), "--html", "-o", "shared/run.html")
    assert named.exit_code == 0 and MODEL in page_text(campaign.root / "shared" / "run.html")

    tables = campaign.run("report", str(results), "--csv", "tables")
    assert tables.exit_code == 0, tables.output
    written = [Path(line.split(None, 1)[1]) for line in tables.stdout.splitlines() if line.startswith("CSV:")]
    assert {p.name for p in written} >= {"summary.csv", "results.csv"} and all(p.is_file() for p in written)
    with open(campaign.root / "tables" / "summary.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    header = [c.value for c in next(openpyxl.load_workbook(results.with_name("report.xlsx"))["Summary"].iter_rows(
        max_row=1))]
    assert list(rows[0]) == header, "the workbook's column names"
    assert {(r["model"], r["test"], r["status"]) for r in rows} == {(MODEL, "capital", "ok"), (MODEL, "week", "ok")}
    assert tables.stderr.count("Warning: skipped 1 unreadable line") == 1

    both = campaign.run("report", str(results), "--html", "-o", "both.html", "--csv", "both")
    assert both.exit_code == 0 and (campaign.root / "both.html").is_file() and (campaign.root / "both").is_dir()
    assert both.stderr.count("Warning: skipped 1 unreadable line") == 1, "the bad line is named once"
    assert not (campaign.root / "out" / "report.xlsx.part").exists()


def test_report_options_that_do_not_fit_are_one_line(campaign: Campaign, vllm_server: OpenAIStandin) -> None:
    campaign.setups(TESTS + f"setups:\n  smoke: ['{MODEL}']\n")
    assert campaign.run("run", "--output", "out").exit_code == 0
    results = str(campaign.root / "out" / "results.jsonl")
    for args, fragment in ((("--csv", "t", "-o", "x.xlsx"), "-o names the workbook or, with --html, the page"),
                           (("--html", "-o", "page.xlsx"), "--html writes a web page")):
        result = campaign.run("report", results, *args)
        assert result.exit_code == 2 and fragment in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


def test_quiet_silences_progress_but_not_the_results(campaign: Campaign) -> None:
    """The fake `ollama` is started by Jarvis ("Starting ..." notes) and pulls a model (a progress task)."""
    campaign.ollama_config(pullable=["smollm2:135m", "tinyllama:1b"], pull_seconds=0.05)
    campaign.setups(TESTS.replace("repetitions: 2", "repetitions: 1") + "setups:\n  a: ['ol_smollm2:135m']\n"
                    "  b: ['ol_tinyllama:1b']\n")
    loud = campaign.run("run", "--setup", "a", "--force-download", "--output", "loud")
    assert loud.exit_code == 0, loud.output
    assert "Starting " in loud.output and "ollama: smollm2:135m" in loud.output, "progress is shown by default"

    quiet = campaign.run("--quiet", "run", "--setup", "b", "--force-download", "--output", "quiet")
    assert quiet.exit_code == 0, quiet.output
    assert (campaign.models_dir / "manifests" / "registry.ollama.ai" / "library" / "tinyllama" / "1b").is_file()
    assert "Starting " not in quiet.output and "ollama: tinyllama:1b" not in quiet.output, quiet.output
    assert "capital 1: ok" in quiet.output and "Report:" in quiet.output, "the run itself still speaks"
    short = campaign.run("-q", "run", "--setup", "b", "--output", "short")
    assert short.exit_code == 0 and "Starting " not in short.output
