"""The `jarvis` command line. Library errors (`jarvis_core.errors`) become one-line click errors here, and only here.

Set `JARVIS_DEBUG=1` to see tracebacks instead.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, Callable

import click

from . import __version__
from .console import table
from .errors import JarvisError

log = logging.getLogger("jarvis")


def debug_enabled() -> bool:
    return os.environ.get("JARVIS_DEBUG", "") not in ("", "0")


class CLIError(click.ClickException):
    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class JarvisGroup(click.Group):
    """Turns domain errors into one line on stderr with their exit code; anything unexpected too, unless debugging."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except JarvisError as exc:
            if debug_enabled():
                raise
            raise CLIError(str(exc), exc.exit_code) from None
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            if debug_enabled():
                raise
            raise CLIError(f"unexpected {type(exc).__name__}: {exc} (set JARVIS_DEBUG=1 for the traceback)") from None


config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                             help="config.yaml to use (default: ./config.yaml, then the user config folder).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group(cls=JarvisGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="jarvis", message="%(prog)s %(version)s")
def cli() -> None:
    """Bring local LLM engines up, test them fairly, and tear them down again.

    Model IDs route by prefix: ol_ (Ollama), vl_ or vllm: (vLLM), and whatever installed plugins add
    (see `jarvis plugins`). Runtime flags follow '#': ol_qwen2.5:0.5b#stream.
    """


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
        click.echo("No plugins installed. Add an engine with: pip install jarvis-ollama")
        return
    click.echo(table(["plugin", "distribution", "version", "engines", "prefixes", "hooks"],
                     [[r["name"], r["distribution"] or "-", r["version"] or "-", ", ".join(r["engines"]),
                       " ".join(r["prefixes"]), ", ".join(r["hooks"])] for r in rows]))


@cli.command()
@config_option
@json_option
def engines(config_path: str | None, as_json: bool) -> None:
    """Show each engine: installed, reachable, version and address. Starts nothing."""
    from .config import load_config
    from .session import Session

    session = Session(load_config(config_path))
    session.validate_settings()
    found = [session.detect(name) for name in sorted(session.registry.engines)]
    if as_json:
        echo_json([{"engine": d.engine, "installed": d.installed, "reachable": d.reachable, "version": d.version,
                    "address": d.address, "started_by_jarvis": d.started_by_jarvis, "detail": d.detail}
                   for d in found])
        return
    if not found:
        click.echo("No engine plugins installed. Add one with: pip install jarvis-ollama")
        return
    yes_no: Callable[[bool], str] = lambda v: "yes" if v else "no"  # noqa: E731
    click.echo(table(["engine", "installed", "reachable", "version", "address", "detail"],
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
    click.echo(f"engine:    {ref.engine}\nmodel:     {ref.name}\nflags:     {flags}\ncanonical: {ref.canonical}")


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
        return f"{record.levelname.capitalize()}: {record.getMessage()}"


def main(argv: list[str] | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineWarnings())
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if debug_enabled() else logging.WARNING)
    log.propagate = False
    _add_plugin_commands()
    cli.main(args=argv, prog_name="jarvis")
