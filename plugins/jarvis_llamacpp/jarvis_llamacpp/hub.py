"""GGUF files from Hugging Face Hub repositories: the model IDs, and what the Hugging Face cache holds (offline).

Model IDs follow Ollama's spelling of Hub GGUFs (what follows the engine prefix `lc_` / `llamacpp:`):

    hf.co/OWNER/REPO:QUANT              the repo's .gguf file whose name holds QUANT (`Q4_K_M`, any case)
    hf.co/OWNER/REPO/PATH/FILE.gguf     that file
    hf.co/OWNER/REPO                    the repo's only GGUF, else its Q4_K_M one (Ollama's default)
    ... @REVISION                       at a branch, tag or commit (default: main)

`huggingface.co/` works as well as `hf.co/`. A split GGUF (`...-00001-of-00003.gguf`) is one choice: every part is
downloaded and llama.cpp is given the first. The files live in the Hugging Face hub cache, laid out as `hf download`
leaves it, so `hf`, transformers and llama.cpp share them; its folder is where huggingface_hub looks:
`HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.

Only `pull` touches the network: it asks the Hub for the revision's files (the core's `hub_files`), picks the file
here, and has the core's `hub_download` (jarvis_core/hub.py) put it into the cache, resumably, on one progress task.
Nothing here imports huggingface_hub (`jarvis --help` stays fast).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

from .settings import ENGINE

if TYPE_CHECKING:
    from jarvis_core.api import Availability, Progress

HUB_PREFIXES = ("hf.co/", "huggingface.co/")
DEFAULT_QUANT = "Q4_K_M"
"""Picked when an ID names no quantization and the repo holds more than one GGUF (as Ollama does)."""
EXAMPLE = "lc_hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M"
SYNTAX = ("write it as lc_hf.co/OWNER/REPO:QUANT (for example " + EXAMPLE + ") or lc_hf.co/OWNER/REPO/FILE.gguf, "
          "optionally followed by @REVISION")

_NAME = re.compile(r"^[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9_])?$")
_QUANT = re.compile(r"^[\w.-]+$")
_REVISION = re.compile(r"^[\w.-]+(?:/[\w.-]+)*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
PARTIAL = ".incomplete"
"""Suffix of a blob being downloaded (`blobs/<sha256>.incomplete`), kept after an interruption to be resumed."""
REVISION_HINT = "check what follows '@' in the model ID"


class HubIdError(ValueError):
    """An `hf.co/...` model name that does not follow the syntax (the message is one line)."""


class NoMatch(LookupError):
    """No file, or more than one, of a repo answers the ID (the message is one line, listing what the repo has)."""


@dataclass(frozen=True)
class HubRef:
    """A GGUF file (or a split set) of a Hub repo, as a model ID names it."""

    repo_id: str
    file: str | None = None
    """The file's path in the repo, when the ID names it."""
    quant: str | None = None
    """The quantization the file name holds (`Q4_K_M`), when the ID names one."""
    revision: str | None = None
    """A branch, tag or commit; None is the main branch."""

    def __str__(self) -> str:
        text = f"hf.co/{self.repo_id}"
        text += f"/{self.file}" if self.file else f":{self.quant}" if self.quant else ""
        return text + (f"@{self.revision}" if self.revision else "")

    @property
    def what(self) -> str:
        """The file or quantization asked for, in words: `Q4_K_M of org/repo`, `x.gguf of org/repo`."""
        asked = self.file or self.quant or "the GGUF"
        return f"{asked} of {self.repo_id}" + (f" (revision {self.revision})" if self.revision else "")


def is_hub_name(name: str) -> bool:
    return name.lower().startswith(HUB_PREFIXES)


def parse(name: str) -> HubRef:
    """The HubRef an `hf.co/...` model name means; HubIdError (one line, with the syntax) when it is malformed."""
    lowered = name.lower()
    prefix = next((p for p in HUB_PREFIXES if lowered.startswith(p)), None)
    if prefix is None:
        raise HubIdError(f"'{name}' does not start with hf.co/; {SYNTAX}.")
    rest = name[len(prefix):]
    revision = quant = None
    if "@" in rest:
        rest, revision = rest.rsplit("@", 1)
        if ":" in revision:  # `REPO@REV:QUANT`, the other order (a git ref never holds ':')
            revision, quant = revision.split(":", 1)
        if not _REVISION.match(revision):
            raise HubIdError(f"'{name}' names no usable revision after '@' ('{revision}'); {SYNTAX}.")
    parts = rest.split("/")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise HubIdError(f"'{name}' names no repository; {SYNTAX}.")
    owner, repo = parts[0], parts[1]
    if ":" in repo:
        if len(parts) > 2 or quant is not None:
            raise HubIdError(f"'{name}' names more than one quantization or file; {SYNTAX}.")
        repo, quant = repo.split(":", 1)
    if quant is not None and len(parts) > 2:
        raise HubIdError(f"'{name}' names both a quantization and a file; {SYNTAX}.")
    if quant == "":
        raise HubIdError(f"'{name}' has an empty quantization after ':'; {SYNTAX}.")
    if quant is not None and not _QUANT.match(quant):
        raise HubIdError(f"'{name}': '{quant}' is not a quantization name (letters, digits, '_', '-', '.'); "
                         f"{SYNTAX}.")
    for part in (owner, repo):
        if not _NAME.match(part) or "--" in part or ".." in part:
            raise HubIdError(f"'{name}': '{part}' is not a valid Hugging Face user or repository name; {SYNTAX}.")
    file = "/".join(parts[2:]) or None
    if file is not None:
        if any(p in ("", ".", "..") for p in parts[2:]) or "\\" in file:
            raise HubIdError(f"'{name}': '{file}' is not a file path inside the repository; {SYNTAX}.")
        if not file.lower().endswith(".gguf"):
            raise HubIdError(f"'{name}' names '{file}', which is not a .gguf file; llama.cpp loads GGUF files: "
                             f"{SYNTAX}.")
    return HubRef(f"{owner}/{repo}", file=file, quant=quant, revision=revision)


# --- where the cache is ---------------------------------------------------------------------------------------------


def hub_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The hub cache folder (the one holding `models--OWNER--REPO`), read from the environment at each call, as
    huggingface_hub resolves it: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub,
    ~/.cache/huggingface/hub."""
    env = os.environ if environ is None else environ
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var):
            return Path(os.path.expanduser(env[var]))
    if env.get("HF_HOME"):
        return Path(os.path.expanduser(env["HF_HOME"])) / "hub"
    base = Path(os.path.expanduser(env["XDG_CACHE_HOME"])) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def repo_folder(cache: Path, repo_id: str) -> Path:
    """`models--OWNER--REPO`, huggingface_hub's folder for a model repo."""
    return cache / ("models--" + repo_id.replace("/", "--"))


# --- which file of a repo -------------------------------------------------------------------------------------------


def split_part(path: str) -> tuple[str, int, int] | None:
    """(the set's name without the part suffix, part number, parts in all) of a split GGUF's file, else None."""
    found = _SPLIT.search(path)
    if found is None:
        return None
    return path[:found.start()], int(found.group(1)), int(found.group(2))


def _groups(paths: Iterable[str]) -> dict[str, list[str]]:
    """The GGUF files, grouped into choices: a split set is one choice (its parts in order), any other file one."""
    groups: dict[str, list[str]] = {}
    for path in sorted(paths):
        part = split_part(path)
        key = f"{part[0]}-*-of-{part[2]:05d}.gguf" if part else path
        groups.setdefault(key, []).append(path)
    for key, members in groups.items():
        members.sort(key=lambda p: (split_part(p) or ("", 0, 0))[1])
    return groups


def _shown(key: str, members: list[str]) -> str:
    part = split_part(members[0])
    return f"{key} ({len(members)} of {part[2]} parts)" if part and len(members) != part[2] else \
        f"{key} ({len(members)} parts)" if part else key


def listing(paths: Iterable[str], limit: int = 12) -> str:
    """The GGUF choices among `paths`, for a message: `a.gguf, b.gguf, ... (30 in all)`."""
    shown = [_shown(k, m) for k, m in _groups(p for p in paths if p.lower().endswith(".gguf")).items()]
    if not shown:
        return "no .gguf file"
    more = f", ... ({len(shown)} in all)" if len(shown) > limit else ""
    return ", ".join(shown[:limit]) + more


def _matches(quant: str, path: str) -> bool:
    """`quant` as a whole word of the file's path: Q4_K matches `x-Q4_K.gguf`, not `x-Q4_K_M.gguf`; Q4_0 not
    `x-IQ4_0.gguf`; f16 not `x-bf16.gguf`."""
    pattern = r"(?<![a-z0-9])" + re.escape(quant.lower()) + r"(?!_?[a-z0-9])"
    return re.search(pattern, path.lower()) is not None


def choose(ref: HubRef, paths: Iterable[str], *, where: str) -> list[str]:
    """The file (or the parts of a split set, first first) of the repo files `paths` that `ref` names; NoMatch with
    one line listing what `where` holds when none does, or when more than one does."""
    paths = list(paths)
    ggufs = [p for p in paths if p.lower().endswith(".gguf")]
    groups = _groups(ggufs)
    if ref.file is not None:
        if ref.file not in paths:
            raise NoMatch(f"{where} has no file {ref.file}; its GGUF files: {listing(ggufs)}")
        part = split_part(ref.file)
        if part is None:
            return [ref.file]
        members = next(m for m in groups.values() if ref.file in m)
        return members if part[1] == 1 else [ref.file]  # a later part alone is what was asked for
    # Vision projectors (mmproj-*.gguf) sit next to the model in multimodal repos; they are never the model.
    models = {k: m for k, m in groups.items() if not k.rsplit("/", 1)[-1].lower().startswith("mmproj")}
    if ref.quant is not None:
        hits = {k: m for k, m in models.items() if _matches(ref.quant, k)}
        if not hits:  # not as a whole word: anywhere in the name, as asked
            hits = {k: m for k, m in models.items() if ref.quant.lower() in k.lower()}
        asked = f"'{ref.quant}'"
    else:
        hits = models
        if len(hits) > 1:
            hits = {k: m for k, m in models.items() if _matches(DEFAULT_QUANT, k)} or hits
        asked = f"no quantization (so its only GGUF, else its {DEFAULT_QUANT} one)"
    if len(hits) == 1:
        key, members = next(iter(hits.items()))
        part = split_part(members[0])
        numbers = [(split_part(m) or ("", 0, 0))[1] for m in members]
        if part is not None and numbers != list(range(1, part[2] + 1)):
            raise NoMatch(f"{where} holds only {len(members)} of the {part[2]} parts of {key}")
        return members
    if not hits:
        raise NoMatch(f"{where} has no GGUF file matching {asked}; its GGUF files: {listing(ggufs)}")
    raise NoMatch(f"{asked} matches {len(hits)} GGUF files of {where}: {listing([m[0] for m in hits.values()])}; "
                  f"name one: lc_hf.co/{ref.repo_id}:<a longer quantization> or lc_hf.co/{ref.repo_id}/<file>")


# --- what the cache holds -------------------------------------------------------------------------------------------


@dataclass
class Cached:
    """What the hub cache holds of a HubRef: the file to load (every part present), or why not."""

    path: Path | None
    """The snapshot's path of the file (the first part of a split set); llama.cpp is given this path."""
    detail: str
    fix: str | None = None
    commit: str | None = None
    files: tuple[str, ...] = ()
    """The repo paths of the chosen file (all parts)."""

    @property
    def revision(self) -> str | None:
        """What the report records: the file's sha256 (its blob's name: the content's digest for LFS files), else
        the commit."""
        if self.path is None:
            return None
        blob = Path(os.path.realpath(self.path)).name
        return f"sha256:{blob}" if _SHA256.match(blob) else self.commit


def commit_of(folder: Path, revision: str | None) -> str | None:
    """The commit a revision (default main) points at in the cache, as huggingface_hub records it (`refs/<name>`)."""
    name = revision or "main"
    try:
        ref = (folder / "refs" / name).read_text(encoding="utf-8").strip()
        if ref:
            return ref
    except (OSError, ValueError):
        pass
    if _COMMIT.match(name) and (folder / "snapshots" / name).is_dir():
        return name
    return None


def _snapshot_files(snapshot: Path) -> list[str]:
    found = []
    for root, _dirs, names in os.walk(snapshot):
        for name in names:
            full = Path(root) / name
            if full.is_file():  # follows the snapshot's link: a dangling one is no file
                found.append(full.relative_to(snapshot).as_posix())
    return found


def download_fix(ref: HubRef, files: tuple[str, ...] = ()) -> str | None:
    """The `hf download` command that puts `ref` into the cache, when it can be written without asking the Hub."""
    revision = f" --revision {ref.revision}" if ref.revision else ""
    if files or ref.file:
        return f"hf download {ref.repo_id} {' '.join(files or (ref.file,))}{revision}"  # type: ignore[arg-type]
    if ref.quant:
        return f"hf download {ref.repo_id} --include '*{ref.quant}*.gguf'{revision}"
    return None


def lookup(ref: HubRef, cache: Path) -> Cached:
    """Is `ref` in the hub cache? Never touches the network. A quantization is looked for among the files the
    cache holds of the revision."""
    from jarvis_core.api import human_bytes

    folder = repo_folder(cache, ref.repo_id)
    commit = commit_of(folder, ref.revision) if folder.is_dir() else None
    partial = _partial_bytes(folder)
    kept = (f" (an interrupted download left {human_bytes(partial)} in {folder / 'blobs'}: --force-download "
            f"resumes it)") if partial else ""
    if commit is None:
        where = f"revision {ref.revision} of {ref.repo_id}" if ref.revision else ref.repo_id
        return Cached(None, f"{where} is not in the Hugging Face cache at {cache}{kept}", download_fix(ref))
    snapshot = folder / "snapshots" / commit
    try:
        files = choose(ref, _snapshot_files(snapshot) if snapshot.is_dir() else [],
                       where=f"the Hugging Face cache's copy of {ref.repo_id} ({snapshot})")
    except NoMatch as exc:
        return Cached(None, f"{exc}{kept}", download_fix(ref), commit=commit)
    return Cached(snapshot / files[0], f"{snapshot / files[0]} ({ref.repo_id} at commit {commit[:12]}"
                  + (f", {len(files)} parts" if len(files) > 1 else "") + ")",
                  commit=commit, files=tuple(files))


def _partial_bytes(folder: Path) -> int:
    """Bytes the unfinished downloads of the repo hold (Jarvis keeps them as `blobs/<sha256>.incomplete`)."""
    total = 0
    blobs = folder / "blobs"
    if blobs.is_dir():
        for entry in blobs.glob(f"*{PARTIAL}"):
            if _SHA256.match(entry.name[:-len(PARTIAL)]):
                try:
                    total += entry.stat().st_size
                except OSError:
                    pass
    return total


# --- downloading ----------------------------------------------------------------------------------------------------


def pull(ref: HubRef, progress: Progress) -> Availability:
    """Put `ref` into the hub cache (a no-op when it is there) and say where it is. Raises ModelMissingError (no such
    repo, revision or file; gated; no file matches) or EngineError (offline, unreachable, broken off, disk full), one
    line each; KeyboardInterrupt goes through, and what was downloaded is kept for the next try."""
    from jarvis_core.api import Availability, ModelMissingError, hub_download, hub_files

    cache = hub_cache_dir()
    found = lookup(ref, cache)
    if found.path is None:
        listing = hub_files(ref.repo_id, revision=ref.revision, engine=ENGINE, revision_hint=REVISION_HINT)
        try:
            names = choose(ref, listing.sizes,
                           where=ref.repo_id + (f" at revision {ref.revision}" if ref.revision else ""))
        except NoMatch as exc:
            raise ModelMissingError(f"{exc}.", engine=ENGINE) from None
        hub_download(ref.repo_id, names, cache_dir=cache, progress=progress, engine=ENGINE, revision=ref.revision,
                     label=f"{ENGINE}: {ref.repo_id}/{names[0]}", revision_hint=REVISION_HINT)
        found = lookup(ref, cache)
        if found.path is None:
            raise ModelMissingError(f"After downloading, {found.detail}.", engine=ENGINE)
    return Availability(present=True, detail=found.detail, revision=found.revision)
