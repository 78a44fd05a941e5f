"""`--force-download` for vLLM models against the Hugging Face Hub stand-in (tests/standins/hf_hub.py): what is
downloaded where, the progress shown, revisions, resuming after a dropped connection, Ctrl-C or a full disk, gated
models. No engine runs here (tests/vllm/test_vllm_download_real.py serves a download with real vLLM)."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jarvis_core import hub as core_hub
from jarvis_core.errors import EngineError, ModelMissingError
from jarvis_core.progress import Progress
from jarvis_vllm import hfcache

from vllm_fixtures import *  # noqa: F401,F403  (fixtures)
from vllm_helpers import CONFIG, REPO

from tests.standins.hf_hub import HubRepo, serve_hub, use_hub

MODEL = "jarvis-test/tiny"
WEIGHTS = random.Random(7).randbytes(3 * 2**20)
OLD_CONFIG = CONFIG[:-1] + b', "max_position_embeddings": 1024}'
OLD_WEIGHTS = random.Random(8).randbytes(2**20)
SHA = hashlib.sha256(WEIGHTS).hexdigest()
GRANTED, OTHER = "hf_GrantedToken0123456789", "hf_OtherToken0123456789"


@pytest.fixture
def hf_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The stand-in serving MODEL (main and revision v1) and a gated model; HF_HUB_CACHE is tmp_path/hub."""
    repos = {MODEL: HubRepo({"config.json": CONFIG, "tokenizer.json": "{}", "model.safetensors": WEIGHTS},
                            revisions={"v1": {"config.json": OLD_CONFIG, "tokenizer.json": "{}",
                                              "model.safetensors": OLD_WEIGHTS}}),
             "org/gated": HubRepo({"config.json": CONFIG, "model.safetensors": b"w" * 1000}, gated=True,
                                  tokens=[GRANTED])}
    with serve_hub(repos, tokens=[OTHER]) as running:
        use_hub(monkeypatch, running, tmp_path / "hf-home")
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
        monkeypatch.setattr(core_hub, "RETRY_DELAYS", (0.0, 0.0, 0.0))  # retries at once: the tests wait for nothing
        yield running


@pytest.fixture
def pulling(vllm_plugin, make_session):
    """`pulling(models=None)`: (session with --force-download, its progress output) for the process runtime."""

    from jarvis_core.processes import free_port

    def make(force_download: bool = True, **settings):
        out = io.StringIO()
        session = make_session({"engines": {"vllm": {"runtime": "process", "port": free_port(), **settings}}},
                               force_download=force_download, progress=Progress(out))
        return session, out

    return make


def partial_file(tmp_path: Path, sha: str = SHA) -> Path:
    return tmp_path / "hub" / "models--jarvis-test--tiny" / "blobs" / f"{sha}.incomplete"


def summary_lines(text: str, label: str = f"vllm: {MODEL}") -> list[str]:
    return [line for line in text.splitlines() if re.match(re.escape(label) + r": [\d.]+ \S+ in ", line)]


def test_missing_without_force_download_then_downloaded_with_one_progress_task(hf_hub, pulling, tmp_path, capfd):
    session, out = pulling(force_download=False)
    ref = session.resolve(f"vllm:{MODEL}")
    missing = session.is_available(ref)
    assert not missing.present and "--force-download" in missing.fix

    session, out = pulling()
    pulled = session.pull(ref)
    commit = hf_hub.commit(MODEL)
    assert pulled.present and pulled.revision == commit
    snapshot = tmp_path / "hub" / "models--jarvis-test--tiny" / "snapshots" / commit
    assert (snapshot / "model.safetensors").read_bytes() == WEIGHTS
    assert (snapshot / "config.json").read_bytes() == CONFIG
    assert (snapshot.parents[1] / "refs" / "main").read_text() == commit
    available = session.is_available(ref)
    assert available.present and available.revision == commit

    text = out.getvalue()
    assert f"vllm: downloading {MODEL} into {tmp_path / 'hub'}" in text
    [final] = summary_lines(text)
    assert text.rstrip().endswith(final) and "3.0 MiB" in final and "3/3 files" in final
    assert all(line.startswith(("vllm: ", "vllm: downloading")) for line in text.splitlines()), text  # one task
    assert "Fetching" not in text and "Downloading bytes" not in text and "files/" not in text
    err = capfd.readouterr().err
    assert "huggingface" not in err.lower() and "Trying to resume" not in err

    # The weights come from the CDN, without the token; present now, a second pull downloads nothing.
    [get] = hf_hub.downloads("model.safetensors")
    assert get.server == "cdn" and get.range is None and get.sent == len(WEIGHTS)
    hf_hub.clear_log()
    again = session.pull(ref)
    assert again.present and hf_hub.downloads("model.safetensors") == [] and len(summary_lines(out.getvalue())) == 1


def test_a_pinned_revision_is_downloaded_checked_and_served(hf_hub, pulling, tmp_path):
    session, out = pulling(models={MODEL: {"revision": "v1", "served_name": "tiny"}})
    ref = session.resolve(f"vllm:{MODEL}")
    assert "--revision v1" in session.is_available(ref).fix
    pulled = session.pull(ref)
    old = hf_hub.commit(MODEL, "v1")
    assert pulled.present and pulled.revision == old
    snapshot = tmp_path / "hub" / "models--jarvis-test--tiny" / "snapshots" / old
    assert (snapshot / "config.json").read_bytes() == OLD_CONFIG
    refs = snapshot.parents[1] / "refs"
    assert (refs / "v1").read_text() == old and not (refs / "main").exists()  # main was never fetched
    assert not hfcache.check_model(MODEL, tmp_path / "hub").present  # the main branch is still missing
    assert summary_lines(out.getvalue(), f"vllm: {MODEL}@v1")
    launch = session.context("vllm").settings.launch(MODEL)
    args = launch.serve_args()
    assert args[args.index("--revision") + 1] == "v1" and args[args.index("--tokenizer-revision") + 1] == "v1"


def test_a_dropped_connection_is_resumed_in_the_same_run(hf_hub, pulling, caplog, capfd):
    hf_hub.drop("model.safetensors", at=2**20)
    session, out = pulling()
    assert session.pull(session.resolve(f"vllm:{MODEL}")).present
    first, second = hf_hub.downloads("model.safetensors")
    assert (first.range, first.sent) == (None, 2**20)
    assert (second.range, second.sent) == (f"bytes={2**20}-", len(WEIGHTS) - 2**20)
    assert len(summary_lines(out.getvalue())) == 1 and "stopped" not in out.getvalue()
    assert not [r for r in caplog.records if r.name.startswith("huggingface_hub")]
    assert "huggingface" not in capfd.readouterr().err.lower()


def test_broken_off_download_is_not_present_and_the_next_pull_resumes(hf_hub, pulling, tmp_path):
    hf_hub.drop("model.safetensors", at=2**20, then_status=503)  # cut, then the Hub is down
    session, out = pulling()
    ref = session.resolve(f"vllm:{MODEL}")
    with pytest.raises(EngineError) as info:
        session.pull(ref)
    message = str(info.value)
    assert "\n" not in message and "broke off" in message and "model.safetensors" in message
    assert "HTTP 503" in message and "--force-download" in message and "kept" in message
    assert partial_file(tmp_path).stat().st_size == 2**20
    check = session.is_available(ref)
    assert not check.present and "partly downloaded" in check.detail and "--force-download" in check.fix
    assert not summary_lines(out.getvalue())  # no final line for a download that did not finish

    hf_hub.heal()
    hf_hub.clear_log()
    session, out = pulling()
    assert session.pull(ref).present
    [resumed] = hf_hub.downloads("model.safetensors")
    assert resumed.range == f"bytes={2**20}-" and resumed.sent == len(WEIGHTS) - 2**20 < len(WEIGHTS)
    assert "downloading   33.3%  1.0 MiB/3.0 MiB" in out.getvalue()  # it starts from what was kept
    blob = partial_file(tmp_path).with_name(SHA)
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == SHA and not partial_file(tmp_path).exists()
    assert len(summary_lines(out.getvalue())) == 1


def test_a_corrupt_partial_file_is_caught_by_its_checksum(hf_hub, pulling, tmp_path):
    """A partial file whose bytes are not the file's (written by something else) fails the sha256 after resuming:
    it is removed, so the next pull starts it again."""
    partial = partial_file(tmp_path)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"x" * 1000)
    session, _ = pulling()
    ref = session.resolve(f"vllm:{MODEL}")
    with pytest.raises(EngineError, match="checksum"):
        session.pull(ref)
    assert not partial.exists() and not session.is_available(ref).present
    assert session.pull(ref).present


def _driver(tmp_path: Path, limit: int | None = None) -> Path:
    """A script that pulls MODEL with --force-download in a process of its own (`rlimit`: RLIMIT_FSIZE)."""
    script = tmp_path / "pull.py"
    script.write_text(textwrap.dedent(f"""
        import resource, signal, sys
        from pathlib import Path
        sys.path[:0] = [{str(REPO)!r}]
        limit = {limit!r}
        if limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead of the process dying
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        from jarvis_core import testing
        from jarvis_core.errors import JarvisError
        from jarvis_core.progress import Progress
        import jarvis_vllm
        with testing.registered(jarvis_vllm, "vllm"):
            session = testing.session({{"engines": {{"vllm": {{"runtime": "process"}}}}}}, state_dir=Path(sys.argv[1]),
                                      force_download=True, progress=Progress(sys.stderr))
            try:
                session.pull(session.resolve("vllm:{MODEL}"))
            except KeyboardInterrupt:
                print("Interrupted.", file=sys.stderr)
                sys.exit(130)
            except JarvisError as exc:
                print(f"Error: {{exc}}", file=sys.stderr)
                sys.exit(1)
        print("pulled")
    """))
    return script


def _env(hf_hub, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
    env.update(HF_ENDPOINT=hf_hub.url, HF_HUB_CACHE=str(tmp_path / "hub"), HF_HOME=str(tmp_path / "hf-home"),
               PYTHONDONTWRITEBYTECODE="1")
    return env


def test_ctrl_c_keeps_what_was_downloaded_and_the_next_pull_resumes(hf_hub, pulling, tmp_path):
    at = 1_500_000
    reached = hf_hub.stall("model.safetensors", at=at)  # the transfer pauses there until hf_hub.heal()
    proc = subprocess.Popen([sys.executable, str(_driver(tmp_path)), str(tmp_path / "state2")],
                            env=_env(hf_hub, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert reached.wait(60), proc.communicate(timeout=5)
        deadline = time.monotonic() + 20
        while (not partial_file(tmp_path).exists() or partial_file(tmp_path).stat().st_size < at) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert partial_file(tmp_path).stat().st_size == at  # every byte received is on disk
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)  # at once, though a thread is blocked in a read
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "huggingface" not in err.lower()
    assert f"vllm: {MODEL}: stopped at" in err and "--force-download to resume" in err
    assert partial_file(tmp_path).stat().st_size == at

    session, out = pulling(force_download=False)
    ref = session.resolve(f"vllm:{MODEL}")
    assert not session.is_available(ref).present
    hf_hub.heal()
    hf_hub.clear_log()
    session, out = pulling()
    assert session.pull(ref).present
    [resumed] = hf_hub.downloads("model.safetensors")
    assert resumed.range == f"bytes={at}-" and resumed.sent == len(WEIGHTS) - at


def test_full_disk_is_one_line_and_the_next_pull_resumes(hf_hub, pulling, tmp_path, monkeypatch):
    """The disk fills up after 2 MiB: the kernel would take what fits and then fail write() with ENOSPC. Here the
    write path does the same (no real device is filled): bytes up to the budget are written, then ENOSPC."""
    budget = [2 * 2**20]
    real = core_hub._write_all

    def filling(out, data):
        room = min(len(data), budget[0])
        real(out, data[:room])
        budget[0] -= room
        if room < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(core_hub, "_write_all", filling)
    session, out = pulling()
    ref = session.resolve(f"vllm:{MODEL}")
    with pytest.raises(EngineError) as info:
        session.pull(ref)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"Not enough disk space for {MODEL} in {tmp_path / 'hub'}")
    assert "No space left on device" in message and "kept and the download resumes" in message
    assert not summary_lines(out.getvalue()) and "stopped" not in out.getvalue()  # the error is the one line
    kept = partial_file(tmp_path).stat().st_size
    assert 0 < kept < len(WEIGHTS) and not session.is_available(ref).present

    monkeypatch.setattr(core_hub, "_write_all", real)
    hf_hub.clear_log()
    assert session.pull(ref).present
    [resumed] = hf_hub.downloads("model.safetensors")
    assert resumed.range == f"bytes={kept}-" and resumed.sent == len(WEIGHTS) - kept


def test_a_file_size_limit_stops_the_download_in_one_line_and_keeps_the_prefix(hf_hub, tmp_path):
    """The kernel itself refuses the write: RLIMIT_FSIZE in the pulling process (EFBIG after the limit)."""
    limit = 1_000_000
    proc = subprocess.run([sys.executable, str(_driver(tmp_path, limit=limit)), str(tmp_path / "state2")],
                          env=_env(hf_hub, tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    [error] = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert "File too large" in error and "--force-download" in error and "kept" in error
    assert "Traceback" not in proc.stderr
    assert partial_file(tmp_path).stat().st_size == limit
    assert not hfcache.check_model(MODEL, tmp_path / "hub").present


def test_not_enough_free_space_is_said_before_downloading(hf_hub, pulling, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 4096, 4096))
    session, out = pulling()
    with pytest.raises(EngineError, match=r"^Not enough disk space .*3\.0 MiB are needed, 4\.0 KiB are free"):
        session.pull(session.resolve(f"vllm:{MODEL}"))
    assert hf_hub.downloads("model.safetensors") == [] and "downloading " in out.getvalue()


@pytest.mark.parametrize("token, status, words", [
    (None, 401, ["is a gated model", "HF_TOKEN", "hf auth login", "/org/gated"]),
    (OTHER, 403, ["is a gated model", "has no access", "/org/gated"]),
])
def test_a_gated_model_says_how_to_get_access_in_one_line(hf_hub, pulling, monkeypatch, token, status, words):
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    session, out = pulling()
    with pytest.raises(ModelMissingError) as info:
        session.pull(session.resolve("vllm:org/gated"))
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert OTHER not in message and OTHER not in out.getvalue()
    assert [r.status for r in hf_hub.requests if r.file] == [status] * len([r for r in hf_hub.requests if r.file])
    assert not summary_lines(out.getvalue(), "vllm: org/gated")


def test_a_gated_model_with_access_and_a_rejected_token(hf_hub, pulling, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", GRANTED)
    session, out = pulling()
    assert session.pull(session.resolve("vllm:org/gated")).present
    assert GRANTED not in out.getvalue()
    monkeypatch.setenv("HF_TOKEN", "hf_Unknown0123456789")
    session, out = pulling()
    with pytest.raises(EngineError) as info:
        session.pull(session.resolve(f"vllm:{MODEL}"))
    assert "rejected the token" in str(info.value) and "hf_Unknown" not in str(info.value)


def test_unknown_model_and_revision(hf_hub, pulling):
    session, _ = pulling(models={MODEL: {"revision": "v9"}})
    with pytest.raises(ModelMissingError, match="does not exist on the Hugging Face Hub"):
        session.pull(session.resolve("vllm:org/absent"))
    with pytest.raises(ModelMissingError, match="has no revision 'v9'"):
        session.pull(session.resolve(f"vllm:{MODEL}"))


def test_hf_hub_offline_refuses_to_download(hf_hub, pulling, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    session, _ = pulling()
    with pytest.raises(EngineError, match="HF_HUB_OFFLINE"):
        session.pull(session.resolve(f"vllm:{MODEL}"))
    assert hf_hub.requests == []
