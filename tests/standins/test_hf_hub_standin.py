"""The Hugging Face Hub stand-in answers `huggingface_hub`'s own client calls as the Hub does."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import httpx
import pytest

try:
    from .hf_hub import HubRepo, serve_hub, use_hub
except ImportError:  # collected without the package context
    from tests.standins.hf_hub import HubRepo, serve_hub, use_hub

CONFIG = b'{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}'
OLD_CONFIG = b'{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "old": true}'
WEIGHTS = random.Random(0).randbytes(300_000)
OLD_WEIGHTS = random.Random(1).randbytes(200_000)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(WEIGHTS)  # served from disk, as big files are
    repos = {
        "org/tiny": HubRepo({"config.json": CONFIG, "tokenizer.json": "{}", "model.safetensors": weights,
                             "sub/extra.txt": "more"},
                            revisions={"v1": {"config.json": OLD_CONFIG, "model.safetensors": OLD_WEIGHTS}}),
        "org/gated": HubRepo({"config.json": CONFIG, "model-Q4_K_M.gguf": b"GGUF" + bytes(1000)}, gated=True,
                             tokens=["hf_granted"]),
        "org/private": HubRepo({"config.json": CONFIG}, private=True, tokens=["hf_granted"]),
    }
    with serve_hub(repos, tokens=["hf_other"]) as running:
        use_hub(monkeypatch, running, tmp_path / "hf-home")
        yield running


def test_model_info_and_file_listing_with_revisions(hub):
    from huggingface_hub import HfApi

    api = HfApi()
    info = api.model_info("org/tiny")
    assert info.id == "org/tiny" and info.sha == hub.commit("org/tiny") and not info.gated
    assert sorted(s.rfilename for s in info.siblings) == ["config.json", "model.safetensors", "sub/extra.txt",
                                                         "tokenizer.json"]
    detailed = {s.rfilename: s for s in api.model_info("org/tiny", files_metadata=True).siblings}
    assert detailed["model.safetensors"].size == len(WEIGHTS)
    assert detailed["model.safetensors"].lfs.sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    assert detailed["config.json"].lfs is None and detailed["config.json"].size == len(CONFIG)
    old = api.model_info("org/tiny", revision="v1")
    assert old.sha == hub.commit("org/tiny", "v1") != info.sha
    assert api.model_info("org/tiny", revision=old.sha).sha == old.sha  # a commit id is a revision too

    assert sorted(api.list_repo_files("org/tiny")) == ["config.json", "model.safetensors", "sub/extra.txt",
                                                       "tokenizer.json"]
    assert sorted(api.list_repo_files("org/tiny", revision="v1")) == ["config.json", "model.safetensors"]
    top = {entry.path: type(entry).__name__ for entry in api.list_repo_tree("org/tiny")}
    assert top == {"config.json": "RepoFile", "model.safetensors": "RepoFile", "sub": "RepoFolder",
                   "tokenizer.json": "RepoFile"}
    paths = api.get_paths_info("org/tiny", ["config.json", "sub", "absent.txt"], revision="v1")
    assert [(type(p).__name__, p.path) for p in paths] == [("RepoFile", "config.json")]
    paths = api.get_paths_info("org/tiny", ["model.safetensors", "sub"])
    assert [(type(p).__name__, p.path) for p in paths] == [("RepoFile", "model.safetensors"), ("RepoFolder", "sub")]
    assert paths[0].lfs.sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    refs = api.list_repo_refs("org/tiny")
    assert {b.name: b.target_commit for b in refs.branches} == {"main": info.sha, "v1": old.sha}


def test_hf_hub_download_lays_out_the_cache_and_lfs_goes_through_the_cdn_without_the_token(hub, tmp_path):
    from huggingface_hub import hf_hub_download

    cache = tmp_path / "cache"
    config = Path(hf_hub_download("org/tiny", "config.json", cache_dir=cache, token="hf_other"))
    weights = Path(hf_hub_download("org/tiny", "model.safetensors", cache_dir=cache, token="hf_other"))
    commit = hub.commit("org/tiny")
    assert config.read_bytes() == CONFIG and weights.read_bytes() == WEIGHTS
    assert config.parent.name == commit and weights.parent == config.parent
    blob = weights.resolve()
    assert blob.parent.name == "blobs" and blob.name == hashlib.sha256(WEIGHTS).hexdigest()  # LFS: the sha256
    git_oid = hashlib.sha1(b"blob %d\0" % len(CONFIG) + CONFIG).hexdigest()
    assert config.resolve().name == git_oid  # a regular file: its git blob id

    log = [r for r in hub.requests if r.file == "model.safetensors"]
    assert [(r.server, r.method, r.status) for r in log] == [("hub", "HEAD", 302), ("cdn", "GET", 200)]
    assert log[0].authorization and not log[1].authorization  # the client keeps the token off the CDN
    assert log[1].sent == len(WEIGHTS)


def test_snapshot_download_of_two_revisions(hub, tmp_path):
    from huggingface_hub import scan_cache_dir, snapshot_download

    cache = tmp_path / "cache"
    main = Path(snapshot_download("org/tiny", cache_dir=cache))
    old = Path(snapshot_download("org/tiny", revision="v1", cache_dir=cache))
    assert main.name == hub.commit("org/tiny") and old.name == hub.commit("org/tiny", "v1")
    assert (main / "sub" / "extra.txt").read_text() == "more" and (main / "model.safetensors").read_bytes() == WEIGHTS
    assert (old / "config.json").read_bytes() == OLD_CONFIG and not (old / "tokenizer.json").exists()
    refs = main.parents[1] / "refs"
    assert (refs / "main").read_text() == main.name and (refs / "v1").read_text() == old.name
    [repo] = scan_cache_dir(cache).repos
    assert repo.repo_id == "org/tiny" and {r.commit_hash for r in repo.revisions} == {main.name, old.name}
    # Offline, the cache answers alone.
    assert Path(snapshot_download("org/tiny", revision="v1", cache_dir=cache, local_files_only=True)) == old


def test_errors_carry_the_hubs_codes(hub, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub import errors as hf

    cache = tmp_path / "cache"
    api = HfApi()
    with pytest.raises(hf.RepositoryNotFoundError) as unknown:
        api.model_info("org/absent")
    assert unknown.value.response.status_code == 401  # no token: the Hub says 401 for what it will not show
    with pytest.raises(hf.RepositoryNotFoundError) as unknown:
        api.model_info("org/absent", token="hf_other")
    assert unknown.value.response.status_code == 404
    with pytest.raises(hf.RepositoryNotFoundError):
        api.model_info("org/private")
    assert api.model_info("org/private", token="hf_granted").id == "org/private"
    with pytest.raises(hf.RevisionNotFoundError):
        api.model_info("org/tiny", revision="v9")
    with pytest.raises(hf.RevisionNotFoundError):
        hf_hub_download("org/tiny", "config.json", revision="v9", cache_dir=cache)
    with pytest.raises(getattr(hf, "RemoteEntryNotFoundError", hf.EntryNotFoundError)):
        hf_hub_download("org/tiny", "absent.json", cache_dir=cache)
    assert (cache / "models--org--tiny" / ".no_exist" / hub.commit("org/tiny") / "absent.json").exists()
    with pytest.raises(hf.HfHubHTTPError) as invalid:
        api.model_info("org/tiny", token="hf_nobody_knows")
    assert invalid.value.response.status_code == 401
    assert not isinstance(invalid.value, hf.RepositoryNotFoundError)


def test_gated_repo(hub, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub import errors as hf

    cache = tmp_path / "cache"
    assert HfApi().model_info("org/gated").gated == "auto"  # its card and file list are public
    assert "model-Q4_K_M.gguf" in HfApi().list_repo_files("org/gated")
    with pytest.raises(hf.GatedRepoError) as anonymous:
        hf_hub_download("org/gated", "model-Q4_K_M.gguf", cache_dir=cache)
    assert anonymous.value.response.status_code == 401
    with pytest.raises(hf.GatedRepoError) as refused:
        hf_hub_download("org/gated", "model-Q4_K_M.gguf", cache_dir=cache, token="hf_other")
    assert refused.value.response.status_code == 403
    got = Path(hf_hub_download("org/gated", "model-Q4_K_M.gguf", cache_dir=cache, token="hf_granted"))
    assert got.read_bytes().startswith(b"GGUF")


def test_token_saved_by_hf_auth_login_is_used(hub, tmp_path):
    from huggingface_hub import hf_hub_download

    (tmp_path / "hf-home").mkdir()
    (tmp_path / "hf-home" / "token").write_text("hf_granted")
    got = hf_hub_download("org/gated", "config.json", cache_dir=tmp_path / "cache")
    assert Path(got).read_bytes() == CONFIG


def test_ranges_head_and_416(hub):
    commit = hub.commit("org/tiny")
    with httpx.Client(base_url=hub.url) as client:
        head = client.head("/org/tiny/resolve/main/config.json")
        assert head.status_code == 200 and head.content == b"" and int(head.headers["Content-Length"]) == len(CONFIG)
        assert head.headers["X-Repo-Commit"] == commit and head.headers["Accept-Ranges"] == "bytes"
        part = client.get("/org/tiny/resolve/main/config.json", headers={"Range": "bytes=10-"})
        assert part.status_code == 206 and part.content == CONFIG[10:]
        assert part.headers["Content-Range"] == f"bytes 10-{len(CONFIG) - 1}/{len(CONFIG)}"
        redirect = client.head("/org/tiny/resolve/v1/model.safetensors")
        assert redirect.status_code == 302 and redirect.headers["X-Linked-Size"] == str(len(OLD_WEIGHTS))
        assert redirect.headers["X-Linked-ETag"] == f'"{hashlib.sha256(OLD_WEIGHTS).hexdigest()}"'
        assert redirect.headers["Location"].startswith(hub.cdn_url)
        cdn = httpx.get(redirect.headers["Location"], headers={"Range": "bytes=1000-1999"})
        assert cdn.status_code == 206 and cdn.content == OLD_WEIGHTS[1000:2000]
        assert cdn.headers["Content-Range"] == f"bytes 1000-1999/{len(OLD_WEIGHTS)}"
        past = httpx.get(redirect.headers["Location"], headers={"Range": f"bytes={len(OLD_WEIGHTS)}-"})
        assert past.status_code == 416 and past.headers["Content-Range"] == f"bytes */{len(OLD_WEIGHTS)}"


def test_dropped_connection_then_outage(hub):
    location = httpx.head(f"{hub.url}/org/tiny/resolve/main/model.safetensors").headers["Location"]
    hub.drop("model.safetensors", at=100_000, then_status=503)
    received = bytearray()
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("GET", location) as response:
            for chunk in response.iter_bytes():
                received += chunk
    assert bytes(received) == WEIGHTS[:100_000]
    assert httpx.get(location, headers={"Range": "bytes=100000-"}).status_code == 503
    assert httpx.head(f"{hub.url}/org/tiny/resolve/main/model.safetensors").status_code == 503
    hub.heal()
    rest = httpx.get(location, headers={"Range": "bytes=100000-"})
    assert rest.status_code == 206 and bytes(received) + rest.content == WEIGHTS
    gets = hub.downloads("model.safetensors")
    assert [(g.range, g.sent) for g in gets] == [(None, 100_000), ("bytes=100000-", len(WEIGHTS) - 100_000)]


def test_huggingface_hub_resumes_a_dropped_connection_itself(hub, tmp_path):
    from huggingface_hub import hf_hub_download

    hub.drop("model.safetensors", at=150_000)
    got = Path(hf_hub_download("org/tiny", "model.safetensors", cache_dir=tmp_path / "cache"))
    assert got.read_bytes() == WEIGHTS
    assert [g.sent for g in hub.downloads("model.safetensors")][0] == 150_000  # cut, then fetched again


def test_stall_holds_a_response_until_healed(hub):
    import threading

    location = httpx.head(f"{hub.url}/org/tiny/resolve/main/model.safetensors").headers["Location"]
    reached = hub.stall("model.safetensors", at=64 * 1024 + 5)
    body: list[bytes] = []
    reader = threading.Thread(target=lambda: body.append(httpx.get(location, timeout=30).content))
    reader.start()
    assert reached.wait(10)
    [get] = hub.downloads("model.safetensors", finished=False)
    assert get.sent == 64 * 1024 + 5 and reader.is_alive()
    hub.heal()
    reader.join(10)
    assert body == [WEIGHTS]
