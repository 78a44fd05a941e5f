"""Removing the leftovers of crashed runs: what a Jarvis process started and recorded, then died without stopping.

Only recorded things are touched, and only those whose owning Jarvis process is gone (a live run and loadouts are
left alone). Each engine's plugin stops its own records through its `stop` hook, on a state store scoped to the dead
runs; a process recorded by an engine whose plugin is no longer installed is ended here by (pid, create_time).
"""

from __future__ import annotations

import logging

from .errors import JarvisError
from .processes import end_tree
from .session import Session
from .state import LOADOUT_RUN_PREFIX, StateStore

log = logging.getLogger("jarvis")


def clean_leftovers(session: Session, *, include_loadouts: bool = False) -> list[str]:
    """Stop what crashed runs left behind; returns one line per thing handled."""
    store = session.state
    run_ids = store.orphaned_run_ids()
    if include_loadouts:
        run_ids |= {r.get("run_id", "") for r in StateStore(store.dir).records()
                    if str(r.get("run_id", "")).startswith(LOADOUT_RUN_PREFIX)}
    if not run_ids:
        return []
    scoped = StateStore(store.dir, run_ids=run_ids)
    # The plugins' `stop` works on "every record of my engine": over this store, that is the dead runs' only.
    leftovers = Session(session.config, state=scoped, registry=session.registry, progress=session.progress)
    done: list[str] = []
    for engine in sorted({r["engine"] for r in scoped.records() if "engine" in r}):
        if engine in session.registry.engines:
            try:
                result = leftovers.stop(engine)
                done += [f"{engine}: {item}" for item in result.stopped]
            except (JarvisError, OSError) as exc:
                done.append(f"{engine}: could not clean up ({exc}); records kept for the next try")
        elif engine == "jarvis":  # Jarvis's own bookkeeping (a loadout's GPU baseline): nothing runs
            for record in scoped.records(engine=engine):
                scoped.remove(record["id"])
        else:
            for record in scoped.records(engine=engine):
                if record.get("kind") == "process" and isinstance(record.get("pid"), int):
                    if end_tree(record["pid"], record.get("create_time")):
                        done.append(f"{engine}: ended process {record['pid']}")
                    scoped.remove(record["id"])
                else:
                    done.append(f"{engine}: left {record.get('kind')} {record.get('container') or ''} in place: "
                                f"its plugin is not installed")
    return done
