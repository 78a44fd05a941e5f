"""Ollama models: descriptions, and the on-disk layout (engines.md section 1.10).

Used by the Ollama stand-in (``ollama_server.py``, ``bin/ollama``) and by tests of on-disk availability
checks. Only the standard library is used, so the fake ``ollama`` executable runs on any Python >= 3.8.

Layout written and read here::

    <models_dir>/manifests/registry.ollama.ai/library/<name>/<tag>   # JSON manifest, schemaVersion 2
    <models_dir>/manifests/registry.ollama.ai/<user>/<name>/<tag>
    <models_dir>/manifests/hf.co/<org>/<repo>/<tag>
    <models_dir>/blobs/sha256-<64 hex>                              # content-addressed layers
    <models_dir>/blobs/sha256-<64 hex>-partial                      # an interrupted download

The weights blob is a *valid GGUF file with metadata and no tensors* (architecture, parameter count, file
type, context length), so a reader of GGUF headers sees sensible values. A manifest may declare a larger
weights ``size`` than the blob holds (``write_model(..., size=N)``), so that sizes look realistic
without writing gigabytes; the digests are always the true sha256 of the bytes written.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import re
import struct
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

MEDIA_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_PROJECTOR = "application/vnd.ollama.image.projector"
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_PARAMS = "application/vnd.ollama.image.params"
MEDIA_LICENSE = "application/vnd.ollama.image.license"
MEDIA_SYSTEM = "application/vnd.ollama.image.system"

# bits per weight of common GGUF quantizations, and their GGUF file_type numbers
QUANT_BITS = {"F32": 32.0, "F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q6_K": 6.56, "Q5_K_M": 5.69,
              "Q5_0": 5.5, "Q4_1": 5.0, "Q4_K_M": 4.85, "Q4_K_S": 4.58, "Q4_0": 4.5, "Q3_K_M": 3.91,
              "Q2_K": 3.35}
QUANT_FILE_TYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q2_K": 10,
                   "Q3_K_M": 12, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18, "BF16": 32}
_FILE_TYPE_QUANT = {v: k for k, v in QUANT_FILE_TYPE.items()}

PROJECTOR_SIZE = 624_434_368  # a typical CLIP projector (llava), bytes

_NAME_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_NAME_RE = re.compile(rf"^{_NAME_PART}(?:/{_NAME_PART}){{0,2}}(?::[A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})?$")

CHATML_TEMPLATE = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)
TOOLS_TEMPLATE_PART = "{{- if .Tools }}<tools>{{ range .Tools }}{{ . }}{{ end }}</tools>{{ end }}"
THINKING_TEMPLATE_PART = "{{- if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}"
DEFAULT_PARAMS = {"stop": ["<|im_start|>", "<|im_end|>"], "temperature": 0.7}
DEFAULT_LICENSE = "Apache License 2.0 (stand-in model, no weights)"


# --------------------------------------------------------------------------- names

def is_valid_name(name: str) -> bool:
    """True if ``name`` is a syntactically valid Ollama model name (``[host/][ns/]model[:tag]``)."""
    return bool(name) and bool(_NAME_RE.match(name.strip()))


def split_name(name: str) -> Tuple[str, str, str, str]:
    """``name`` -> (host, namespace, model, tag), filling the defaults the way Ollama does."""
    name = name.strip()
    tag = DEFAULT_TAG
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    parts = name.split("/")
    if len(parts) == 1:
        return DEFAULT_HOST, DEFAULT_NAMESPACE, parts[0], tag
    if len(parts) == 2:
        return DEFAULT_HOST, parts[0], parts[1], tag
    return parts[0], "/".join(parts[1:-1]), parts[-1], tag


def canonical_name(name: str) -> str:
    """The name as ``/api/tags`` shows it: ``qwen2.5`` -> ``qwen2.5:latest``, ``user/m:t`` kept,
    ``registry.ollama.ai/library/m:t`` -> ``m:t``."""
    host, ns, model, tag = split_name(name)
    if host == DEFAULT_HOST and ns == DEFAULT_NAMESPACE:
        return f"{model}:{tag}"
    if host == DEFAULT_HOST:
        return f"{ns}/{model}:{tag}"
    return f"{host}/{ns}/{model}:{tag}"


def manifest_path(models_dir: Union[str, Path], name: str) -> Path:
    host, ns, model, tag = split_name(name)
    return Path(models_dir, "manifests", host, *ns.split("/"), model, tag)


def blob_path(models_dir: Union[str, Path], digest: str) -> Path:
    """``sha256:<hex>`` (or bare hex) -> ``<models_dir>/blobs/sha256-<hex>``."""
    hexd = digest.split(":", 1)[-1]
    return Path(models_dir, "blobs", f"sha256-{hexd}")


# --------------------------------------------------------------------------- model description

def _format_params(count: int) -> str:
    if count >= 1_000_000_000:
        return f"{count / 1e9:.1f}B"
    return f"{count / 1e6:.0f}M"


def _parse_params(text: str) -> Optional[int]:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([BbMmKk]?)\s*", text or "")
    if not m:
        return None
    mult = {"b": 1e9, "m": 1e6, "k": 1e3, "": 1}[m.group(2).lower()]
    return int(float(m.group(1)) * mult)


def _guess_params(name: str) -> int:
    _, _, model, tag = split_name(name)
    for text in (tag, model):
        m = re.search(r"(?<![A-Za-z0-9.])(\d+(?:\.\d+)?)([bm])(?![a-z])", text.lower())
        if m:
            return int(float(m.group(1)) * (1e9 if m.group(2) == "b" else 1e6))
    return 1_000_000_000


def _guess_family(model: str) -> str:
    m = model.lower()
    table = [("qwen3", "qwen3"), ("qwen2.5vl", "qwen25vl"), ("qwen", "qwen2"), ("gemma3", "gemma3"),
             ("gemma2", "gemma2"), ("gemma", "gemma"), ("phi3", "phi3"), ("phi4", "phi3"), ("phi", "phi2"),
             ("deepseek-r1", "qwen2"), ("mistral", "llama"), ("llava", "llama"), ("smollm", "llama"),
             ("llama", "llama")]
    for prefix, family in table:
        if m.startswith(prefix):
            return family
    return "llama"


def _guess_capabilities(model: str) -> List[str]:
    m = model.lower()
    caps = ["completion"]
    if m.startswith(("qwen", "llama3", "mistral", "smollm2")) and "vl" not in m:
        caps.append("tools")
    if m.startswith(("llava", "bakllava", "moondream")) or "vision" in m or "-vl" in m or m.split(":")[0].endswith("vl"):
        caps.append("vision")
    if m.startswith(("qwen3", "deepseek-r1")):
        caps.append("thinking")
    return caps


def _parse_time(value: Any) -> _dt.datetime:
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo else value.astimezone()
    if isinstance(value, (int, float)):
        return _dt.datetime.fromtimestamp(value).astimezone()
    text = str(value).replace("Z", "+00:00")
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)  # Python 3.8-3.10 accept at most 6 fraction digits
    return _dt.datetime.fromisoformat(text).astimezone()


@dataclasses.dataclass
class ModelSpec:
    """What the stand-in knows about one model (in memory, or read back from disk).

    Create with :meth:`from_any` from a name (``"qwen2.5:0.5b"``), a dict with any of these fields, or
    a ``ModelSpec``. Missing fields are guessed from the name the way the real models look
    (``llava*``/``*vision*``/``*-vl`` are vision models, ``qwen*``/``llama3*`` have tools, ``qwen3``
    and ``deepseek-r1`` think; the parameter count comes from the tag, e.g. ``:7b``).
    """

    name: str
    family: str = "llama"
    parameter_count: int = 1_000_000_000
    parameter_size: str = "1.0B"
    quantization_level: str = "Q4_K_M"
    size: int = 0                       # bytes on disk, as /api/tags reports them
    digest: str = ""                    # manifest sha256, 64 hex, no prefix
    modified_at: _dt.datetime = dataclasses.field(default_factory=lambda: _dt.datetime.now().astimezone())
    context_length: int = 32768         # trained context (model_info "<arch>.context_length")
    capabilities: List[str] = dataclasses.field(default_factory=lambda: ["completion"])
    load_seconds: Optional[float] = None  # per-model override of the server's load time
    template: str = CHATML_TEMPLATE
    params: Dict[str, Any] = dataclasses.field(default_factory=lambda: dict(DEFAULT_PARAMS))
    license: str = DEFAULT_LICENSE
    # set when read from disk
    manifest_file: Optional[str] = None
    weights_file: Optional[str] = None
    missing_blobs: List[str] = dataclasses.field(default_factory=list)

    @property
    def vision(self) -> bool:
        return "vision" in self.capabilities

    @property
    def complete(self) -> bool:
        return not self.missing_blobs

    @property
    def details(self) -> Dict[str, Any]:
        return {"parent_model": "", "format": "gguf", "family": self.family, "families": [self.family]
                + (["clip"] if self.vision else []), "parameter_size": self.parameter_size,
                "quantization_level": self.quantization_level}

    @classmethod
    def from_any(cls, value: Union[str, Mapping[str, Any], "ModelSpec"], **overrides: Any) -> "ModelSpec":
        if isinstance(value, ModelSpec):
            return dataclasses.replace(value, **overrides) if overrides else value
        fields: Dict[str, Any] = {"name": value} if isinstance(value, str) else dict(value)
        fields.update(overrides)
        if not fields.get("name"):
            raise ValueError(f"a model needs a name: {value!r}")
        name = canonical_name(str(fields.pop("name")))
        _, _, model, _ = split_name(name)
        caps = list(fields.pop("capabilities", None) or _guess_capabilities(model))
        for cap in ("vision", "tools", "thinking"):
            if cap in fields:
                flag = fields.pop(cap)
                if flag and cap not in caps:
                    caps.append(cap)
                if not flag and cap in caps:
                    caps.remove(cap)
        if "completion" not in caps and "embedding" not in caps:
            caps.insert(0, "completion")
        count = fields.pop("parameter_count", None)
        psize = fields.pop("parameter_size", None)
        if count is None:
            count = _parse_params(psize) if psize else _guess_params(name)
        if not psize:
            psize = _format_params(int(count))
        quant = fields.pop("quantization_level", "Q4_K_M")
        family = fields.pop("family", None) or _guess_family(model)
        size = fields.pop("size", None)
        if not size:
            size = int(count * QUANT_BITS.get(quant, 4.85) / 8) + (PROJECTOR_SIZE if "vision" in caps else 0)
        ctx = fields.pop("context_length", None) or (131072 if family == "llama" and "3" in model else 32768)
        modified = _parse_time(fields.pop("modified_at")) if fields.get("modified_at") else None
        digest = fields.pop("digest", None) or hashlib.sha256(
            f"ollama-standin:{name}:{size}:{quant}:{','.join(sorted(caps))}".encode()).hexdigest()
        spec = cls(name=name, family=family, parameter_count=int(count), parameter_size=psize,
                   quantization_level=quant, size=int(size), digest=digest, context_length=int(ctx),
                   capabilities=caps, **fields)
        if modified is not None:
            spec.modified_at = modified
        return spec

    def layer_plan(self) -> List[Tuple[str, str, int]]:
        """The layers a pull of this model transfers: (media type, digest ``sha256:<hex>``, size).

        Digests are deterministic per model (they are not the digests of a real download)."""
        def dig(kind: str) -> str:
            return "sha256:" + hashlib.sha256(f"{self.name}:{self.digest}:{kind}".encode()).hexdigest()

        plan = [(MEDIA_MODEL, dig("model"), self.size - (PROJECTOR_SIZE if self.vision else 0))]
        if self.vision:
            plan.append((MEDIA_PROJECTOR, dig("projector"), PROJECTOR_SIZE))
        plan += [(MEDIA_TEMPLATE, dig("template"), len(self.template.encode())),
                 (MEDIA_LICENSE, dig("license"), len(self.license.encode())),
                 (MEDIA_PARAMS, dig("params"), len(json.dumps(self.params).encode())),
                 (MEDIA_CONFIG, dig("config"), 487)]
        return plan


# --------------------------------------------------------------------------- GGUF (metadata only)

_GGUF_MAGIC = b"GGUF"
_T_U8, _T_I8, _T_U16, _T_I16, _T_U32, _T_I32, _T_F32, _T_BOOL, _T_STR, _T_ARR, _T_U64, _T_I64, _T_F64 = range(13)
_SCALAR = {_T_U8: "<B", _T_I8: "<b", _T_U16: "<H", _T_I16: "<h", _T_U32: "<I", _T_I32: "<i", _T_F32: "<f",
           _T_BOOL: "<?", _T_U64: "<Q", _T_I64: "<q", _T_F64: "<d"}


def _gguf_value(value: Any) -> Tuple[int, bytes]:
    if isinstance(value, bool):
        return _T_BOOL, struct.pack("<?", value)
    if isinstance(value, int):
        return (_T_U32, struct.pack("<I", value)) if 0 <= value < 2**32 else (_T_U64, struct.pack("<Q", value))
    if isinstance(value, float):
        return _T_F32, struct.pack("<f", value)
    if isinstance(value, str):
        raw = value.encode()
        return _T_STR, struct.pack("<Q", len(raw)) + raw
    if isinstance(value, (list, tuple)):
        items = [_gguf_value(v) for v in value]
        etype = items[0][0] if items else _T_STR
        return _T_ARR, struct.pack("<IQ", etype, len(items)) + b"".join(b for _, b in items)
    raise TypeError(f"cannot store {value!r} in GGUF")


def gguf_bytes(metadata: Mapping[str, Any], pad_to: int = 0) -> bytes:
    """A GGUF v3 file with the given metadata and no tensors (zero-padded to ``pad_to`` bytes)."""
    out = [_GGUF_MAGIC, struct.pack("<IQQ", 3, 0, len(metadata))]
    for key, value in metadata.items():
        raw = key.encode()
        vtype, vbytes = _gguf_value(value)
        out += [struct.pack("<Q", len(raw)), raw, struct.pack("<I", vtype), vbytes]
    data = b"".join(out)
    data += b"\0" * ((-len(data)) % 32)
    return data + b"\0" * max(0, pad_to - len(data))


def read_gguf_metadata(path: Union[str, Path]) -> Dict[str, Any]:
    """The metadata key/values of a GGUF file (tensor infos are not read)."""
    with open(path, "rb") as f:
        if f.read(4) != _GGUF_MAGIC:
            raise ValueError(f"{path}: not a GGUF file")
        _version, _ntensors, nkv = struct.unpack("<IQQ", f.read(20))

        def read(fmt: str) -> Any:
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def value(vtype: int) -> Any:
            if vtype == _T_STR:
                return f.read(read("<Q")).decode("utf-8", "replace")
            if vtype == _T_ARR:
                etype, count = read("<I"), read("<Q")
                return [value(etype) for _ in range(count)]
            return read(_SCALAR[vtype])

        meta = {}
        for _ in range(nkv):
            key = f.read(read("<Q")).decode()
            meta[key] = value(read("<I"))
        return meta


# --------------------------------------------------------------------------- writing and reading models

def _write_blob(models_dir: Path, data: bytes) -> Tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = blob_path(models_dir, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return digest, len(data)


def _template_for(spec: ModelSpec) -> str:
    template = spec.template
    if "tools" in spec.capabilities and ".Tools" not in template:
        template = TOOLS_TEMPLATE_PART + template
    if "thinking" in spec.capabilities and ".Thinking" not in template:
        template = template + THINKING_TEMPLATE_PART
    return template


def write_model(models_dir: Union[str, Path], model: Union[str, Mapping[str, Any], ModelSpec], *,
                size: Optional[int] = None, partial: bool = False, with_manifest: bool = True,
                **fields: Any) -> ModelSpec:
    """Write ``model`` onto disk in Ollama's manifests/blobs layout and return it as read back.

    ``model`` is a name, a dict or a :class:`ModelSpec`; ``fields`` override (e.g. ``vision=True``,
    ``quantization_level="Q8_0"``, ``context_length=8192``, ``modified_at=...``).
    ``size``: the weights size the manifest declares (default: the blob's true length, a few hundred
    bytes). Pass e.g. ``size=spec.size`` for realistic gigabyte figures in ``/api/tags``.
    ``partial=True``: the weights blob is left out and a ``sha256-<hex>-partial`` file is written in its
    place, as after an interrupted download; the manifest still references it (so the model is *not*
    present). ``with_manifest=False``: blobs only, no manifest (a pull that never finished).
    """
    models_dir = Path(models_dir)
    spec = ModelSpec.from_any(model, **fields)
    arch = spec.family
    meta: Dict[str, Any] = {
        "general.architecture": arch,
        "general.name": split_name(spec.name)[2],
        "general.parameter_count": spec.parameter_count,
        "general.file_type": QUANT_FILE_TYPE.get(spec.quantization_level, 15),
        "general.quantization_version": 2,
        f"{arch}.context_length": spec.context_length,
        f"{arch}.block_count": 24,
        f"{arch}.embedding_length": 896,
        "tokenizer.ggml.model": "gpt2",
    }
    weights = gguf_bytes(meta)
    weights_digest = "sha256:" + hashlib.sha256(weights).hexdigest()
    layers = [{"mediaType": MEDIA_MODEL, "digest": weights_digest, "size": int(size or len(weights))}]
    if partial:
        part = blob_path(models_dir, weights_digest)
        part = part.with_name(part.name + "-partial")
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(weights[: len(weights) // 2])
    else:
        _write_blob(models_dir, weights)
    blobs = []
    if spec.vision:
        blobs.append((MEDIA_PROJECTOR, gguf_bytes({"general.architecture": "clip",
                                                   "clip.has_vision_encoder": True,
                                                   "clip.vision.image_size": 336})))
    blobs.append((MEDIA_TEMPLATE, _template_for(spec).encode()))
    blobs.append((MEDIA_LICENSE, spec.license.encode()))
    blobs.append((MEDIA_PARAMS, json.dumps(spec.params).encode()))
    for media, data in blobs:
        digest, n = _write_blob(models_dir, data)
        layers.append({"mediaType": media, "digest": digest, "size": n})
    config = {"model_format": "gguf", "model_family": spec.family, "model_families": spec.details["families"],
              "model_type": spec.parameter_size, "file_type": spec.quantization_level,
              "architecture": "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]}}
    config_digest, config_size = _write_blob(models_dir, json.dumps(config, separators=(",", ":")).encode())
    manifest = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_size},
                "layers": layers}
    mpath = manifest_path(models_dir, spec.name)
    if with_manifest:
        mpath.parent.mkdir(parents=True, exist_ok=True)
        mpath.write_bytes(json.dumps(manifest, separators=(",", ":")).encode())
        ts = spec.modified_at.timestamp()
        os.utime(mpath, (ts, ts))
        found = read_model(models_dir, spec.name)
        assert found is not None
        return found
    return dataclasses.replace(spec, manifest_file=None, missing_blobs=[weights_digest] if partial else [])


def _name_from_manifest(models_dir: Path, path: Path) -> Optional[str]:
    rel = path.relative_to(models_dir / "manifests").parts
    if len(rel) < 4:
        return None
    host, *ns, model, tag = rel
    return canonical_name(f"{host}/{'/'.join(ns)}/{model}:{tag}")


def _spec_from_manifest(models_dir: Path, name: str, path: Path) -> Optional[ModelSpec]:
    try:
        raw = path.read_bytes()
        manifest = json.loads(raw)
    except (OSError, ValueError):
        return None
    layers = list(manifest.get("layers") or [])
    config_ref = manifest.get("config") or {}
    missing = [ref["digest"] for ref in layers + ([config_ref] if config_ref.get("digest") else [])
               if not blob_path(models_dir, ref["digest"]).is_file()]
    config: Dict[str, Any] = {}
    if config_ref.get("digest") and config_ref["digest"] not in missing:
        try:
            config = json.loads(blob_path(models_dir, config_ref["digest"]).read_bytes())
        except (OSError, ValueError):
            config = {}
    fields: Dict[str, Any] = {"name": name, "digest": hashlib.sha256(raw).hexdigest(),
                              "size": sum(int(ref.get("size", 0)) for ref in layers) + int(config_ref.get("size", 0)),
                              "modified_at": path.stat().st_mtime, "manifest_file": str(path),
                              "missing_blobs": missing}
    if config.get("model_family"):
        fields["family"] = config["model_family"]
    if config.get("model_type"):
        fields["parameter_size"] = config["model_type"]
    if config.get("file_type"):
        fields["quantization_level"] = config["file_type"]
    caps = ["completion"]
    for ref in layers:
        blob = blob_path(models_dir, ref["digest"])
        media = ref.get("mediaType", "")
        if ref["digest"] in missing:
            continue
        if media == MEDIA_MODEL:
            fields["weights_file"] = str(blob)
            try:
                meta = read_gguf_metadata(blob)
            except (OSError, ValueError, struct.error):
                meta = {}
            arch = meta.get("general.architecture", fields.get("family", "llama"))
            if meta.get("general.parameter_count"):
                fields["parameter_count"] = meta["general.parameter_count"]
            if meta.get(f"{arch}.context_length"):
                fields["context_length"] = meta[f"{arch}.context_length"]
            if "general.file_type" in meta and "quantization_level" not in fields:
                fields["quantization_level"] = _FILE_TYPE_QUANT.get(meta["general.file_type"], "Q4_K_M")
            if f"{arch}.pooling_type" in meta:
                caps = ["embedding"]
            if f"{arch}.vision.block_count" in meta and "vision" not in caps:
                caps.append("vision")
        elif media == MEDIA_PROJECTOR and "vision" not in caps:
            caps.append("vision")
        elif media == MEDIA_TEMPLATE:
            fields["template"] = blob.read_text("utf-8", "replace")
            if ".Tools" in fields["template"]:
                caps.append("tools")
            if ".Thinking" in fields["template"]:
                caps.append("thinking")
        elif media == MEDIA_PARAMS:
            try:
                fields["params"] = json.loads(blob.read_bytes())
            except ValueError:
                pass
        elif media == MEDIA_LICENSE:
            fields["license"] = blob.read_text("utf-8", "replace")
    if any(ref.get("mediaType") == MEDIA_PROJECTOR for ref in layers) and "vision" not in caps:
        caps.append("vision")  # a missing projector blob still marks a vision model
    fields["capabilities"] = caps
    return ModelSpec.from_any(fields)


def read_model(models_dir: Union[str, Path], name: str) -> Optional[ModelSpec]:
    """The model ``name`` as found on disk (complete or not), or None without a manifest."""
    models_dir = Path(models_dir)
    path = manifest_path(models_dir, name)
    if not path.is_file():
        return None
    return _spec_from_manifest(models_dir, canonical_name(name), path)


def list_models(models_dir: Union[str, Path]) -> List[ModelSpec]:
    """Every manifest under ``models_dir`` (incomplete ones included: check ``.complete``)."""
    models_dir = Path(models_dir)
    root = models_dir / "manifests"
    found = []
    if not root.is_dir():
        return found
    for dirpath, _dirs, files in os.walk(root):
        for fname in files:
            path = Path(dirpath, fname)
            name = _name_from_manifest(models_dir, path)
            spec = _spec_from_manifest(models_dir, name, path) if name else None
            if spec is not None:
                found.append(spec)
    return sorted(found, key=lambda s: s.name)


def is_model_present(models_dir: Union[str, Path], name: str) -> bool:
    """Present iff the manifest exists and every blob it references exists (engines.md 1.10)."""
    spec = read_model(models_dir, name)
    return spec is not None and spec.complete


def remove_model(models_dir: Union[str, Path], name: str) -> bool:
    """Delete the manifest of ``name`` and the blobs no other manifest references. False if absent."""
    models_dir = Path(models_dir)
    path = manifest_path(models_dir, name)
    if not path.is_file():
        return False
    try:
        own = _referenced_digests(json.loads(path.read_bytes()))
    except ValueError:
        own = set()
    path.unlink()
    parent = path.parent
    while parent != models_dir / "manifests" and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent
    still_used = set()
    for other in _all_manifests(models_dir):
        try:
            still_used |= _referenced_digests(json.loads(other.read_bytes()))
        except (OSError, ValueError):
            continue
    for digest in own - still_used:
        try:
            blob_path(models_dir, digest).unlink()
        except FileNotFoundError:
            pass
    return True


def _referenced_digests(manifest: Mapping[str, Any]) -> set:
    refs = list(manifest.get("layers") or []) + [manifest.get("config") or {}]
    return {ref["digest"] for ref in refs if ref.get("digest")}


def _all_manifests(models_dir: Path) -> Iterable[Path]:
    root = models_dir / "manifests"
    for dirpath, _dirs, files in os.walk(root):
        for fname in files:
            yield Path(dirpath, fname)
