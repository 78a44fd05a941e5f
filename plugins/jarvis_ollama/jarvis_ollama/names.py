"""Ollama model names: `[host/][namespace/]model[:tag]`, with `registry.ollama.ai`, `library` and `latest` implied.

`qwen2.5`, `qwen2.5:latest` and `registry.ollama.ai/library/qwen2.5:latest` are one model; names compare without
regard to case, as Ollama treats them.
"""

from __future__ import annotations

from typing import NamedTuple

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"


class ModelName(NamedTuple):
    host: str
    namespace: str
    model: str
    tag: str

    @property
    def short(self) -> str:
        """The name as `ollama list` shows it: default host and namespace left out."""
        if self.host == DEFAULT_HOST:
            prefix = "" if self.namespace == DEFAULT_NAMESPACE else f"{self.namespace}/"
        else:
            prefix = f"{self.host}/{self.namespace}/"
        return f"{prefix}{self.model}:{self.tag}"

    @property
    def parts(self) -> tuple[str, str, str, str]:
        return (self.host, self.namespace, self.model, self.tag)


def parse_name(name: str) -> ModelName:
    """Split a model name into its four parts, filling in the defaults. A `@digest` suffix is ignored."""
    text = name.strip().split("@", 1)[0]
    slash = text.rfind("/")
    colon = text.rfind(":")
    tag = DEFAULT_TAG
    if colon > slash:
        text, tag = text[:colon], text[colon + 1:] or DEFAULT_TAG
    parts = text.split("/")
    model = parts[-1]
    namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NAMESPACE
    host = "/".join(parts[:-2]) if len(parts) >= 3 else DEFAULT_HOST
    return ModelName(host, namespace, model, tag)


def canonical(name: str) -> str:
    """One spelling per model, for comparisons: lower case, defaults made explicit."""
    return "/".join(parse_name(name).parts[:3]).lower() + ":" + parse_name(name).tag.lower()


def same_model(a: str, b: str) -> bool:
    """True when two names denote the same model (`name` and `name:latest` included)."""
    return canonical(a) == canonical(b)
