"""The static encoder's chunk-memo path (``traitlab.embed.static_encode`` on a ``StaticTable`` read without
model2vec) against model2vec's own ``StaticModel.encode``."""

from __future__ import annotations

import random

import numpy as np
import pytest

from traitlab.data import load_dialogues
from traitlab.embed import EncoderConfig, encode, load_static, static_encode


@pytest.fixture(scope="module")
def model():
    return load_static(256)


@pytest.fixture(scope="module")
def theirs(model):
    """model2vec's own model of the same folder (the reference), loaded by model2vec itself."""
    from model2vec import StaticModel

    return StaticModel.from_pretrained(str(model.path))


def test_table_is_what_model2vec_loads(model, theirs):
    assert model.dim == theirs.dim and model.normalize == theirs.normalize
    assert model.unk_token_id == theirs.unk_token_id and model.median_token_length == theirs.median_token_length
    assert np.array_equal(model.embedding, theirs.embedding) and model.embedding.dtype == theirs.embedding.dtype
    assert model.model().encode(["a b"], use_multiprocessing=False).shape == (1, model.dim)
    static_encode(model, ["word " * 50], 8)
    assert len(model.tokenizer.encode("word " * 50, add_special_tokens=False).ids) == 50  # the cut does not stay


def _random_texts(rng: random.Random, alphabet: list[str], n: int) -> list[str]:
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300))) for _ in range(n)]


ALPHABET = [*"abcXYZ .,!?'’\n\t:;-_", "😂", "★", "é", "ß", "中", "文", "\u2028", "\u200b", "\u200d", "\x00",
            "\ufffd", "ﬁ", "İ", "...", "Ⅻ", "\u00a0", "\u3000", "x" * 120, "unbelievable", "##ing", "[UNK]"]


@pytest.mark.parametrize("max_tokens", [256, 16])
def test_static_encode_equals_model2vec(model, theirs, shared_data, max_tokens):
    """Real dialogues (many past the truncation), random mixed scripts, emoji, zero-width and control characters,
    words longer than WordPiece reads, empty texts: the same embeddings as ``model.encode`` to float16 rounding."""
    rng = random.Random(max_tokens)
    real = ["\n".join(d.target_turns) for d in [
        *load_dialogues(shared_data / "hal_turing" / "dialogues.jsonl")[:100],
        *load_dialogues(shared_data / "hal_doctor" / "generations_scored.jsonl", skipped=[])[:60]]]
    texts = [*real, *_random_texts(rng, ALPHABET, 300), "", " \n ", "x" * 3000, "! " * 900, "word " * 400]
    assert sum(len(model.tokenizer.encode(t, add_special_tokens=False).ids) > max_tokens for t in texts) > 10
    ours = static_encode(model, texts, max_tokens)
    ref = np.asarray(theirs.encode(texts, max_length=max_tokens, use_multiprocessing=False), dtype=np.float32)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 5e-4
    assert np.abs(ours).sum(axis=1)[-5] == 0  # empty texts stay zero vectors, as in model2vec


def test_characters_python_splits_on_but_bert_deletes_take_model2vecs_path(model, theirs):
    """``\\x0b`` or ``\\x1c`` separate words for ``str.split`` but are deleted by BERT's normaliser (joining the
    words): such texts go through model2vec's ``encode`` itself, so their embedding is still model2vec's."""
    texts = ["well\x0bthen", "a\x1cb c", "over\x85there", "plain text"]
    ours = static_encode(model, texts, 64)
    ref = np.asarray(theirs.encode(texts, max_length=64, use_multiprocessing=False), dtype=np.float32)
    assert np.abs(ours - ref).max() < 5e-4
    assert np.abs(static_encode(model, ["well then"], 64) - ours[0]).max() > 1e-2  # joined, not split


def test_a_texts_embedding_does_not_depend_on_its_batch(model):
    rng = random.Random(3)
    texts = _random_texts(rng, [*"abcdefgh ,.?", "hello", "world", "😂"], 200)
    batch = static_encode(model, texts, 32)
    alone = np.stack([static_encode(model, [t], 32)[0] for t in texts[:20]])
    assert np.abs(batch[:20] - alone).max() < 1e-6


def test_strip_punctuation_embeds_the_text_without_its_marks(model):
    """Every Unicode punctuation mark is deleted before embedding (so marks reach a reward only through its
    counted style features); symbols, emoji and letters are kept."""
    cfg = EncoderConfig(kind="static", strip_punctuation=True)
    marked = ["Well, I don't know... maybe?!", "«Ça va» — oui ¿qué? 「はい」", "5 + 3 = 8 ★ 😂"]
    bare = ["Well I dont know maybe", "Ça va  oui qué はい", "5 + 3 = 8 ★ 😂"]
    assert np.abs(encode(marked, cfg) - encode(bare, EncoderConfig(kind="static"))).max() < 1e-6
    plain = encode(marked, EncoderConfig(kind="static"))
    assert np.abs(plain[0] - encode(bare[:1], EncoderConfig(kind="static"))[0]).max() > 1e-3
