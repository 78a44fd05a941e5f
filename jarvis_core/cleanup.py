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
        run_ids |= {r.run_id for r in StateStore(store.dir).records() if r.run_id.startswith(LOADOUT_RUN_PREFIX)}
    if not run_ids:
        return []
    scoped = StateStore(store.dir, run_ids=run_ids)
    # The plugins' `stop` works on "every record of my engine": over this store, that is the dead runs' only.
    leftovers = Session(session.config, state=scoped, registry=session.registry, progress=session.progress)
    done: list[str] = []
    for engine in sorted({r.engine for r in scoped.records()}):
        if engine in session.registry.engines:
            try:
                result = leftovers.stop(engine)
                done += [f"{engine}: {item}" for item in result.stopped]
            except (JarvisError, OSError) as exc:
                done.append(f"{engine}: could not clean up ({exc}); records kept for the next try")
        else:
            for record in scoped.records(engine=engine):
                if record.kind == "process" and record.pid is not None:
                    if end_tree(record.pid, record.create_time):
                        done.append(f"{engine}: ended process {record.pid}")
                    scoped.remove(record.id)
                else:
                    done.append(f"{engine}: left {record.kind} {record.data.get('container') or ''} in place: "
                                f"its plugin is not installed")
    for run_id in run_ids:
        store.clear_baseline(run_id)
    return done
