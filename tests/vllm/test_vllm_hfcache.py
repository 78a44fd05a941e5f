"""Completeness checks on real Hugging Face cache layouts built in tmp_path (offline; nothing is downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jarvis_core.errors import ModelMissingError
from jarvis_vllm import hfcache

from vllm_fixtures import *  # noqa: F401,F403  (fixtures)
from vllm_helpers import CONFIG, make_repo, sharded_index

REPO_ID = "jarvis-test/tiny"


@pytest.fixture
def hub(tmp_path: Path) -> Path:
    path = tmp_path / "hub"
    path.mkdir()
    return path


def test_complete_single_file_model(hub: Path):
    snap = make_repo(hub, REPO_ID, {"config.json": CONFIG, "model.safetensors": b"w" * 64, "tokenizer.json": b"{}"})
    check = hfcache.check_model(REPO_ID, hub)
    assert check.present, check.detail
    assert check.path == snap and check.revision == "a" * 40 and REPO_ID in check.detail


def test_complete_sharded_model_and_the_huggingface_hub_view_agrees(hub: Path):
    make_repo(hub, REPO_ID, {"config.json": CONFIG, "model.safetensors.index.json": sharded_index(
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"),
        "model-00001-of-00002.safetensors": b"1", "model-00002-of-00002.safetensors": b"2"})
    assert hfcache.check_model(REPO_ID, hub).present
    from huggingface_hub import scan_cache_dir

    assert [r.repo_id for r in scan_cache_dir(hub).repos] == [REPO_ID]


def test_partial_download_with_incomplete_blob(hub: Path):
    make_repo(hub, REPO_ID, {"config.json": CONFIG}, incomplete=("0123abcd",))
    check = hfcache.check_model(REPO_ID, hub)
    assert not check.present and check.partial
    assert "partly downloaded" in check.detail and "1 unfinished file" in check.detail


def test_missing_shard(hub: Path):
    make_repo(hub, REPO_ID, {"config.json": CONFIG, "model.safetensors.index.json": sharded_index(
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"),
        "model-00001-of-00002.safetensors": b"1"})
    check = hfcache.check_model(REPO_ID, hub)
    assert not check.present
    assert "1 of 2 weight shards are missing (first: model-00002-of-00002.safetensors)" in check.detail


def test_missing_config_or_weights(hub: Path):
    make_repo(hub, REPO_ID, {"model.safetensors": b"w"})
    assert "config.json is missing" in hfcache.check_model(REPO_ID, hub).detail
    make_repo(hub, "org/noweights", {"config.json": CONFIG, "tokenizer.json": b"{}"})
    assert "no weights" in hfcache.check_model("org/noweights", hub).detail


def test_dangling_snapshot_symlink_counts_as_missing(hub: Path):
    snap = make_repo(hub, REPO_ID, {"config.json": CONFIG, "model.safetensors": b"w"})
    (snap / "model.safetensors").resolve().unlink()
    assert not hfcache.check_model(REPO_ID, hub).present


def test_missing_model_and_missing_cache(hub: Path, tmp_path: Path):
    check = hfcache.check_model("org/absent", hub)
    assert not check.present and "not in the Hugging Face cache at" in check.detail and str(hub) in check.detail
    assert not hfcache.check_model("org/absent", tmp_path / "no-such-cache").present


def test_repo_folder_without_a_snapshot_for_main(hub: Path):
    folder = hub / "models--org--empty"
    (folder / "blobs").mkdir(parents=True)
    check = hfcache.check_model("org/empty", hub)
    assert not check.present and "refs/main" in check.detail


def test_snapshots_without_symlinks_as_on_windows(hub: Path):
    make_repo(hub, REPO_ID, {"config.json": CONFIG, "model.safetensors": b"w"}, symlinks=False)
    assert hfcache.check_model(REPO_ID, hub).present


def test_local_model_folder(tmp_path: Path, hub: Path):
    folder = tmp_path / "models" / "mine"
    folder.mkdir(parents=True)
    (folder / "config.json").write_bytes(CONFIG)
    check = hfcache.check_model(str(folder), hub)
    assert not check.present and check.local_folder and "no weights" in check.detail
    (folder / "model.safetensors").write_bytes(b"w")
    check = hfcache.check_model(str(folder), hub)
    assert check.present and check.local_folder and check.path == folder
    os.chdir(tmp_path)
    assert hfcache.check_model("./models/mine", hub).present
    assert "no model folder" in hfcache.check_model("./models/other", hub).detail
    assert "neither" in hfcache.check_model("not a repo!", hub).detail


def test_is_available_hook_reports_fix_and_revision(session_for, tmp_path: Path, monkeypatch):
    hub = tmp_path / "hub"
    make_repo(hub, REPO_ID, {"config.json": CONFIG, "model.safetensors": b"w"}, revision="b" * 40)
    make_repo(hub, "org/partial", {"config.json": CONFIG}, incomplete=("dead",))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    session = session_for()
    ok = session.is_available(session.resolve(f"vllm:{REPO_ID}"))
    assert ok.present and ok.revision == "b" * 40 and ok.fix is None
    partial = session.is_available(session.resolve("vl_org/partial"))
    assert not partial.present and "--force-download" in partial.fix and "hf download org/partial" in partial.fix
    missing = session.is_available(session.resolve("vllm:org/absent"))
    assert not missing.present and str(hub) in missing.detail


def test_start_refuses_a_missing_model_at_once(session_for, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    session = session_for(runtime="process", executable=str(tmp_path / "no-vllm"), port=1)
    with pytest.raises(ModelMissingError, match="force-download"):
        session.start(session.resolve("vllm:org/absent"))


def test_pull_of_a_local_folder_cannot_download(session_for, tmp_path: Path):
    folder = tmp_path / "half"
    folder.mkdir()
    session = session_for(runtime="process", executable="/nonexistent/vllm")
    with pytest.raises(ModelMissingError, match="cannot be downloaded"):
        session.pull(session.resolve(f"vllm:{folder}"))


def test_pull_reports_an_unreachable_hub_in_one_line(session_for, tmp_path: Path, monkeypatch):
    from jarvis_core.errors import EngineError

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.delenv("HF_HUB_OFFLINE")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    session = session_for(runtime="process", executable="/nonexistent/vllm")
    with pytest.raises(EngineError) as info:
        session.pull(session.resolve("vllm:org/absent"))
    message = str(info.value)
    assert "\n" not in message and "Cannot download org/absent" in message
    assert "the Hugging Face Hub at http://127.0.0.1:9 cannot be reached" in message


def test_pull_with_hf_hub_offline_set_is_refused(session_for, tmp_path: Path, monkeypatch):
    from jarvis_core.errors import EngineError

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # HF_HUB_OFFLINE=1: the tests' default
    session = session_for(runtime="process", executable="/nonexistent/vllm")
    with pytest.raises(EngineError, match="HF_HUB_OFFLINE is set in the environment; unset it to download"):
        session.pull(session.resolve("vllm:org/absent"))


def test_a_revision_is_checked_in_the_cache(session_for, tmp_path: Path, monkeypatch):
    hub = tmp_path / "hub"
    make_repo(hub, REPO_ID, {"config.json": CONFIG, "model.safetensors": b"w"})  # main only
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    session = session_for(models={REPO_ID: {"revision": "v2"}})
    pinned = session.is_available(session.resolve(f"vllm:{REPO_ID}"))
    assert not pinned.present and "revision v2 of" in pinned.detail
    assert pinned.fix == f"rerun with --force-download, or `hf download {REPO_ID} --revision v2`"
    (hub / "models--jarvis-test--tiny" / "refs" / "v2").write_text("a" * 40)  # v2 is the commit main has
    assert session.is_available(session.resolve(f"vllm:{REPO_ID}")).present


@pytest.mark.parametrize("revision", ["", "main branch", "--help", "a..b", "x" * 300])
def test_a_bad_revision_names_the_key(vllm_plugin, make_session, revision):
    from jarvis_core.errors import ConfigError

    session = make_session({"engines": {"vllm": {"models": {REPO_ID: {"revision": revision}}}}})
    with pytest.raises(ConfigError) as info:
        session.is_available(session.resolve(f"vllm:{REPO_ID}"))
    assert f"engines.vllm.models.{REPO_ID}" in str(info.value) and "revision: expected a branch" in str(info.value)
