"""The core's Hugging Face Hub downloader (`jarvis_core.api.hub_files`, `hub_download`) against the Hub stand-in
(`tests/standins/hf_hub.py`, HF_ENDPOINT pointed at it): the cache it writes, resuming (in one call and across two),
one-line errors, and huggingface_hub kept quiet. The plugins' own tests (tests/vllm/test_vllm_download.py,
tests/llamacpp/test_llamacpp_hub.py) cover the same downloads through `pull`."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import random
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jarvis_core import hub as core_hub
from jarvis_core.api import EngineError, HubFiles, ModelMissingError, Progress, hub_download, hub_files

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `tests.standins` is imported as a package from the repository root
    sys.path.insert(0, str(REPO))

from tests.standins.hf_hub import HubRepo, serve_hub, use_hub  # noqa: E402

ENGINE = "testengine"
TINY = "org/tiny"
CONFIG = b'{"model_type": "llama"}'
WEIGHTS = random.Random(11).randbytes(3 * 2**20)
OLD_WEIGHTS = random.Random(12).randbytes(2**20)
SHA = hashlib.sha256(WEIGHTS).hexdigest()
Q4 = b"GGUF" + random.Random(13).randbytes(200_000)
Q8 = b"GGUF" + random.Random(14).randbytes(300_000)
GRANTED, OTHER = "hf_GrantedToken0123456789", "hf_OtherToken0123456789"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    repos = {TINY: HubRepo({"config.json": CONFIG, "tokenizer.json": "{}", "model.safetensors": WEIGHTS},
                           revisions={"v1": {"config.json": CONFIG, "model.safetensors": OLD_WEIGHTS}}),
             "org/gguf": HubRepo({"README.md": "# gguf", "x-Q4_K_M.gguf": Q4, "x-Q8_0.gguf": Q8}),
             "org/gated": HubRepo({"config.json": CONFIG, "model.safetensors": b"w" * 1000}, gated=True,
                                  tokens=[GRANTED])}
    with serve_hub(repos, tokens=[OTHER]) as running:
        use_hub(monkeypatch, running, tmp_path / "hf-home")
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setattr(core_hub, "RETRY_DELAYS", (0.0, 0.0, 0.0))  # retries at once: the tests wait for nothing
        yield running


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "hub"


def download(cache: Path, repo_id: str = TINY, filenames=None, **kwargs):
    """(snapshot path, progress output) of one hub_download into `cache`."""
    out = io.StringIO()
    path = hub_download(repo_id, filenames, cache_dir=cache, progress=Progress(out), engine=ENGINE, **kwargs)
    return path, out.getvalue()


def blobs(cache: Path, repo_id: str = TINY) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--")) / "blobs"


def finals(text: str, label: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(re.escape(label) + r": [\d.]+ \S+ in ", line)]


def test_hub_files_says_the_commit_and_the_files_with_their_sizes(hub):
    listing = hub_files(TINY, engine=ENGINE)
    assert listing == HubFiles(TINY, None, hub.commit(TINY), {"config.json": len(CONFIG), "tokenizer.json": 2,
                                                              "model.safetensors": len(WEIGHTS)})
    old = hub_files(TINY, revision="v1", engine=ENGINE)
    assert old.commit == hub.commit(TINY, "v1") and set(old.sizes) == {"config.json", "model.safetensors"}


def test_a_whole_repo_lands_where_huggingface_hub_reads_it_on_one_progress_task(hub, cache, capfd):
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    path, text = download(cache)
    commit = hub.commit(TINY)
    assert path == cache / "models--org--tiny" / "snapshots" / commit
    assert (path / "model.safetensors").read_bytes() == WEIGHTS and (path / "config.json").read_bytes() == CONFIG
    assert (cache / "models--org--tiny" / "refs" / "main").read_text() == commit
    assert try_to_load_from_cache(TINY, "model.safetensors", cache_dir=cache) == str(path / "model.safetensors")
    assert snapshot_download(TINY, cache_dir=cache, local_files_only=True) == str(path)
    assert not list(blobs(cache).glob("*.incomplete"))

    [final] = finals(text, f"{ENGINE}: {TINY}")
    assert text.rstrip().endswith(final) and "3.0 MiB" in final and final.endswith("3/3 files")
    assert all(line.startswith(f"{ENGINE}: {TINY}") for line in text.splitlines()), text  # one task, nothing else
    assert "huggingface" not in capfd.readouterr().err.lower()
    [get] = hub.downloads("model.safetensors")
    assert get.server == "cdn" and get.range is None and get.sent == len(WEIGHTS) and not get.authorization

    hub.clear_log()
    again, text = download(cache)
    assert again == path and hub.downloads("model.safetensors") == [] and len(finals(text, f"{ENGINE}: {TINY}")) == 1


def test_a_revision_is_downloaded_and_remembered_under_its_name(hub, cache):
    path, text = download(cache, revision="v1")
    old = hub.commit(TINY, "v1")
    assert path.name == old and (path / "model.safetensors").read_bytes() == OLD_WEIGHTS
    refs = cache / "models--org--tiny" / "refs"
    assert (refs / "v1").read_text() == old and not (refs / "main").exists()
    assert finals(text, f"{ENGINE}: {TINY}@v1")


def test_named_files_only_and_no_file_count_for_one(hub, cache):
    path, text = download(cache, "org/gguf", ["x-Q4_K_M.gguf"])
    assert (path / "x-Q4_K_M.gguf").read_bytes() == Q4 and not (path / "x-Q8_0.gguf").exists()
    assert [r.file for r in hub.requests if r.server == "cdn"] == ["x-Q4_K_M.gguf"]
    label = f"{ENGINE}: org/gguf/x-Q4_K_M.gguf"
    assert f"{label}  downloading    0.0%  0 B/195.3 KiB" in text.splitlines()
    [final] = finals(text, label)
    assert "files" not in final


def test_a_connection_dropped_mid_file_is_resumed_in_the_same_call(hub, cache, capfd):
    hub.drop("model.safetensors", at=2**20)
    path, text = download(cache)
    first, second = hub.downloads("model.safetensors")
    assert (first.range, first.sent) == (None, 2**20)
    assert (second.range, second.sent) == (f"bytes={2**20}-", len(WEIGHTS) - 2**20)
    assert hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest() == SHA
    assert "verifying sha256" in text and len(finals(text, f"{ENGINE}: {TINY}")) == 1
    assert "huggingface" not in capfd.readouterr().err.lower()


def test_a_download_that_breaks_off_is_one_line_and_the_next_call_resumes(hub, cache):
    hub.drop("model.safetensors", at=2**20, then_status=503)  # cut, then the Hub is down
    with pytest.raises(EngineError) as raised:
        download(cache)
    message = str(raised.value)
    assert raised.value.engine == ENGINE and "\n" not in message
    assert message.startswith(f"Downloading {TINY} broke off: model.safetensors failed")
    assert "HTTP 503" in message and "1.0 MiB of 3.0 MiB downloaded so far are kept" in message
    partial = blobs(cache) / f"{SHA}.incomplete"
    assert partial.stat().st_size == 2**20

    hub.heal()
    hub.clear_log()
    path, text = download(cache)
    [resumed] = hub.downloads("model.safetensors")
    assert resumed.range == f"bytes={2**20}-" and resumed.sent == len(WEIGHTS) - 2**20
    assert "downloading   33.3%  1.0 MiB/3.0 MiB" in text  # it starts from what was kept
    assert (path / "model.safetensors").read_bytes() == WEIGHTS and not partial.exists()


def test_a_full_disk_is_one_line_and_the_next_call_resumes(hub, cache, monkeypatch):
    """The disk fills up after 2 MiB: bytes up to the budget are written, then write() fails with ENOSPC, as the
    kernel does (no real device is filled)."""
    budget = [2 * 2**20]
    real = core_hub._write_all

    def filling(out, data):
        room = min(len(data), budget[0])
        real(out, data[:room])
        budget[0] -= room
        if room < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(core_hub, "_write_all", filling)
    with pytest.raises(EngineError) as raised:
        download(cache)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"Not enough disk space for {TINY} in {cache}")
    assert "No space left on device" in message and "kept and the download resumes" in message
    kept = (blobs(cache) / f"{SHA}.incomplete").stat().st_size
    assert 0 < kept < len(WEIGHTS)

    monkeypatch.setattr(core_hub, "_write_all", real)
    hub.clear_log()
    path, _ = download(cache)
    [resumed] = hub.downloads("model.safetensors")
    assert resumed.range == f"bytes={kept}-" and resumed.sent == len(WEIGHTS) - kept
    assert (path / "model.safetensors").read_bytes() == WEIGHTS


@pytest.mark.parametrize(("token", "status", "words"), [
    (None, 401, ["is a gated model: accept its terms at", "/org/gated", "HF_TOKEN", "hf auth login"]),
    (OTHER, 403, ["is a gated model and the Hugging Face token in use", "has no access", "/org/gated"]),
])
def test_a_gated_repo_says_what_is_missing_in_one_line(hub, cache, token, status, words):
    with pytest.raises(ModelMissingError) as raised:
        download(cache, "org/gated", token=token)
    message = str(raised.value)
    assert raised.value.engine == ENGINE and "\n" not in message and all(w in message for w in words), message
    assert OTHER not in message
    assert {r.status for r in hub.requests if r.file} == {status}
    assert hub.downloads("model.safetensors") == []


def test_a_gated_repo_with_access_sends_the_token_to_the_hub_never_to_the_cdn(hub, cache):
    path, text = download(cache, "org/gated", token=GRANTED)
    assert (path / "model.safetensors").read_bytes() == b"w" * 1000 and GRANTED not in text
    assert all(r.authorization for r in hub.requests if r.server == "hub")
    assert [r.authorization for r in hub.downloads("model.safetensors")] == [False]


def test_what_the_hub_does_not_have_is_one_line_with_the_plugins_hint(hub, cache):
    with pytest.raises(ModelMissingError, match=r"^org/absent does not exist on the Hugging Face Hub at .*check the "
                                                r"name, or set HF_TOKEN"):
        download(cache, "org/absent")
    with pytest.raises(ModelMissingError) as raised:
        hub_files(TINY, revision="v9", engine=ENGINE, revision_hint="check what follows '@'")
    assert str(raised.value).startswith(f"{TINY} has no revision 'v9' on the Hugging Face Hub at {hub.url}; ")
    assert str(raised.value).endswith("; check what follows '@'.")
    with pytest.raises(ModelMissingError, match=f"^{TINY} has no file absent.gguf on the Hugging Face Hub"):
        download(cache, TINY, ["absent.gguf"])
    assert [r for r in hub.requests if r.server == "cdn"] == []
    assert not cache.exists() or not list(cache.rglob("*.incomplete"))


def test_an_unreachable_hub_is_one_line_naming_it(cache, monkeypatch):
    import huggingface_hub.constants as constants

    from jarvis_core.processes import free_port

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # as read when huggingface_hub was imported
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(EngineError) as raised:
        download(cache, endpoint=endpoint)
    message = str(raised.value)
    assert message.startswith(f"Cannot download {TINY}: the Hugging Face Hub at {endpoint} cannot be reached (")
    assert "HF_ENDPOINT" in message and "\n" not in message


def test_hf_hub_offline_refuses_before_asking_anything(hub, cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EngineError, match="^Cannot download org/tiny: HF_HUB_OFFLINE is set in the environment; unset"):
        download(cache)
    with pytest.raises(EngineError, match="HF_HUB_OFFLINE is set"):
        hub_files(TINY, engine=ENGINE)
    assert hub.requests == [] and not cache.exists()


def test_without_huggingface_hub_the_line_says_what_to_install(cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # `import huggingface_hub` raises ImportError
    with pytest.raises(EngineError, match=r"needs the huggingface_hub package: pip install 'jarvis-core\[hub\]'"):
        download(cache)


def test_huggingface_hub_logs_nothing_to_stderr_even_when_its_logging_is_imported_late(hub, tmp_path):
    """huggingface_hub sets its logger's level (HF_HUB_VERBOSITY here: debug) and adds a stderr handler when its
    logging module is first imported, lazily. In a fresh process, the first download imports it: nothing of
    huggingface_hub's may reach stderr (a dropped connection and a resume included)."""
    script = tmp_path / "pull.py"
    script.write_text(textwrap.dedent(f"""
        import io, sys
        from pathlib import Path
        sys.path[:0] = [{str(REPO)!r}]
        from jarvis_core import hub
        from jarvis_core.progress import Progress
        hub.RETRY_DELAYS = (0.0, 0.0, 0.0)
        assert "huggingface_hub" not in sys.modules
        path = hub.hub_download({TINY!r}, None, cache_dir=Path(sys.argv[1]), progress=Progress(io.StringIO()),
                                engine="test")
        print(path)
    """))
    hub.drop("model.safetensors", at=2**20)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_VERBOSITY="debug",
               PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "cache")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).name == hub.commit(TINY)
    assert len(hub.downloads("model.safetensors")) == 2  # the drop was resumed: the quiet block covered it
    assert done.stderr == ""
