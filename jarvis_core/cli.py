"""The `jarvis` command line. Library errors (`jarvis_core.errors`) become one-line click errors here, and only here.

Set `JARVIS_DEBUG=1` to see tracebacks instead.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from typing import Any, Callable

import click

from . import __version__
from .console import safe, table
from .errors import JarvisError
from .redact import redact_data

log = logging.getLogger("jarvis")


def debug_enabled() -> bool:
    return os.environ.get("JARVIS_DEBUG", "") not in ("", "0")


class CLIError(click.ClickException):
    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class JarvisGroup(click.Group):
    """Turns domain errors into one line on stderr with their exit code; anything unexpected too, unless debugging.
    Usage errors are one line too (click's own form takes three), and Ctrl-C anywhere is "Interrupted." and 130."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:  # `jarvis loadout` alone: its help is the answer
            click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message())
            sys.exit(0)
        except click.UsageError as exc:
            where = f"jarvis {exc.ctx.command_path.split(' ', 1)[1]} --help" if exc.ctx and " " in \
                exc.ctx.command_path else "jarvis --help"
            # One line whatever the user typed: a newline in an argument is shown escaped.
            echo(f"Error: {exc.format_message()} (see {where})".replace("\n", "\\n"), err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except (KeyboardInterrupt, click.exceptions.Abort):
            echo("Interrupted.", err=True)
            sys.exit(130)
        except OSError as exc:  # a closed stdout (jarvis ... | head) and the like
            if debug_enabled():
                raise
            sys.exit(1 if not isinstance(exc, BrokenPipeError) else 0)
        sys.exit(0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except JarvisError as exc:
            if debug_enabled():
                raise
            raise CLIError(safe(str(exc)), exc.exit_code) from None
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            if debug_enabled():
                raise
            raise CLIError(safe(f"unexpected {type(exc).__name__}: {exc} (set JARVIS_DEBUG=1 for the traceback)")) from None


config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                             help="config.yaml to use (default: ./config.yaml, then the user config folder).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def echo(message: Any = "", err: bool = False) -> None:
    """Every line Jarvis prints goes through here: credentials redacted, control characters escaped."""
    click.echo(safe(str(message)), err=err)


def echo_json(data: Any) -> None:
    # json.dumps escapes control characters itself; redaction applies value by value (redacting the text could let a
    # mask run past a string's closing quote: redact.redact_data).
    click.echo(json.dumps(redact_data(json.loads(json.dumps(data, default=str))), indent=2))


@click.group(cls=JarvisGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="jarvis", message="%(prog)s %(version)s")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress lines (downloads, engines starting, waits); results, warnings and errors still print.")
@click.pass_context
def cli(ctx: click.Context, quiet: bool) -> None:
    """Bring local LLM engines up, test them fairly, and tear them down again.

    Model IDs route by prefix: ol_ (Ollama), vl_ or vllm: (vLLM), and whatever installed plugins add
    (see `jarvis plugins`). Runtime flags follow '#': ol_qwen2.5:0.5b#stream.
    """
    ctx.ensure_object(dict)["quiet"] = quiet


def _progress() -> Any:
    """The session's progress: silent under `jarvis --quiet`."""
    from .progress import Progress

    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    quiet = bool(root is not None and isinstance(root.obj, dict) and root.obj.get("quiet"))
    progress = Progress(enabled=not quiet)
    if ctx is not None:  # a bar left open by an error is taken down before the error's line is printed
        ctx.call_on_close(progress.close)
    return progress


@cli.command()
@json_option
def plugins(as_json: bool) -> None:
    """List installed plugins: distribution, version, engines, prefixes and hooks."""
    from .plugins import get_registry, plugin_info

    registry = get_registry()
    rows = []
    for info, hooks in plugin_info():
        engines = [spec for spec in registry.engines.values() if spec.plugin == info.name]
        rows.append({"name": info.name, "distribution": info.distribution, "version": info.version,
                     "engines": [e.name for e in engines], "prefixes": [p for e in engines for p in e.prefixes],
                     "hooks": hooks})
    if as_json:
        echo_json(rows)
        return
    if not rows:
        echo("No plugins installed. Add an engine with: pip install jarvis-ollama")
        return
    echo(table(["plugin", "distribution", "version", "engines", "prefixes", "hooks"],
                     [[r["name"], r["distribution"] or "-", r["version"] or "-", ", ".join(r["engines"]),
                       " ".join(r["prefixes"]), ", ".join(r["hooks"])] for r in rows]))


@cli.command()
@config_option
@json_option
def engines(config_path: str | None, as_json: bool) -> None:
    """Show each engine: installed, reachable, version and address. Starts nothing."""
    from .config import load_config
    from .session import Session

    session = Session(load_config(config_path), progress=_progress())
    session.validate_settings()
    found = [session.detect(name) for name in sorted(session.registry.engines)]
    if as_json:
        echo_json([{"engine": d.engine, "installed": d.installed, "reachable": d.reachable, "version": d.version,
                    "address": d.address, "started_by_jarvis": d.started_by_jarvis, "detail": d.detail}
                   for d in found])
        return
    if not found:
        echo("No engine plugins installed. Add one with: pip install jarvis-ollama")
        return
    yes_no: Callable[[bool], str] = lambda v: "yes" if v else "no"  # noqa: E731
    echo(table(["engine", "installed", "reachable", "version", "address", "detail"],
                     [[d.engine, yes_no(d.installed), yes_no(d.reachable), d.version or "-", d.address or "-",
                       d.detail] for d in found]))


@cli.command()
@click.argument("model_id")
@config_option
@json_option
def resolve(model_id: str, config_path: str | None, as_json: bool) -> None:
    """Show how MODEL_ID routes: engine, the name the engine loads, flags, canonical form."""
    from .config import load_config
    from .modelid import resolve as resolve_id
    from .plugins import get_registry

    config = load_config(config_path)
    ref = resolve_id(model_id, get_registry(), config.default_engine)
    if as_json:
        echo_json(ref.to_json())
        return
    flags = " ".join(f"{k}={v}" for k, v in ref.flags.given().items()) or "-"
    echo(f"engine:    {ref.engine}\nmodel:     {ref.name}\nflags:     {flags}\ncanonical: {ref.canonical}")


@cli.command()
@click.option("--setups", "setups_path", type=click.Path(dir_okay=False), default=None,
              help="Test setups file (default: ./test_setups.yaml).")
@config_option
@click.option("--setup", "selected", multiple=True, help="Run only this setup (repeatable).")
@click.option("--output", "output", type=click.Path(), default=None,
              help="Folder for results.jsonl and the reports (default: output_dir/<time>).")
@click.option("--force-download", is_flag=True, help="Download missing models instead of marking them MISSING.")
@click.option("--repeat", type=click.IntRange(1, 10_000), default=None, help="Timed repetitions of every test.")
@click.option("--strict", is_flag=True, help="Exit 1 also when a model is missing or an engine unavailable.")
@click.option("--resume", "resume", type=click.Path(file_okay=False, exists=True), default=None,
              help="Continue the interrupted run in this folder without repeating finished samples.")
@json_option
def run(setups_path: str | None, config_path: str | None, selected: tuple[str, ...], output: str | None,
        force_download: bool, repeat: int | None, strict: bool, resume: str | None, as_json: bool) -> None:
    """Run the test setups and write results.jsonl, report.xlsx and report.html.

    Exit code 0 when every cell is ok, missing, unavailable or skipped; 1 when any failed or errored (--strict:
    also missing or unavailable); 2 for usage and configuration errors.
    """
    import time
    from pathlib import Path

    from .config import load_config
    from .errors import UsageError
    from .plan import build_plan
    from .results import BadLines, read_results
    from .runner import Runner, done_keys, done_levels, exit_code, summary_table
    from .session import Session
    from .setups import find_setups, load_suite

    done: set = set()
    levels: dict = {}
    if resume:
        out_dir = Path(resume)
        results = out_dir / "results.jsonl"
        if not results.is_file():
            raise UsageError(f"'{out_dir}' holds no results.jsonl to resume.")
        first = next((r for r in read_results(results) if r.get("type") == "run"), {})
        setups_path = setups_path or first.get("setups_file")
        selected = selected or tuple(first.get("selected_setups") or ())
        repeat = repeat or first.get("repeat")
        force_download = force_download or bool(first.get("force_download"))
        bad = BadLines()
        done = done_keys(results, bad)
        levels = done_levels(results)
        if bad:
            echo(f"Warning: {bad.describe(results)}; those samples are measured again", err=True)
    config = load_config(config_path)
    suite = load_suite(find_setups(setups_path))
    chosen = suite.setups
    if selected:
        names = {s.name for s in suite.setups}
        unknown = [n for n in selected if n not in names]
        if unknown:
            raise UsageError(f"No setup named '{unknown[0]}' in {suite.source}; known: {', '.join(sorted(names))}.")
        chosen = [s for s in suite.setups if s.name in selected]
    session = Session(config, force_download=force_download, progress=_progress())
    session.validate_settings()
    # Every ID is resolved once, before anything starts; uninstalled engines become unavailable.
    plan = build_plan(session, suite, chosen, repeat=repeat)
    if not resume:
        out_dir = Path(output) if output else config.output_dir / time.strftime("%Y%m%d-%H%M%S")
        if (out_dir / "results.jsonl").exists():
            raise UsageError(f"{out_dir} already holds the results of an earlier run; continue that run with "
                             f"`jarvis run --resume {out_dir}`, or give a new folder with --output.")
    prepare_output(out_dir)
    say = (lambda msg: echo(msg, err=True)) if as_json else echo
    runner = Runner(session, suite, out_dir, repeat=repeat, say=say, done=done, done_levels=levels)
    rows, report, page = _campaign(session, runner, plan)
    if as_json:
        echo_json({"results": str(runner.results_path), "report": str(report),
                   "html": str(page) if page else None, "interrupted": runner.interrupted,
                   "cells": [{"setup": r.setup, "model": r.model, "engine": r.engine, "test": r.test,
                              "status": r.status, "reason": r.reason, "ok": r.ok, "failed": r.failed,
                              "error": r.error,
                              "stats": {k: (v.as_dict() if v else None) for k, v in r.stats.items()}}
                             for r in rows]})
    else:
        echo("")
        if rows:
            echo(summary_table(rows))
        echo(f"\nResults: {runner.results_path}\nReport:  {report}" + (f"\nPage:    {page}" if page else ""))
    if runner.interrupted:
        raise SystemExit(130)
    raise SystemExit(exit_code(rows, strict, runner.results_path))


def _campaign(session: Any, runner: Any, plan: Any) -> tuple[list[Any], Any, Any]:
    """Clean up after crashed runs, run the plan with SIGTERM (and Ctrl-Break) stopping it like Ctrl-C, and write
    the workbook and the HTML page beside it (None when the page failed: one warning line, the workbook stays): what
    `jarvis run` and `jarvis bench` share."""
    import signal

    from .cleanup import clean_leftovers

    for line in clean_leftovers(session):
        echo(f"cleaned up after a crashed run: {line}", err=True)
    # SIGTERM (and Ctrl-Break on Windows) stop the run like Ctrl-C: tear down, keep what was measured.
    stop_signals = [signal.SIGTERM] + ([signal.SIGBREAK] if hasattr(signal, "SIGBREAK") else [])
    previous = {sig: signal.signal(sig, _raise_keyboard_interrupt) for sig in stop_signals}
    try:
        rows = runner.run(plan, argv=sys.argv[1:])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    report = _write_report(runner.results_path, runner.out_dir / "report.xlsx")
    return rows, report, _write_page_beside(runner.results_path, runner.out_dir / "report.html")


@cli.command()
@click.argument("model_id")
@click.option("--concurrency", default=None, help="Closed-loop levels: requests in flight, e.g. 1,4,16.")
@click.option("--rate", default=None, help="Open-loop levels: requests per second, e.g. 1,2,4.")
@click.option("--sweep", is_flag=True, help="Synchronous and saturated throughput, then rates between them.")
@click.option("--arrival", type=click.Choice(["poisson", "constant"]), default="poisson", show_default=True,
              help="Open-loop arrivals.")
@click.option("--max-concurrency", type=int, default=None, help="Open loop: at most this many requests in flight.")
@click.option("--requests", type=int, default=None, help="Measured requests per level.")
@click.option("--duration", default=None, help="Seconds per level in which requests are sent (e.g. 30s; in closed "
              "loop after the ramp-up).")
@click.option("--warmup", type=int, default=None, help="Requests per level sent first and discarded (default 2; in "
              "closed loop at least the ramp-up's N + 1).")
@click.option("--prompt-tokens", type=int, default=128, show_default=True, help="Synthetic prompts of about N tokens.")
@click.option("--output-tokens", type=int, default=None, help="Pin answers to M tokens where the engine allows it.")
@click.option("--slo", default=None, help="Bounds per request for goodput and capacity: ttft=500ms,itl=50ms,e2e=10s.")
@click.option("--output", type=click.Path(), default=None,
              help="Folder for results.jsonl and the reports (default: output_dir/bench-<time>).")
@click.option("--force-download", is_flag=True, help="Download the model if missing instead of reporting MISSING.")
@config_option
@json_option
def bench(model_id: str, concurrency: str | None, rate: str | None, sweep: bool, arrival: str,
          max_concurrency: int | None, requests: int | None, duration: str | None, warmup: int | None,
          prompt_tokens: int, output_tokens: int | None, slo: str | None, output: str | None, force_download: bool,
          config_path: str | None, as_json: bool) -> None:
    """Measure one model under load: bring its engine up alone, warm it, run the levels, stop it.

    Without --concurrency, --rate or --sweep, runs 1, 4 and 16 requests in flight. Prints a line per level, a table,
    and the capacity when --slo is given; --json prints one object instead.
    """
    import time
    from pathlib import Path

    from .config import load_config
    from .errors import ConfigError, UsageError
    from .plan import build_plan
    from .results import read_results
    from .runner import Runner
    from .session import Session
    from .setups import Defaults, ModelEntry, Setup, Suite, parse_load

    raw: dict[str, Any] = {"arrival": arrival, "sweep": sweep, "prompt_tokens": prompt_tokens}
    for key, text, kind in (("concurrency", concurrency, int), ("rate", rate, float)):
        if text:
            try:
                raw[key] = [kind(part) for part in text.split(",") if part.strip()]
            except ValueError:
                raise UsageError(f"--{key} takes numbers separated by commas (1,4,16), not '{text}'.") from None
    if not concurrency and not rate and not sweep:
        raw["concurrency"] = [1, 4, 16]
    for key, value in (("max_concurrency", max_concurrency), ("requests", requests), ("duration", duration),
                       ("warmup", warmup), ("output_tokens", output_tokens)):
        if value is not None:
            raw[key] = value
    if slo:
        bounds = dict(part.split("=", 1) for part in slo.split(",") if "=" in part)
        if not bounds or len(bounds) != len([p for p in slo.split(",") if p.strip()]):
            raise UsageError(f"--slo takes name=duration pairs: ttft=500ms,itl=50ms,e2e=10s, not '{slo}'.")
        raw["slo"] = {k.strip(): v.strip() for k, v in bounds.items()}

    def err(where: str, message: str) -> ConfigError:
        option = "--" + where.split(".")[-1].replace("_", "-") if "." in where else "the options"
        return UsageError(f"{option}: {message}")  # type: ignore[return-value]

    profile = parse_load(raw, "bench", err)
    config = load_config(config_path)
    suite = Suite(source="jarvis bench", defaults=Defaults(repetitions=1, warmup=1),
                  setups=[Setup("bench", (ModelEntry(model_id),), tests=(), load=profile)])
    session = Session(config, force_download=force_download, progress=_progress())
    session.validate_settings()
    plan = build_plan(session, suite, suite.setups)
    out_dir = Path(output) if output else config.output_dir / time.strftime("bench-%Y%m%d-%H%M%S")
    if (out_dir / "results.jsonl").exists():
        raise UsageError(f"{out_dir} already holds the results of an earlier run; give a new folder with --output.")
    prepare_output(out_dir)
    runner = Runner(session, suite, out_dir, say=(lambda m: echo(m, err=True)) if as_json else echo,
                    missing_fix=f"jarvis bench {model_id} --force-download")
    _, report, page = _campaign(session, runner, plan)
    records = list(read_results(runner.results_path))
    levels = [r for r in records if r.get("type") == "load_level"]
    measured = [r for r in levels if r.get("status") in (None, "error")]  # "error": every request failed
    not_run = [r for r in levels if r not in measured]
    found = next((r for r in records if r.get("type") == "load_capacity"), {})
    if as_json:
        keys = ("concurrency", "rate", "requests_ok", "requests_error", "output_tps", "request_rate", "goodput_rps",
                "ttft_s", "itl_s", "e2e_s", "client_cpu", "queue_wait_s", "send_lag_s", "flags")
        echo_json({"model": plan[0].models[0].label, "engine": plan[0].models[0].engine,
                   "levels": [{k: r.get(k) for k in keys} for r in measured],
                   "capacity": found.get("users") or found.get("rate") or (
                       {"concurrency": None, "slo": profile.slo.to_json()} if profile.slo else None),
                   "saturation": found.get("saturation"), "parallelism": found.get("parallelism"),
                   "not_run": [{"status": r["status"], "reason": r.get("reason")} for r in not_run][:1],
                   "results": str(runner.results_path), "report": str(report),
                   "html": str(page) if page else None})
    else:
        for r in not_run[:1]:
            echo(f"{r['status'].upper() if r['status'] == 'missing' else r['status']}: {r.get('reason')}")
        echo(f"\nResults: {runner.results_path}\nReport:  {report}" + (f"\nPage:    {page}" if page else ""))
    if runner.interrupted:
        raise SystemExit(130)
    raise SystemExit(0 if measured and any(r.get("requests_ok") for r in measured) else 1)


def prepare_output(out_dir: Any) -> None:
    """Make the results folder, or say in one line why it cannot be: a file, under a file, not writable, a device."""
    import tempfile

    from .errors import UsageError

    try:
        if out_dir.exists() and not out_dir.is_dir():
            raise NotADirectoryError(20, "it is a file, not a folder")
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise UsageError(f"Cannot write results to {out_dir}: {exc.strerror or exc}; give a writable folder with "
                         f"--output.") from None


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _write_report(results: Any, out: Any) -> Any:
    from .report import write_report
    from .results import BadLines

    bad = BadLines()
    written = write_report(results, out, bad)
    if bad:
        echo(f"Warning: {bad.describe(results)}", err=True)
    return written


def _write_page_beside(results: Any, out: Any) -> Any:
    """report.html beside the workbook after a run: a failure is one warning line (the workbook and the results
    stay); Ctrl-C still stops."""
    try:
        from .report_html import write_html

        return write_html(results, out, None)  # the workbook already named any unreadable lines
    except Exception as exc:  # noqa: BLE001 - the page is a convenience: whatever breaks it must not fail the run
        if debug_enabled():
            raise
        why = exc if isinstance(exc, JarvisError) else f"{type(exc).__name__}: {exc}"
        echo(f"Warning: report.html was not written ({why}); the workbook is. Try again with "
             f"`jarvis report {results} --html`.".replace("\n", " "), err=True)
        return None


@cli.command()
@click.argument("results", type=click.Path(dir_okay=False, exists=True))
@click.option("-o", "--output", type=click.Path(), default=None,
              help="File to write: the workbook (default report.xlsx beside the results), or with --html the page "
                   "(default report.html).")
@click.option("--html", "as_html", is_flag=True, help="Write the self-contained HTML page instead of the workbook.")
@click.option("--csv", "csv_dir", type=click.Path(file_okay=False), default=None,
              help="Write the Summary, Results and Load tables as CSV files into this folder instead of the workbook.")
def report(results: str, output: str | None, as_html: bool, csv_dir: str | None) -> None:
    """Rebuild the report from a results.jsonl: the Excel workbook, or the HTML page (--html) and/or CSV tables
    (--csv DIR)."""
    from pathlib import Path

    from .errors import UsageError
    from .results import BadLines

    path = Path(results)
    if output is not None and csv_dir is not None and not as_html:
        raise UsageError("-o names the workbook or, with --html, the page; --csv writes its files into its folder.")
    if not as_html and csv_dir is None:
        out = _write_report(path, Path(output) if output else path.with_name("report.xlsx"))
        echo(f"Report: {out}")
        return
    bad = BadLines()
    if as_html:
        from .report_html import write_html

        page = Path(output) if output else path.with_name("report.html")
        if page.suffix.lower() in (".xlsx", ".csv", ".jsonl"):
            raise UsageError(f"--html writes a web page: name it .html, not {page.name} (-o report.html).")
        echo(f"Page:   {write_html(path, page, bad)}")
    if csv_dir is not None:
        from .report_csv import write_csv

        written = write_csv(path, Path(csv_dir), None if bad else bad)  # lines already skipped are named once
        for file in written:
            echo(f"CSV:    {file}")
    if bad:
        echo(f"Warning: {bad.describe(path)}", err=True)


class _Percent(click.ParamType):
    """A percentage: `5%` or `5` (five percent), as a share (0.05)."""

    name = "percent"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        text = str(value).strip()
        try:
            share = float(text[:-1] if text.endswith("%") else text) / 100
        except ValueError:
            self.fail(f"'{value}' is not a percentage: give it as 5% or 5", param, ctx)
        if not math.isfinite(share) or share < 0:
            self.fail(f"'{value}' is not a percentage of 0 or more: give it as 5% or 5", param, ctx)
        return share


@cli.command()
@click.argument("run_a", type=click.Path())
@click.argument("run_b", type=click.Path())
@click.option("--threshold", type=_Percent(), default="5%", show_default=True,
              help="Smallest change called better or worse: percent of A's figure (pass rate: points).")
@click.option("--all", "show_all", is_flag=True, help="List the unchanged figures too.")
@json_option
def compare(run_a: str, run_b: str, threshold: float, show_all: bool, as_json: bool) -> None:
    """What got better or worse from run A to run B, and whether it is beyond the noise.

    RUN_A and RUN_B are results folders of `jarvis run` or `jarvis bench` (or their results.jsonl). A change is
    called better or worse only when its 95 % interval (from both runs' samples) excludes no change and it is larger
    than the threshold; the method is in docs/compare.md. Exit code 1 when anything got worse, 0 otherwise, 2 when an
    input cannot be read.
    """
    from pathlib import Path

    from .compare import compare as compare_runs
    from .compare import schema_warnings

    found = compare_runs(Path(run_a), Path(run_b), threshold)
    for run in (found.a, found.b):
        if run.bad:
            echo(f"Warning: {run.bad.describe(run.path)}", err=True)
    for line in schema_warnings(found):
        echo(f"Warning: {line}", err=True)
    if as_json:
        echo_json(found.to_json())
    else:
        echo(_compare_text(found, show_all))
    raise SystemExit(1 if found.worse else 0)


def _compare_text(found: Any, show_all: bool) -> str:
    """Environment differences first (they usually explain the rest), then the changed cells, worse first, then one
    line of counts."""
    from .compare import NOT_COMPARED, ONLY_A, ONLY_B, SAME, TOO_FEW

    def run_line(name: str, run: Any) -> str:
        ids = ", ".join(run.run_ids) or "no run record"
        return f"{name}: {run.path} (run {ids}" + (f", started {run.started_at})" if run.started_at else ")")

    def cut(text: str | None, limit: int = 60) -> str:
        text = (text or "-").replace("\n", " ")
        return text[: limit - 1] + "…" if len(text) > limit else text

    def change(f: Any) -> tuple[str, str]:
        if f.change is None:
            return "-", "-"
        if f.figure.kind == "share":
            shown = f"{f.change * 100:+.1f} pts"
            interval = f"[{f.interval[0] * 100:+.1f}, {f.interval[1] * 100:+.1f}]" if f.interval else "-"
            return shown, interval

        def pct(x: float) -> str:
            return "from 0" if math.isinf(x) else f"{x:+.1%}"

        return pct(f.change), f"[{pct(f.interval[0])}, {pct(f.interval[1])}]" if f.interval else "-"

    lines = [run_line("A", found.a), run_line("B", found.b), ""]
    if found.environment:
        lines.append("Environment: what differs")
        lines.append(table(["what", "A", "B"], [[k, cut(a), cut(b)] for k, a, b in found.environment], indent="  "))
    else:
        lines.append("Environment: no differences in versions, hardware, command line or models.")
    rows: list[list[str]] = []
    for cell in found.cells:
        status = {"missing": "MISSING"}
        if cell.verdict in (ONLY_A, ONLY_B, NOT_COMPARED) or not cell.figures:
            if cell.verdict == SAME and not show_all:
                continue
            rows.append([cell.verdict, cell.setup, cell.model, cell.what, "status",
                         status.get(cell.status_a, cell.status_a or "-"),
                         status.get(cell.status_b, cell.status_b or "-"), "-", "-", cut(cell.note, 70)])
            continue
        for f in cell.figures:
            if f.verdict == SAME and not show_all:
                continue
            shown, interval = change(f)
            rows.append([f.verdict, cell.setup, cell.model, cell.what, f.figure.label, f.figure.show(f.a),
                         f.figure.show(f.b), shown, interval, cut(f.note, 70)])
    order = {"worse": 0, "better": 1, ONLY_A: 2, ONLY_B: 3, NOT_COMPARED: 4, SAME: 5}
    rows.sort(key=lambda r: order.get(r[0], 6))
    lines.append("")
    if rows:
        lines.append(f"Changes (threshold {found.threshold * 100:g}%; a change is real when its 95% interval "
                     f"excludes 0):")
        lines.append(table(["verdict", "setup", "model", "test/level", "figure", "A", "B", "change", "95% interval",
                            "note"], rows, indent="  "))
    else:
        lines.append("No figure changed beyond the noise and the threshold.")
    c = found.counts()
    lines.append("")
    lines.append(f"{c['worse']} worse, {c['better']} better, {c['same']} same"
                 + (f" ({c['too_few_samples']} with {TOO_FEW})" if c["too_few_samples"] else "")
                 + f" over {c['figures']} figure{'s' if c['figures'] != 1 else ''} in {c['cells_compared']} "
                 f"cell{'s' if c['cells_compared'] != 1 else ''}; {c['only_in_a']} only in A, {c['only_in_b']} only "
                 f"in B, {c['not_compared']} not compared.")
    return "\n".join(lines)


@cli.command()
@config_option
@click.option("--include-loadouts", is_flag=True, help="Also stop what `jarvis loadout up` left running.")
def cleanup(config_path: str | None, include_loadouts: bool) -> None:
    """Stop what crashed Jarvis runs started and left behind (only that, never anything else)."""
    from .cleanup import clean_leftovers
    from .config import load_config
    from .session import Session

    lines = clean_leftovers(Session(load_config(config_path), progress=_progress()),
                            include_loadouts=include_loadouts)
    echo("\n".join(lines) if lines else "Nothing to clean up.")


@cli.group()
def loadout() -> None:
    """Bring a set of models up for everyday use, see what is resident, bring it all down.

    Loadouts are named lists of model IDs under 'loadouts:' in config.yaml (or setups of test_setups.yaml).
    """


def _loadout_session(config_path: str | None, name: str | None, **kwargs: Any) -> Any:
    from .config import load_config
    from .loadout import run_id
    from .session import Session

    return Session(load_config(config_path), run_id=run_id(name) if name else None, keep_loaded=True,
                   progress=_progress(), **kwargs)


@loadout.command(name="status")
@click.argument("name", required=False)
@config_option
@json_option
def loadout_status(name: str | None, config_path: str | None, as_json: bool) -> None:
    """Each model (engine, present or MISSING, loaded, memory) and engine (running, started by Jarvis); starts nothing."""
    from .loadout import loadout_models, status

    from .state import StateStore

    # Unscoped: the plugins see what every run and loadout started, to say "started by Jarvis" truthfully.
    session = _loadout_session(config_path, name, state=StateStore())
    models = loadout_models(session.config, name) if name else []
    state = status(session, name, models)
    if as_json:
        echo_json(state.to_json())
        return
    if state.models:
        echo(table(["model", "engine", "status", "memory", "detail"],
                         [[m.id, m.engine, m.status, _gib(m.memory_bytes), m.detail] for m in state.models]))
        echo("")
    echo(table(["engine", "running", "started by jarvis", "address", "version"],
                     [[e.engine, "yes" if e.running else "no", "yes" if e.started_by_jarvis else "no",
                       e.address or "-", e.version or "-"] for e in state.engines]))
    echo("\nGPU: " + ("; ".join(f"{g['name']}: {g['used_mib']} of {g['total_mib']} MiB used"
                                       for g in state.gpu) if state.gpu else "none found"))


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**30:.2f} GiB"


@loadout.command(name="up")
@click.argument("name")
@config_option
@click.option("--force-download", is_flag=True, help="Download missing models instead of reporting them MISSING.")
@json_option
def loadout_up(name: str, config_path: str | None, force_download: bool, as_json: bool) -> None:
    """Start the engines, load and warm every model of loadout NAME, and leave them resident."""
    from .loadout import loadout_models, up

    session = _loadout_session(config_path, name, force_download=force_download)
    session.validate_settings()
    say = (lambda msg: echo(msg, err=True)) if as_json else echo
    state = up(session, name, loadout_models(session.config, name), say)
    if as_json:
        echo_json(state.to_json())
    else:
        for m in state.models:  # loaded models and errors were said as they happened; what never started is said here
            if m.status in ("MISSING", "unavailable"):
                echo(f"{m.status} {m.id}: {m.detail}")
        if not state.models:
            echo(f"Loadout {name} has no models.")
    if any(m.status in ("error", "MISSING", "unavailable") for m in state.models):
        raise SystemExit(1)


@loadout.command(name="down")
@click.argument("name", required=False)
@config_option
@json_option
def loadout_down(name: str | None, config_path: str | None, as_json: bool) -> None:
    """Unload and stop what `loadout up` started (for NAME, or every loadout); what Jarvis did not start is left alone."""
    from .config import load_config
    from .loadout import down
    from .session import Session
    from .state import default_state_dir

    config = load_config(config_path)
    say = (lambda msg: echo(msg, err=True)) if as_json else echo
    progress = _progress()
    result = down(lambda rid: Session(config, run_id=rid, progress=progress), [name] if name else None,
                  default_state_dir(), say)
    if as_json:
        echo_json(result)
    elif not result["loadouts"]:
        echo("No loadout is up." if name is None else f"Loadout '{name}' is not up.")
    elif result["memory_released"] is not None:
        echo("GPU memory " + ("is back near its baseline." if result["memory_released"] else
                                    "did NOT come back to its baseline yet."))


def _add_plugin_commands() -> None:
    from .plugins import load_plugins, pm

    load_plugins()
    for impl in pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(*[{"cli": cli}[arg] for arg in impl.argnames])
        except Exception as exc:  # a broken plugin must not take the command line down
            log.warning("plugin '%s' failed to add its commands: %s: %s", impl.plugin_name, type(exc).__name__, exc)


class _OneLineWarnings(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return safe(f"{record.levelname.capitalize()}: {record.getMessage()}")


def main(argv: list[str] | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineWarnings())
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if debug_enabled() else logging.WARNING)
    log.propagate = False
    _add_plugin_commands()
    cli.main(args=argv, prog_name="jarvis")
