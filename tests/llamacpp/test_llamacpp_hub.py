"""llama.cpp models from Hugging Face repos (`lc_hf.co/OWNER/REPO:QUANT`): IDs, the cache, and pulls from the Hub
stand-in (`tests/standins/hf_hub.py`, HF_ENDPOINT pointed at it); no llama.cpp needed."""

from __future__ import annotations

import hashlib
import io
import random
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from jarvis_core import hub as core_hub
from jarvis_core.api import EngineError, ModelMissingError, Progress
from jarvis_core.cli import cli

from llamacpp_helpers import REPO

if str(REPO) not in sys.path:  # `tests.standins` is imported as a package from the repository root
    sys.path.insert(0, str(REPO))

from jarvis_llamacpp import models  # noqa: E402
from jarvis_llamacpp.hub import HubIdError, HubRef, NoMatch, choose, hub_cache_dir, parse  # noqa: E402
from tests.standins.hf_hub import HubRepo, serve_hub, use_hub  # noqa: E402

WEIGHTS = b"GGUF" + random.Random(0).randbytes(3_000_000)
Q8 = b"GGUF" + random.Random(1).randbytes(20_000)
OLD = b"GGUF" + random.Random(2).randbytes(10_000)
PART1 = b"GGUF" + random.Random(3).randbytes(200_000)
PART2 = random.Random(4).randbytes(150_000)
TINY = "org/tiny-GGUF"
MAIN = "tiny-Q4_K_M.gguf"


# --- model IDs ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), [
    ("hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M",
     HubRef("bartowski/SmolLM2-135M-Instruct-GGUF", quant="Q4_K_M")),
    ("HF.CO/org/repo:q8_0", HubRef("org/repo", quant="q8_0")),
    ("huggingface.co/org/repo", HubRef("org/repo")),
    ("hf.co/org/repo/sub/Model-Q4_K_M.gguf", HubRef("org/repo", file="sub/Model-Q4_K_M.gguf")),
    ("hf.co/org/repo:Q4_K_M@v1", HubRef("org/repo", quant="Q4_K_M", revision="v1")),
    ("hf.co/org/repo@v1:Q4_K_M", HubRef("org/repo", quant="Q4_K_M", revision="v1")),
    ("hf.co/org/repo/x.gguf@" + "a" * 40, HubRef("org/repo", file="x.gguf", revision="a" * 40)),
    ("hf.co/org/repo@refs/pr/3", HubRef("org/repo", revision="refs/pr/3")),
])
def test_hub_ids_parse(name, expected):
    assert parse(name) == expected
    assert parse(str(expected)) == expected  # the canonical spelling reads back the same


@pytest.mark.parametrize(("name", "why"), [
    ("hf.co/onlyowner", "names no repository"),
    ("hf.co/org/", "names no repository"),
    ("hf.co/org/repo:", "empty quantization"),
    ("hf.co/org/repo/notes.txt", "not a .gguf file"),
    ("hf.co/org/repo:Q4/x.gguf", "more than one quantization or file"),
    ("hf.co/org/repo/../x.gguf", "not a file path inside the repository"),
    ("hf.co/-org/repo:Q4", "not a valid Hugging Face user or repository name"),
    ("hf.co/org/re--po:Q4", "not a valid Hugging Face user or repository name"),
    ("hf.co/org/repo:Q4@", "no usable revision"),
    ("hf.co/org/repo:Q4 K", "not a quantization name"),
])
def test_malformed_hub_ids_say_what_is_wrong_and_the_syntax(name, why):
    with pytest.raises(HubIdError) as raised:
        parse(name)
    message = str(raised.value)
    assert why in message and "lc_hf.co/OWNER/REPO:QUANT" in message and "\n" not in message


def test_hub_ids_are_not_paths_and_resolve_routes_them_to_llamacpp(llamacpp):
    assert not models.is_path("hf.co/org/repo:Q4_K_M") and models.is_path("./hf.co/org/repo.gguf")
    shown = CliRunner().invoke(cli, ["resolve", "LlamaCpp:hf.co/org/repo:Q4_K_M@v1#stream"], catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    assert shown.output.split() == ["engine:", "llamacpp", "model:", "hf.co/org/repo:Q4_K_M@v1", "flags:",
                                    "stream=True", "canonical:", "lc_hf.co/org/repo:Q4_K_M@v1#stream"]


# --- which file a quantization names --------------------------------------------------------------------------------

FILES = ["README.md", "x-IQ4_XS.gguf", "x-Q4_K_M.gguf", "x-Q4_K_S.gguf", "x-Q8_0.gguf", "x-bf16.gguf",
         "x-f16.gguf", "mmproj-x-f16.gguf", "Q6_K/x-Q6_K-00001-of-00002.gguf", "Q6_K/x-Q6_K-00002-of-00002.gguf"]


@pytest.mark.parametrize(("quant", "expected"), [
    ("Q4_K_M", ["x-Q4_K_M.gguf"]),
    ("q8_0", ["x-Q8_0.gguf"]),  # any case
    ("f16", ["x-f16.gguf"]),  # a whole word: not bf16, not the mmproj file
    ("XS", ["x-IQ4_XS.gguf"]),  # not a whole word: anywhere in the name
    ("Q6_K", ["Q6_K/x-Q6_K-00001-of-00002.gguf", "Q6_K/x-Q6_K-00002-of-00002.gguf"]),  # a split set, first first
    (None, ["x-Q4_K_M.gguf"]),  # no quantization: Q4_K_M, as Ollama picks
])
def test_a_quantization_picks_one_file(quant, expected):
    assert choose(HubRef("org/x", quant=quant), FILES, where="org/x") == expected


def test_no_quantization_in_a_repo_with_one_gguf_picks_it():
    assert choose(HubRef("org/x"), ["README.md", "model.gguf", "mmproj-f16.gguf"], where="org/x") == ["model.gguf"]


@pytest.mark.parametrize(("quant", "says"), [
    ("Q4_K", "'Q4_K' matches 2 GGUF files of org/x: x-Q4_K_M.gguf, x-Q4_K_S.gguf; name one"),
    ("Q5_K_M", "org/x has no GGUF file matching 'Q5_K_M'; its GGUF files: Q6_K/x-Q6_K-*-of-00002.gguf (2 parts), "
               "mmproj-x-f16.gguf, x-IQ4_XS.gguf"),
])
def test_an_ambiguous_or_absent_quantization_is_one_line_listing_the_files(quant, says):
    with pytest.raises(NoMatch) as raised:
        choose(HubRef("org/x", quant=quant), FILES, where="org/x")
    assert says in str(raised.value) and "\n" not in str(raised.value)


def test_a_split_set_with_a_part_missing_is_refused():
    with pytest.raises(NoMatch, match="only 1 of the 2 parts"):
        choose(HubRef("org/x", quant="Q6_K"), ["Q6_K/x-Q6_K-00002-of-00002.gguf"], where="the cache")


# --- against the Hub stand-in ---------------------------------------------------------------------------------------


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    repos = {
        TINY: HubRepo({"README.md": "# tiny", MAIN: WEIGHTS, "tiny-Q4_K_S.gguf": Q8, "tiny-Q8_0.gguf": Q8,
                       "mmproj-tiny-f16.gguf": b"GGUF"},
                      revisions={"v1": {"tiny-Q4_K_M.gguf": OLD}}),
        "org/split-GGUF": HubRepo({"big-Q4_0-00001-of-00002.gguf": PART1, "big-Q4_0-00002-of-00002.gguf": PART2}),
        "org/gated-GGUF": HubRepo({MAIN: WEIGHTS}, gated=True, tokens=["hf_granted"]),
    }
    with serve_hub(repos, tokens=["hf_other"]) as running:
        use_hub(monkeypatch, running, tmp_path / "hf-home")
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        monkeypatch.setattr(core_hub, "RETRY_DELAYS", (0.01, 0.01, 0.01))
        yield running


@pytest.fixture
def session(session_for):
    return session_for()


def cdn_gets(hub, path=MAIN):
    return [r for r in hub.requests if r.server == "cdn" and r.method == "GET" and r.file == path]


def test_the_cache_folder_follows_huggingface_hub_variables(tmp_path):
    assert hub_cache_dir({"HF_HUB_CACHE": "/a", "HF_HOME": "/b"}) == Path("/a")
    assert hub_cache_dir({"HF_HOME": "/b", "XDG_CACHE_HOME": "/c"}) == Path("/b/hub")
    assert hub_cache_dir({"XDG_CACHE_HOME": "/c"}) == Path("/c/huggingface/hub")
    assert hub_cache_dir({}) == Path.home() / ".cache" / "huggingface" / "hub"


def test_missing_without_force_download_asks_nothing_of_the_hub(hub, session, tmp_path):
    missing = session.is_available(session.resolve(f"lc_hf.co/{TINY}:Q4_K_M"))
    assert not missing.present
    assert f"{TINY} is not in the Hugging Face cache at {tmp_path / 'hub-cache'}" in missing.detail
    assert missing.fix == f"hf download {TINY} --include '*Q4_K_M*.gguf'"
    named = session.is_available(session.resolve(f"lc_hf.co/{TINY}/{MAIN}@v1"))
    assert not named.present and named.fix == f"hf download {TINY} {MAIN} --revision v1"
    assert hub.requests == []


def test_pull_downloads_with_progress_into_the_cache_huggingface_hub_reads(hub, session, tmp_path):
    ref = session.resolve(f"lc_hf.co/{TINY}:q4_k_m")
    pulled = session.pull(ref)
    assert pulled.present, pulled.detail
    snapshot = tmp_path / "hub-cache" / "models--org--tiny-GGUF" / "snapshots" / hub.commit(TINY)
    assert pulled.detail.startswith(str(snapshot / MAIN))
    assert (snapshot / MAIN).read_bytes() == WEIGHTS
    assert pulled.revision == f"sha256:{hashlib.sha256(WEIGHTS).hexdigest()}"
    assert [r.file for r in hub.requests if r.server == "cdn"] == [MAIN]  # only the file asked for

    lines = session.progress.stream.getvalue().splitlines()
    label = f"llamacpp: {TINY}/{MAIN}"
    assert f"{label}  downloading    0.0%  0 B/2.9 MiB" in lines
    finals = [ln for ln in lines if ln.startswith(f"{label}: 2.9 MiB in ")]
    assert len(finals) == 1 and lines[-1] == finals[0]

    # huggingface_hub finds it where it keeps its own downloads; Jarvis finds it offline, and serves that path
    from huggingface_hub import try_to_load_from_cache

    assert try_to_load_from_cache(TINY, MAIN, cache_dir=tmp_path / "hub-cache") == str(snapshot / MAIN)
    hub.clear_log()
    present = session.is_available(ref)
    assert present.present and present.revision == pulled.revision
    assert models.model_file(session.context("llamacpp").settings, ref.name) == snapshot / MAIN
    again = session.pull(ref)
    assert again.present and hub.requests == []  # present: nothing asked, nothing downloaded


def test_a_dropped_connection_is_resumed_with_a_range_request(hub, session, capfd):
    hub.drop(MAIN, at=1_000_000)
    pulled = session.pull(session.resolve(f"lc_hf.co/{TINY}:Q4_K_M"))
    assert pulled.present, pulled.detail
    gets = cdn_gets(hub)
    assert [(g.range, g.status) for g in gets] == [(None, 200), ("bytes=1000000-", 206)]
    assert sum(g.sent for g in gets) == len(WEIGHTS)  # nothing downloaded twice
    assert pulled.revision == f"sha256:{hashlib.sha256(WEIGHTS).hexdigest()}"  # verified after resuming
    assert capfd.readouterr().err == ""  # huggingface_hub's own log lines and bars stay off the console


def test_a_download_that_breaks_off_is_one_line_and_the_next_pull_resumes(hub, session, tmp_path):
    ref = session.resolve(f"lc_hf.co/{TINY}:Q4_K_M")
    hub.drop(MAIN, at=1_000_000, then_status=503)
    with pytest.raises(EngineError) as raised:
        session.pull(ref)
    message = str(raised.value)
    assert "broke off" in message and "HTTP 503" in message and "976.6 KiB of 2.9 MiB" in message
    assert "resumes" in message and "\n" not in message
    partial = list((tmp_path / "hub-cache" / "models--org--tiny-GGUF" / "blobs").glob("*.incomplete"))
    assert [p.stat().st_size for p in partial] == [1_000_000]

    missing = session.is_available(ref)
    assert not missing.present and "interrupted download left 976.6 KiB" in missing.detail

    hub.heal()
    hub.clear_log()
    pulled = session.pull(ref)
    assert pulled.present, pulled.detail
    assert [(g.range, g.status) for g in cdn_gets(hub)] == [("bytes=1000000-", 206)]
    assert pulled.revision == f"sha256:{hashlib.sha256(WEIGHTS).hexdigest()}"
    output = session.progress.stream.getvalue()
    assert "verifying sha256" in output


def test_gated_repo_without_a_token_names_hf_token_and_login(hub, session):
    with pytest.raises(ModelMissingError) as raised:
        session.pull(session.resolve("lc_hf.co/org/gated-GGUF:Q4_K_M"))
    message = str(raised.value)
    assert "gated" in message and "HF_TOKEN" in message and "hf auth login" in message
    assert cdn_gets(hub) == []


def test_gated_repo_with_a_token_without_access_and_with_access(hub, session, monkeypatch):
    ref = session.resolve("lc_hf.co/org/gated-GGUF:Q4_K_M")
    monkeypatch.setenv("HF_TOKEN", "hf_other")
    with pytest.raises(ModelMissingError) as raised:
        session.pull(ref)
    assert "has no access" in str(raised.value) and "hf_other" not in str(raised.value)

    monkeypatch.setenv("HF_TOKEN", "hf_granted")
    pulled = session.pull(ref)
    assert pulled.present, pulled.detail
    assert all(r.authorization for r in hub.requests if r.server == "hub" and r.file == MAIN)
    assert [r.authorization for r in cdn_gets(hub)] == [False]  # the token never goes to the CDN


@pytest.mark.parametrize(("name", "says"), [
    ("hf.co/org/nothing-GGUF:Q4_K_M", "org/nothing-GGUF does not exist on the Hugging Face Hub at"),
    (f"hf.co/{TINY}/absent.gguf", f"{TINY} has no file absent.gguf; its GGUF files: mmproj-tiny-f16.gguf, "
                                  f"tiny-Q4_K_M.gguf, tiny-Q4_K_S.gguf, tiny-Q8_0.gguf"),
    (f"hf.co/{TINY}:Q4_K_M@v9", f"{TINY} has no revision 'v9'"),
    (f"hf.co/{TINY}:Q4_K", f"'Q4_K' matches 2 GGUF files of {TINY}: tiny-Q4_K_M.gguf, tiny-Q4_K_S.gguf"),
    (f"hf.co/{TINY}:Q2_K", f"{TINY} has no GGUF file matching 'Q2_K'"),
])
def test_what_the_hub_does_not_have_is_one_line(hub, session, name, says):
    with pytest.raises(ModelMissingError) as raised:
        session.pull(session.resolve(f"lc_{name}"))
    assert says in str(raised.value) and "\n" not in str(raised.value)
    assert cdn_gets(hub) == []


def test_a_malformed_id_is_one_line_and_asks_nothing(hub, session):
    with pytest.raises(ModelMissingError, match="names no repository; write it as lc_hf.co/OWNER/REPO:QUANT"):
        session.is_available(session.resolve("lc_hf.co/justone"))
    with pytest.raises(ModelMissingError, match="names no repository"):
        session.pull(session.resolve("lc_hf.co/justone"))
    assert hub.requests == []


def test_a_revision_is_what_is_downloaded_and_what_counts_as_present(hub, session, tmp_path):
    old = session.resolve(f"lc_hf.co/{TINY}:Q4_K_M@v1")
    pulled = session.pull(old)
    assert pulled.present and pulled.revision == f"sha256:{hashlib.sha256(OLD).hexdigest()}"
    assert hub.commit(TINY, "v1") in pulled.detail
    assert session.is_available(old).present
    assert not session.is_available(session.resolve(f"lc_hf.co/{TINY}:Q4_K_M")).present  # main is another commit


def test_a_split_gguf_downloads_every_part_and_serves_the_first(hub, session, tmp_path):
    pulled = session.pull(session.resolve("lc_hf.co/org/split-GGUF:Q4_0"))
    assert pulled.present, pulled.detail
    snapshot = tmp_path / "hub-cache" / "models--org--split-GGUF" / "snapshots" / hub.commit("org/split-GGUF")
    assert pulled.detail.startswith(f"{snapshot / 'big-Q4_0-00001-of-00002.gguf'} (") and "2 parts" in pulled.detail
    assert (snapshot / "big-Q4_0-00002-of-00002.gguf").read_bytes() == PART2
    final = session.progress.stream.getvalue().splitlines()[-1]
    assert final.startswith("llamacpp: org/split-GGUF/big-Q4_0-00001-of-00002.gguf: 341.8 KiB in ")
    assert final.endswith(", 2/2 files")


def test_offline_refuses_to_download_in_one_line(hub, session, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EngineError, match="HF_HUB_OFFLINE is set in the environment; unset it to download"):
        session.pull(session.resolve(f"lc_hf.co/{TINY}:Q4_K_M"))
    assert hub.requests == []


def test_start_serves_the_file_in_the_snapshot(hub, session_for, fake_python, tmp_path):
    session = session_for(python=fake_python)
    ref = session.resolve(f"lc_hf.co/{TINY}:Q4_K_M")
    with pytest.raises(ModelMissingError, match="run with --force-download to fetch it from the Hugging Face Hub"):
        session.start(ref)
    session.pull(ref)
    started = session.start(ref)
    assert started.started, started.detail
    [record] = session.state.records("llamacpp")
    snapshot = tmp_path / "hub-cache" / "models--org--tiny-GGUF" / "snapshots" / hub.commit(TINY)
    assert record.data["model"] == str(snapshot / MAIN)
    assert record.data["alias"] == f"hf.co/{TINY}:Q4_K_M"


def test_the_download_progress_on_a_quiet_session_prints_nothing(hub, llamacpp, make_session):
    session = make_session({"engines": {"llamacpp": {}}}, progress=Progress(io.StringIO(), enabled=False))
    assert session.pull(session.resolve(f"lc_hf.co/{TINY}:Q8_0")).present
    assert session.progress.stream.getvalue() == ""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a thread is POSIX")
def test_ctrl_c_keeps_what_arrived_and_the_next_pull_resumes(hub, session, tmp_path):
    import signal
    import threading

    ref = session.resolve(f"lc_hf.co/{TINY}:Q4_K_M")
    reached = hub.stall(MAIN, at=1_000_000)
    main = threading.get_ident()
    partial = tmp_path / "hub-cache" / "models--org--tiny-GGUF" / "blobs" / (hub.file(TINY, MAIN)[1] + ".incomplete")

    def press_ctrl_c() -> None:  # once the bytes before the stall are on disk, as a user would, mid-download
        if reached.wait(30):
            deadline = time.monotonic() + 10
            while (not partial.is_file() or partial.stat().st_size < 1_000_000) and time.monotonic() < deadline:
                time.sleep(0.01)
            signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        session.pull(ref)
    final = session.progress.stream.getvalue().splitlines()[-1]
    assert final == (f"llamacpp: {TINY}/{MAIN}: stopped at 976.6 KiB of 2.9 MiB; what was downloaded is kept: "
                     f"rerun with --force-download to resume")
    assert partial.stat().st_size == 1_000_000

    hub.heal()
    hub.clear_log()
    assert session.pull(ref).present
    assert [(g.range, g.status) for g in cdn_gets(hub)] == [("bytes=1000000-", 206)]
