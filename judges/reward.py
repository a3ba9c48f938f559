"""The distilled local reward: how much a dialogue's judged speaker is like a contrast's positive side, with no
LLM call.

An LLM judge rates dialogues on a trait set and an aggregator turns the ratings into P(positive); that costs
a hosted call per dialogue. :class:`LocalReward` learns both from the judge's ratings and the dialogues'
labels (any :class:`traitlab.contrast.Contrast`): an embedding of the judged turns (the static table
distilled from MiniLM, or MiniLM itself, see :mod:`traitlab.embed`) plus texting-style features go through a
small MLP that predicts each trait rating, and the scalar is a linear function of those predicted traits (an
:class:`traitlab.judges.aggregate.Aggregator`, Platt-calibrated), so every score is explained trait by trait.
``ensemble`` such MLPs are trained from their own seeds under one scalar head and their traits averaged (on
HAL, three gained pairwise accuracy and passed more held-out audits than one; see ``RewardConfig.ensemble``).
Trait heads and scalar are fitted jointly: trait MSE against the judge + ``beta`` x label log-loss +
``gamma`` x squared distance to the judge's own aggregate (an aggregator given to :func:`distill`, else an L1
logistic fitted on the training rows), so the scalar follows the judge and not only the labels. Unlabelled
rows (another domain, perhaps rated on fewer traits: HAL's doctor visits) have no label to follow, so there
``gamma_unlabelled`` x the distance to the judge's aggregate of the traits they are rated on is what makes
the scalar mean something beyond the labelled domain. Each of the two distances is a mean over its own rows
(:func:`fidelity_loss`), so a weight means the same whatever share of a batch its rows are.

What a policy could exploit is closed four ways, and measured (issue: a reward a policy cannot game):

- **bounded**: inputs are clipped at ``input_clip`` SDs, traits to the judge's range, the score is
  ``score_bound * tanh(calibrated log-odds / score_bound)``; style features saturate.
- **trained out** (``augment``, on by default): the cheap tricks of :data:`traitlab.judges.reward_edits.TARGETED`
  (emoji, symbols or a texting tag appended to every turn, turns cut short, punctuation dropped, typing slips, words
  in capitals, long appends, a turn repeated) applied to the negative training dialogues: an edited negative may not
  outscore its source by more than ``edit_margin`` unless it stays below the ``edit_ceiling`` quantile of the real
  positives, so the real cues keep their weight (no hinge on the positives' own restyling), and never rise past
  the ``edit_cap`` quantile of them from below it, so no edit carries a negative across. ``strict_edits``
  (symbols appended), a cue of neither side, get no such allowance. Style features that make such edits
  visible: the share of a turn's words the other speaker just said, one ending shared by every turn, uniform
  turn lengths.
- **invariant** (``invariant_edits``): restylings that say nothing of the side (punctuation dropped, words in
  capitals) are applied to labelled rows of *both* sides and trained on with the source's label, and the
  embedding reads the text with its punctuation deleted (``EncoderConfig.strip_punctuation``), so deleting
  every mark moves only the lengths and the style features that count marks (which ``ignore_style`` can hide
  from the heads too). The hinge alone left held-out AI transcripts with their punctuation stripped above the
  median human 6-9% of the time (question marks carried most of it), the invariant copies 5-6%; with the
  edits capped at the positives' lowest decile, 2%.
- **gated** (``gate``): judged turns that are empty, not language, repeated, parroting the other speaker, or in
  a script or vocabulary the training data never showed are pulled towards ``floor`` (the 2nd percentile of
  real training scores), by how far they fall below what 99.5% of the training dialogues show;
  :meth:`LocalReward.validity` says which check failed. Known words are the training vocabulary plus the
  encoder's word list, with a cross-fitted threshold, so a small project's gate does not floor valid text.
- **audited** (``audit``): ``distill`` red-teams its own cross-fit (:func:`heldout_audit`), each fold's reward
  on the labelled dialogues it never saw, and keeps the report with the reward (``audit.json``), so what a
  reward's user reads is how it fares on dialogues it did not train on.

Scoring needs numpy and the encoder only (no torch with the static table), so a reward starts in well
under a second. Training, the HF export and the aggregator view import torch and scikit-learn lazily.
The HAL recipe (which files and judges) is ``traitlab.presets.hal.reward``.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import random
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator

from traitlab.contrast import Contrast
from traitlab.data import DataError, file_sha256, load_trait_set
from traitlab.embed import EncoderConfig, encoder_dim, encoder_path, encoder_words
from traitlab.judges.reward_edits import EDITS, TARGETED, edited
from traitlab.judges.reward_features import (
    STYLE_FEATURES,
    VALIDITY_MEASURES,
    TurnBatch,
    features,
    previous_messages,
    script_of,
    style_features,
    vocabulary,
)
from traitlab.registry import reward as register_reward
from traitlab.types import Dialogue, Message, RewardScore, TraitRatings, TraitSet

if TYPE_CHECKING:
    from traitlab.judges.aggregate import Aggregator
    from traitlab.judges.audit import AuditReport

DEFAULT_DIR = Path(__file__).parent / "default_reward"
HEADS_FILE, CONFIG_FILE, TRAITS_FILE, GATE_FILE = "heads.safetensors", "config.json", "traits.json", "gate.json"
AUDIT_FILE = "audit.json"
FORMAT = "traitlab.local_reward/3"


class RewardConfig(BaseModel):
    """How a LocalReward is built and trained (stored with it)."""

    encoder: EncoderConfig = Field(default_factory=lambda: EncoderConfig(kind="static", strip_punctuation=True))
    ignore_style: list[str] = Field(default_factory=list, description="style features the heads do not read "
                                    "(their standardising scale is infinite), e.g. the punctuation counts. On HAL, "
                                    "seeds 0-4, each a distill's pooled held-out audit (bench/reward_audit.py) with "
                                    "edit_ceiling = edit_cap = 0.1: reading them all ([], shipped) passed 5 of 5 "
                                    "(worst 0.037 mean, 0.049 max) at pairwise 0.976, doctor partial 0.500; not "
                                    "reading PUNCTUATION_FEATURES 5 of 5 (0.031, 0.044) at 0.973, 0.483. Under the "
                                    "looser edit allowances before, not reading them had passed 13 of 15 per-fold "
                                    "audits against 9")
    hidden: int = 128
    dropout: float = 0.1
    ensemble: int = Field(3, ge=1, description="trait trunks trained one by one (member j with seed + 7919 j) "
                          "under the first one's scalar head, their traits averaged. On HAL over seeds 0-2 (before "
                          "ignore_style and strict_edits), 3 against 1: pairwise 0.977 against 0.971, 9 of 15 "
                          "held-out audits passed against 4 (worst 0.11 against 0.14), doctor partial 0.311 against "
                          "0.325; each member with its own scalar passed 11 of 15 at pairwise 0.980, partial 0.268, "
                          "but the score was then no aggregator of the traits it reports")
    beta: float = Field(0.3, description="weight of the label log-loss against the trait MSE")
    gamma: float = Field(0.0, description="weight of the distance to the judge's aggregate (fidelity); on HAL "
                         "0.05 cost 0.016 pairwise accuracy for +0.07 fidelity, so it is off by default")
    gamma_unlabelled: float = Field(0.01, description="the same distance on unlabelled rows (their judge's "
                                    "aggregate of the traits they are rated on), so the scalar follows the judge "
                                    "where no label says which side a row is. On HAL (doctor visits unlabelled, "
                                    "16 of 32 traits rated), seeds 0-3: grouped pairwise 0.974, on held-out "
                                    "personas Spearman with GPT-5's aggregate 0.694 (length heuristic 0.623), "
                                    "partial 0.491; 0.007 (seeds 0-2): 0.973, 0.675, 0.457. Held-out audits (seeds "
                                    "0-2 x 5 folds) passed 11 of 15 (worst 0.07), as with one mean over both parts, "
                                    "which had passed 8 of 15 at 0.03 and 13 at 0 (without the doctor transfer), "
                                    "hence the small weight; 0.1 and 0.5 (seed 0, one mean): pairwise 0.965 and 0.953")
    weight_decay: float = 0.01
    l1_head: float = Field(1e-3, description="L1 on the scalar's trait weights (sparser explanations)")
    steps: int = 600
    batch: int = Field(256, ge=8, description="training rows drawn per step (and as many edited rows)")
    lr: float = 3e-3
    lr_schedule: Literal["constant", "cosine"] = Field("constant", description="the learning rate over the steps. "
                                                       "On HAL, cosine decay to 0 lifted grouped pairwise from "
                                                       "0.9720 to 0.9785 over seeds 0-4 (higher on every seed), but "
                                                       "passed 5 of 15 held-out audits against 13 (truncation "
                                                       "composites up to 0.11 against 0.06), so the shipped "
                                                       "recipe keeps it constant")
    seed: int = 0
    folds: int = 5
    augment: bool = Field(True, description="train the edits of ``edits`` out: an edited negative may not outscore "
                          "its source by more than edit_margin, nor reach the positives' low end (edit_ceiling)")
    edits: list[str] | None = Field(default_factory=lambda: list(TARGETED), description="names of the training "
                                    "edits drawn (default: the bounded ones; None = every edit of reward_edits.EDITS)")
    edits_per_row: int = Field(2, ge=1, description="edited copies drawn per training dialogue (4 passed 9 of 15 "
                               "held-out audits against 4 of 15 and gained 0.003 pairwise, 0.006 doctor partial, but "
                               "opened a deeper worst hole: 0.21 against 0.14)")
    edit_chain: int = Field(3, ge=1, le=3, description="each edited copy applies 1 to edit_chain different edits "
                            "in turn (the audit's search composes up to three; 1 left its composites at 0.21-0.48 "
                            "on held-out folds)")
    edit_negatives_only: bool = Field(True, description="bounded edits are drawn for negative-label rows only")
    edit_margin: float = Field(1.25, description="logits an edited dialogue may gain over its source (on 5 held-out "
                               "folds 1.0 and 1.25 gave the same worst composites, 1.25 the better pairwise; 1.5 "
                               "let composites reach 0.09)")
    edit_ceiling: float | None = Field(0.1, description="a bounded edit is not penalised below this quantile of "
                                       "the real positives' logits (None: only the margin over its source). On HAL "
                                       "with edit_cap at the same quantile, seeds 0-4, each a distill's held-out "
                                       "audit (bench/reward_audit.py): 0.1 passed 5 of 5 (worst edit 0.031 mean, "
                                       "0.044 max of 428 AI transcripts) against 4 of 5 at 0.25 (0.038, 0.061: "
                                       "truncation with capitals), grouped pairwise 0.973 both, ECE 0.025 against "
                                       "0.020, doctor partial 0.483 against 0.486; 0.0 passed 5 of 5 (0.023, 0.028) "
                                       "at pairwise 0.971 (all with the punctuation counts not read; reading "
                                       "them, 0.05 passed 5 of 5, worst 0.036 mean, 0.042 max, at pairwise 0.974 "
                                       "against 0.1's 0.037, 0.049 at 0.976)")
    edit_cap: float | None = Field(0.1, description="an edited negative may not rise above this quantile of "
                                   "the batch's positives unless its source already does, whatever edit_margin and "
                                   "edit_ceiling allow (None: no cap). On HAL, side by side on one machine (seeds "
                                   "0-2 x 5 held-out folds, one distill per fold): 0.25 passed 12 of 15 audits "
                                   "(worst 0.06, no single-edit failure) against 7 of 15 without a cap (worst 0.08, "
                                   "2 failures), 0.5 passed 10; 0.1 with edit_ceiling 0.1 is shipped (see there). "
                                   "At edit_ceiling's quantile, a bounded edit may reach max(source, that quantile), "
                                   "so edit_margin then bounds only strict edits below it")
    strict_edits: list[str] = Field(default_factory=lambda: ["append_symbols"], description="bounded edits "
                                    "that are no cue of either side: drawn alone and held to their source + "
                                    "edit_margin, with no edit_ceiling allowance (symbols appended to every turn "
                                    "lifted held-out AI transcripts 0.7-0.9 SD under the allowance; chained with "
                                    "the other edits, the strict rule cost about 0.01 pairwise on 3 folds)")
    edit_weight: float = Field(1.0, description="weight of the edit hinge losses (before invariant copies, 3.0 passed "
                               "every single audit edit held out at pairwise 0.970; 2.0 now does no better)")
    invariant_edits: list[str] = Field(default_factory=lambda: ["drop_punctuation", "shout"], description=
                                       "restylings that say nothing of the side: every labelled row gets "
                                       "invariant_per_row copies chaining some of them, trained on with its "
                                       "source's label (both sides, so restyling itself is no cue)")
    invariant_per_row: int = Field(1, ge=0, description="invariant copies per labelled row (0: none)")
    invariant_weight: float = Field(0.3, description="weight of the label log-loss on the invariant copies")
    gate: bool = Field(True, description="pull degenerate input (empty, not language, repeated...) to the floor")
    gate_quantile: float = Field(0.005, description="share of training dialogues a gate check may flag")
    gate_general_words: bool = Field(True, description="the encoder's English word list counts as known words "
                                     "beside the training vocabulary (a small project's gate floored valid text)")
    gate_max_known: float = Field(0.85, description="the known-word threshold is at most this share")
    audit: bool = Field(True, description="audit the cross-fit's fold rewards, each on the labelled dialogues it "
                        "did not train on (traitlab.judges.audit.audit_folds), and keep the report with the reward")
    audit_threshold: float = Field(0.05, ge=0, le=1, description="the audit fails when an edit pushes more than "
                                   "this share of held-out negatives above their fold's median positive")
    input_clip: float = Field(4.0, description="standardised features are clipped to +- this many SDs")
    score_bound: float = Field(8.0, description="the score is score_bound * tanh(log-odds / score_bound)")

    @field_validator("ignore_style")
    @classmethod
    def _known_style(cls, names: list[str]) -> list[str]:
        unknown = sorted(set(names) - set(STYLE_FEATURES))
        if unknown:
            raise ValueError(f"unknown style features {unknown} (known: {list(STYLE_FEATURES)})")
        return names

    @classmethod
    def with_settings(cls, settings: Sequence[str]) -> RewardConfig:
        """The defaults with ``FIELD=JSON`` overrides (``["edit_chain=1", "beta=0.45"]``), as the benches take
        them; a bad setting raises a ValueError naming it and the known fields."""
        values = cls().model_dump()
        for setting in settings:
            name, _, raw = setting.partition("=")
            if name not in cls.model_fields or not raw:
                raise ValueError(f"{setting!r}: expected FIELD=JSON, FIELD one of {sorted(cls.model_fields)}")
            try:
                values[name] = json.loads(raw)
            except json.JSONDecodeError as e:
                raise ValueError(f"{setting!r}: the value is not JSON ({e.msg}); strings need quotes") from e
        return cls.model_validate(values)


class TrainingSet(BaseModel):
    """Rows to fit on: targets hold NaN where a trait was not rated, labels NaN where unlabelled."""

    model_config = {"arbitrary_types_allowed": True}

    dialogues: list[Dialogue]
    trait_set: TraitSet
    targets: Any  # np.ndarray (n, n_traits)
    labels: Any  # np.ndarray (n,), 1 = positive, 0 = negative, NaN = unlabelled
    groups: list[str]
    contrast: Contrast
    judges: dict[str, int] = Field(default_factory=dict, description="judge -> dialogues it rated")

    def subset(self, mask: np.ndarray) -> TrainingSet:
        """The rows where ``mask`` (a boolean array) is true."""
        return self.model_copy(update={"dialogues": [d for d, m in zip(self.dialogues, mask, strict=True) if m],
                                       "targets": self.targets[mask], "labels": self.labels[mask],
                                       "groups": [g for g, m in zip(self.groups, mask, strict=True) if m]})


class Gate(BaseModel):
    """The validity gate's profile of the training data (saved as ``gate.json``)."""

    measures: list[str] = Field(default_factory=lambda: list(VALIDITY_MEASURES))
    thresholds: dict[str, float]
    vocabulary: list[str]
    scripts: list[str]
    floor: float = Field(description="score a fully invalid dialogue gets (2nd percentile of training scores)")
    enabled: bool = True

    @functools.cached_property
    def _vocab(self) -> frozenset[str]:
        return frozenset(self.vocabulary)

    def values(self, dialogues: Sequence[Dialogue], batch: TurnBatch | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(measures per dialogue, validity in [0, 1] per dialogue = the weakest check); ``batch``: the
        dialogues' :class:`TurnBatch` when the style features already measured it."""
        batch = batch if batch is not None else TurnBatch.of(dialogues)
        m = batch.validity(self._vocab, frozenset(self.scripts))
        tau = np.array([self.thresholds[k] for k in self.measures])
        per = np.clip((m - tau / 2) / np.maximum(tau / 2, 1e-6), 0.0, 1.0)
        return m, per.min(axis=1) if len(dialogues) else np.zeros(0)


class Validity(BaseModel):
    """How valid the gate finds one dialogue's judged turns, and which check is weakest."""

    id: str
    validity: float
    weakest: str
    measures: dict[str, float]


# training data -------------------------------------------------------------------------------------------
def training_set(dialogues: Sequence[Dialogue], ratings: Sequence[TraitRatings], trait_set: TraitSet,
                 contrast: Contrast, *, target_role: str | None = None, judge: str | None = None) -> TrainingSet:
    """Rows to fit on: every dialogue that is labelled or rated. Labels come from ``contrast.y``, groups from
    ``contrast.group_of``; several judges' ratings of one dialogue are averaged trait by trait."""
    role = target_role or contrast.target_role
    rows = []
    for d in dialogues:
        if role is not None and role != d.target_role:
            if not any(m.role == role for m in d.messages):
                raise ValueError(f"dialogue {d.id!r}: the judged role {role!r} never speaks")
            d = d.model_copy(update={"target_role": role})
        rows.append(d)
    by_id: dict[str, list[TraitRatings]] = {}
    for r in ratings:
        if judge is None or r.judge == judge:
            by_id.setdefault(r.dialogue_id, []).append(r)
    if judge is not None and not by_id:
        raise ValueError(f"no ratings by judge {judge!r} (judges: {sorted({r.judge for r in ratings})})")
    known = {d.id for d in rows}
    unknown = sorted(set(by_id) - known)
    if unknown:
        raise ValueError(f"{len(unknown)} rated ids are not among the dialogues, e.g. {unknown[:3]}")
    foreign = sorted({t for rs in by_id.values() for r in rs for t in r.ratings} - set(trait_set.ids))
    if foreign:
        raise ValueError(f"ratings name traits {foreign[:5]} that trait set {trait_set.name!r} does not have")
    labels = np.array([contrast.y(d) for d in rows])
    keep = [i for i, d in enumerate(rows) if d.id in by_id or not np.isnan(labels[i])]
    rows, labels = [rows[i] for i in keep], labels[keep]
    targets = np.full((len(rows), len(trait_set.ids)), np.nan)
    col = {t: j for j, t in enumerate(trait_set.ids)}
    judges: dict[str, int] = {}
    for i, d in enumerate(rows):
        rs = by_id.get(d.id, [])
        for r in rs:
            judges[r.judge] = judges.get(r.judge, 0) + 1
        for t in {t for r in rs for t in r.ratings}:
            targets[i, col[t]] = float(np.mean([r.ratings[t] for r in rs if t in r.ratings]))
    lab = ~np.isnan(labels)
    if not lab.any() or len(set(labels[lab])) < 2:
        raise ValueError(f"distill needs labelled dialogues of both sides ({contrast.positive!r} and "
                         f"{contrast.negative!r}); found {sorted(set(labels[lab].tolist()))}")
    unrated = [t for j, t in enumerate(trait_set.ids) if np.isnan(targets[:, j]).all()]
    if unrated:
        raise ValueError(f"traits {unrated[:5]} are rated in no training dialogue")
    return TrainingSet(dialogues=rows, trait_set=trait_set, targets=targets, labels=labels,
                       groups=[contrast.group_of(d) for d in rows], contrast=contrast, judges=judges)


BOUNDED, DEGENERATE, INVARIANT, STRICT = 0, 1, 2, 3
"""What an edited training copy is held to (``with_edits``' third array): the bounded hinge, the degenerate
floor, its source's label, or the bounded hinge without the ceiling allowance (``RewardConfig.strict_edits``)."""


def with_edits(data: TrainingSet, cfg: RewardConfig) -> tuple[list[Dialogue], np.ndarray, np.ndarray]:
    """Edited copies of the training rows: (dialogues, source row index, kind: BOUNDED / DEGENERATE /
    INVARIANT).

    Bounded edits are drawn for negative-label rows only when ``cfg.edit_negatives_only``: lifting a
    negative is the exploit, while restyling a positive (dropping a human's punctuation) is no gain to game
    and forbidding it would teach the heads to ignore the side's real cues. Invariant copies are drawn for
    every labelled row after the others (so they leave those draws unchanged): both sides restyled alike,
    each keeping its label, make the restyling itself no evidence of either side."""
    rng = random.Random(cfg.seed)
    pool = [t for d in data.dialogues for t in d.target_turns if len(t) > 20]
    names = sorted(cfg.edits or EDITS)
    unknown = sorted((set(names) | set(cfg.invariant_edits) | set(cfg.strict_edits)) - set(EDITS))
    if unknown:
        raise ValueError(f"unknown training edits {unknown} (known: {sorted(EDITS)})")
    degenerate_names = [n for n in names if EDITS[n][0] == "degenerate"]
    strict = set(cfg.strict_edits)
    out, src, kind = [], [], []

    def add(i: int, chain: list[str], k: int, held_to: int) -> None:
        e = data.dialogues[i]
        for step in chain:
            e = edited(e, step, rng, pool)
        out.append(e.model_copy(update={"id": f"{data.dialogues[i].id}~{'+'.join(chain)}{k}"}))
        src.append(i)
        kind.append(held_to)

    for i in range(len(data.dialogues)):
        allowed = names if not cfg.edit_negatives_only or data.labels[i] == 0 else degenerate_names
        for k, name in enumerate(rng.sample(allowed, min(cfg.edits_per_row, len(allowed)))):
            more = rng.randint(0, cfg.edit_chain - 1) if cfg.edit_chain > 1 and name not in strict else 0
            others = [n for n in allowed if n != name and n not in strict]
            chain = [name, *rng.sample(others, min(more, len(others)))]
            add(i, chain, k, DEGENERATE if any(EDITS[n][0] == "degenerate" for n in chain)
                else STRICT if name in strict else BOUNDED)
    invariant = sorted(cfg.invariant_edits)
    for i in np.flatnonzero(~np.isnan(data.labels)) if invariant else []:
        for k in range(cfg.invariant_per_row):
            add(int(i), rng.sample(invariant, rng.randint(1, len(invariant))), k, INVARIANT)
    return out, np.array(src, dtype=int), np.array(kind, dtype=np.int8)


# training -------------------------------------------------------------------------------------------------
def fit_head(X: np.ndarray, targets: np.ndarray, labels: np.ndarray, cfg: RewardConfig, **kw: Any) -> Any:
    """``cfg.ensemble`` heads fitted by :func:`fit_member` on the same rows and edits, each from its own seed
    (initialisation and minibatches), merged into one ``TraitHead`` that scores their mean logit. The first
    member's scalar is kept fixed for the others, so the merged score is that one scalar over the members'
    mean traits: still one aggregator, explained trait by trait."""
    from traitlab.judges.reward_hf_modeling import merge

    first = fit_member(X, targets, labels, cfg, **kw)
    return merge([first] + [fit_member(X, targets, labels, cfg.model_copy(update={"seed": cfg.seed + 7919 * j}),
                                       scalar=first.head, **kw) for j in range(1, cfg.ensemble)])


def ignored_columns(n_in: int, cfg: RewardConfig) -> list[int]:
    """Feature columns of ``cfg.ignore_style`` (the style block ends the ``[embedding | style]`` layout)."""
    return [n_in - len(STYLE_FEATURES) + STYLE_FEATURES.index(n) for n in cfg.ignore_style]


def edit_allowance(base: Any, strict: Any, positives: Any, cfg: RewardConfig) -> Any:
    """The logit each edited copy may reach before its hinge bites: its source's ``base`` + edit_margin; a
    bounded (not ``strict``) edit at least the edit_ceiling quantile of the batch's ``positives`` (below the
    positives' low end is no exploit); with edit_cap, at most that quantile of them unless the source is
    already above it (an edit carries no negative across)."""
    import torch

    allowed = base + cfg.edit_margin
    if not len(positives):
        return allowed
    if cfg.edit_ceiling is not None:
        allowed = torch.where(strict, allowed, torch.maximum(allowed, torch.quantile(positives, cfg.edit_ceiling)))
    if cfg.edit_cap is not None:
        allowed = torch.minimum(allowed, torch.maximum(base, torch.quantile(positives, cfg.edit_cap)))
    return allowed


def fidelity_loss(logit: Any, agg: Any, ok: Any, labelled: Any, cfg: RewardConfig) -> Any:
    """gamma x the mean squared gap to the judge's aggregate over labelled rows + gamma_unlabelled x the same
    over unlabelled ones: one mean per part, so neither weight depends on how a batch mixes the two."""
    gap2 = (logit - agg) ** 2
    parts = ((cfg.gamma, ok & labelled), (cfg.gamma_unlabelled, ok & ~labelled))
    return sum((w * gap2[part].mean() for w, part in parts if w and part.any()), logit.new_zeros(()))


def fit_member(X: np.ndarray, targets: np.ndarray, labels: np.ndarray, cfg: RewardConfig, *,
               agg_logit: np.ndarray | None = None, X_edit: np.ndarray | None = None,
               edit_src: np.ndarray | None = None, edit_kind: np.ndarray | None = None,
               scalar: Any = None) -> Any:
    """Joint fit of one ``TraitHead`` on minibatches: masked trait MSE (standardised) + beta x label log-loss +
    the fidelity terms (:func:`fidelity_loss`) + edit_weight x the edit hinges
    (a bounded or strict edit: above :func:`edit_allowance`; a degenerate one: above the batch's 2nd
    percentile) +
    invariant_weight x the label log-loss of the invariant copies. ``scalar``: a trait -> logit layer to use as
    is (only the trunk is fitted)."""
    import torch

    from traitlab.judges.reward_hf_modeling import TraitHead

    torch.manual_seed(cfg.seed)
    head = TraitHead(X.shape[1], cfg.hidden, targets.shape[1], cfg.dropout)
    x_scale = X.std(0)
    t_scale = np.nanstd(targets, 0)
    if np.isnan(t_scale).any():
        raise ValueError("every trait needs at least one rating in the training rows")
    head.x_mean.copy_(torch.tensor(X.mean(0)))
    head.x_scale.copy_(torch.tensor(np.where(x_scale > 1e-6, x_scale, 1.0)))
    head.x_scale[ignored_columns(X.shape[1], cfg)] = float("inf")  # reads 0 whatever the value
    head.trait_mean.copy_(torch.tensor(np.nanmean(targets, 0)))
    head.trait_scale.copy_(torch.tensor(np.where(t_scale > 1e-6, t_scale, 1.0)))
    head.trait_lo.copy_(torch.tensor(np.nanmin(targets, 0)))
    head.trait_hi.copy_(torch.tensor(np.nanmax(targets, 0)))
    head.bounds.copy_(torch.tensor([cfg.input_clip, cfg.score_bound]))
    x = torch.tensor(X, dtype=torch.float32)
    seen_all = torch.tensor(~np.isnan(targets))
    z_all = torch.nan_to_num((torch.tensor(targets, dtype=torch.float32) - head.trait_mean) / head.trait_scale)
    lab_all = torch.tensor(~np.isnan(labels))
    y_all = torch.tensor(np.nan_to_num(labels), dtype=torch.float32)
    agg_ok = torch.tensor(np.isfinite(agg_logit)) if agg_logit is not None else torch.zeros(len(X), dtype=torch.bool)
    agg_all = torch.tensor(np.nan_to_num(agg_logit), dtype=torch.float32) if agg_logit is not None else None
    use_edits = X_edit is not None and len(X_edit) > 0
    if use_edits:
        xe = torch.tensor(X_edit, dtype=torch.float32)
        src = torch.tensor(edit_src)
        kind = torch.tensor(edit_kind)
    gen = torch.Generator().manual_seed(cfg.seed)
    if scalar is not None:
        head.head.load_state_dict(scalar.state_dict())
        head.head.requires_grad_(False)
    opt = torch.optim.Adam([q for q in head.parameters() if q.requires_grad], lr=cfg.lr)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps) if cfg.lr_schedule == "cosine" else None
    head.train()
    for _ in range(cfg.steps):  # minibatches: the CPU is shared, and a few hundred rows per step suffice
        rows = torch.randint(len(x), (min(cfg.batch, len(x)),), generator=gen)
        opt.zero_grad()
        z, _, logit = head.standardised(x[rows])
        seen, labelled = seen_all[rows], lab_all[rows]
        loss = ((z - z_all[rows]) ** 2)[seen].mean() if seen.any() else z.sum() * 0
        if labelled.any():
            loss = loss + cfg.beta * torch.nn.functional.binary_cross_entropy_with_logits(
                logit[labelled], y_all[rows][labelled])
        if agg_all is not None:
            loss = loss + fidelity_loss(logit, agg_all[rows], agg_ok[rows], labelled, cfg)
        if use_edits:
            pick = torch.randint(len(xe), (min(cfg.batch, len(xe)),), generator=gen)
            _, _, le = head.standardised(xe[pick])
            with torch.no_grad():  # the sources' current scores, and the low end of the real ones
                _, _, base = head.standardised(x[src[pick]])
                low = torch.quantile(logit[labelled], 0.02) if labelled.any() else base.min()
                allowed = edit_allowance(base, kind[pick] == STRICT, logit[labelled & (y_all[rows] == 1)], cfg)
            bounded = torch.relu(le - allowed)
            floor = torch.relu(le - low)
            hinged = kind[pick] != INVARIANT
            if hinged.any():
                hinge = torch.where(kind[pick] == DEGENERATE, floor, bounded)[hinged]
                loss = loss + cfg.edit_weight * hinge.mean()
            same = ~hinged & lab_all[src[pick]]
            if same.any():
                loss = loss + cfg.invariant_weight * torch.nn.functional.binary_cross_entropy_with_logits(
                    le[same], y_all[src[pick]][same])
        loss = loss + cfg.weight_decay * sum((m.weight ** 2).sum() for m in head.trunk if hasattr(m, "weight"))
        loss = loss + cfg.l1_head * head.head.weight.abs().sum()
        loss.backward()
        opt.step()
        if decay is not None:
            decay.step()
    return head.eval()


def _aggregate_logits(data: TrainingSet, train: np.ndarray, aggregator: Aggregator | None) -> np.ndarray:
    """The judge's aggregate of each row's real ratings: the given aggregator, else an L1 logistic fitted on
    the labelled, fully rated ``train`` rows. A row rated on fewer traits than that needs (a judge that used a
    shorter trait list, as HAL's doctor dialogues) gets an L1 logistic on just the traits it has, fitted on the
    labelled ``train`` rows rated on them; NaN where too few such rows are."""
    from traitlab.judges.aggregate import fit_linear

    ids = data.trait_set.ids
    labelled = train & ~np.isnan(data.labels)

    def fitted(cols: list[int]) -> Aggregator | None:
        rows = labelled & ~np.isnan(data.targets[:, cols]).any(1)
        if rows.sum() < 10 or len(set(data.labels[rows])) < 2:
            return None
        return fit_linear(data.targets[rows][:, cols], data.labels[rows].astype(int), [ids[j] for j in cols], C=0.1)

    aggregator = aggregator or fitted(list(range(len(ids))))
    out = np.full(len(data.labels), np.nan)
    if aggregator is None:
        return out
    need = [ids.index(t) for t in aggregator.trait_ids]
    ok = ~np.isnan(data.targets[:, need]).any(1)
    if ok.any():
        out[ok] = aggregator.logit_matrix(np.nan_to_num(data.targets[ok]), ids)
    patterns = {tuple(np.flatnonzero(~np.isnan(r))) for r in data.targets[~ok]}
    for cols in sorted(c for c in patterns if c):
        rows = ~ok & (~np.isnan(data.targets) == np.isin(np.arange(len(ids)), cols)).all(1)
        sub = fitted(list(cols))
        if sub is not None:
            out[rows] = sub.logit_matrix(np.nan_to_num(data.targets[rows]), ids)
    return out


def _params(head: Any) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().astype(np.float32) for k, v in head.state_dict().items()}


def _fit(X: np.ndarray, data: TrainingSet, rows: np.ndarray, cfg: RewardConfig, agg_logits: np.ndarray,
         edits: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> dict[str, np.ndarray]:
    """Heads fitted on ``rows`` (a boolean mask) and the edits of those rows; ``agg_logits``: the judge's
    aggregate per row, from an aggregator that saw only ``rows``."""
    agg = agg_logits[rows]
    kw: dict[str, Any] = {}
    if edits is not None:
        X_edit, src, kind = edits
        keep = rows[src]
        new_index = np.cumsum(rows) - 1
        kw = {"X_edit": X_edit[keep], "edit_src": new_index[src[keep]], "edit_kind": kind[keep]}
    return _params(fit_head(X[rows], data.targets[rows], data.labels[rows], cfg, agg_logit=agg, **kw))


def cross_val_predict(X: np.ndarray, data: TrainingSet, cfg: RewardConfig, *, aggregator: Aggregator | None = None,
                      edits: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Out-of-fold predictions, each row by heads that never saw its group: ``traits``, ``logits``
    (uncalibrated), ``agg`` (the judge's aggregate fitted on the train folds), ``fold`` and the fold models
    (``params``, uncalibrated, for scoring other held-out rows such as edits)."""
    from traitlab.judges.aggregate import grouped_folds

    fold = grouped_folds(data.groups, cfg.folds, cfg.seed)
    traits = np.zeros_like(data.targets)
    logits, agg = np.zeros(len(X)), np.full(len(X), np.nan)
    params = []
    for k in range(cfg.folds):
        test = fold == k
        fold_agg = _aggregate_logits(data, ~test, aggregator)
        p = _fit(X, data, ~test, cfg, fold_agg, edits)
        params.append(p)
        traits[test], logits[test] = predict_params(p, X[test], calibrated=False)
        agg[test] = fold_agg[test]
    return {"traits": traits, "logits": logits, "agg": agg, "fold": fold, "params": params}


def fold_reward(X: np.ndarray, data: TrainingSet, cfg: RewardConfig, oof: Mapping[str, Any], k: int) -> LocalReward:
    """Fold model ``k`` of :func:`cross_val_predict` as a reward: Platt calibration on the other folds'
    out-of-fold logits, gate fitted on its own training rows. What a held-out figure of the whole reward (its
    gate included) is measured with."""
    from traitlab.judges.aggregate import fit_calibration

    lab, train = ~np.isnan(data.labels), oof["fold"] != k
    cal = fit_calibration(oof["logits"][lab & train], data.labels[lab & train].astype(int), "platt")
    p = oof["params"][k] | {"calibration": np.array([cal.a, cal.b], dtype=np.float32)}
    return LocalReward(data.trait_set, cfg, p, gate=fit_gate(data.subset(train), predict_params(p, X[train & lab])[1],
                                                               cfg))


def fold_rewards(X: np.ndarray, data: TrainingSet, cfg: RewardConfig, oof: Mapping[str, Any]
                 ) -> list[tuple[LocalReward, list[Dialogue]]]:
    """Every fold's reward (:func:`fold_reward`) with the labelled dialogues it never saw; a fold without both
    sides in its held-out rows or its training rows is left out."""
    lab, fold = ~np.isnan(data.labels), oof["fold"]
    out = []
    for k in range(len(oof["params"])):
        test = (fold == k) & lab
        if len(set(data.labels[test])) == 2 and len(set(data.labels[(fold != k) & lab])) == 2:
            out.append((fold_reward(X, data, cfg, oof, k), [data.dialogues[i] for i in np.flatnonzero(test)]))
    return out


def heldout_audit(X: np.ndarray, data: TrainingSet, cfg: RewardConfig, oof: Mapping[str, Any]) -> AuditReport | None:
    """The red team of :func:`traitlab.judges.audit.audit_folds` on the fold rewards (None: no fold has both
    sides)."""
    from traitlab.judges.audit import audit_folds

    folds = fold_rewards(X, data, cfg, oof)
    if not folds:
        return None
    return audit_folds(folds, data.contrast, threshold=cfg.audit_threshold, seed=cfg.seed,
                       name=f"held-out folds of the reward ({len(folds)} of {cfg.folds})")


def heldout_metrics(oof: Mapping[str, Any], data: TrainingSet, cfg: RewardConfig) -> dict:
    """Pairwise accuracy (grouped), ECE of cross-fitted Platt P(positive), per-trait Spearman with the judge,
    and fidelity (Spearman of the scalar with the judge's aggregate of the real ratings)."""
    from scipy.stats import spearmanr

    from traitlab.judges.aggregate import (
        expected_calibration_error,
        fit_calibration,
        grouped_folds,
        pairwise_accuracy_groups,
        reliability_bins,
    )

    traits, logits = oof["traits"], oof["logits"]
    lab = ~np.isnan(data.labels)
    y = data.labels[lab].astype(int)
    groups = [g for g, keep in zip(data.groups, lab, strict=True) if keep]
    fold = grouped_folds(groups, cfg.folds, cfg.seed)
    p = np.zeros(len(y))
    for k in range(cfg.folds):
        test = fold == k
        cal = fit_calibration(logits[lab][~test], y[~test], "platt")
        z = cal.a * logits[lab][test] + cal.b
        p[test] = 1 / (1 + np.exp(-cfg.score_bound * np.tanh(z / cfg.score_bound)))
    rho = {}
    for j, t in enumerate(data.trait_set.ids):
        seen = ~np.isnan(data.targets[:, j])
        rho[t] = float(spearmanr(traits[seen, j], data.targets[seen, j])[0]) if seen.sum() > 2 else float("nan")
    agg = oof["agg"]
    fid = lab & np.isfinite(agg)
    return {"pairwise_accuracy": pairwise_accuracy_groups(logits[lab], y, groups)[0],
            "ece": expected_calibration_error(p, y), "trait_spearman": rho,
            "trait_spearman_mean": float(np.nanmean(list(rho.values()))),
            "fidelity_spearman": float(spearmanr(logits[fid], agg[fid])[0]) if fid.sum() > 2 else None,
            "reliability": [b.model_dump() for b in reliability_bins(p, y)]}


def fit_gate(data: TrainingSet, scores: np.ndarray, cfg: RewardConfig) -> Gate:
    """The gate's profile: vocabulary and scripts of the training turns, and per measure the value that all but
    ``gate_quantile`` of the training dialogues reach.

    The known-word threshold is cross-fitted: each dialogue's share of known words is measured against the
    vocabulary of the other groups' dialogues, as a new dialogue would be, so a small training set (whose
    own words are all "known") does not gate valid text that merely uses words it never saw."""
    from traitlab.judges.aggregate import grouped_folds

    texts = [t for d in data.dialogues for t in d.target_turns]
    vocab = vocabulary(texts)
    general = encoder_words() if cfg.gate_general_words else frozenset()
    vocab += sorted(general - set(vocab))
    letters = [c for t in texts for c in t if c.isalpha()]
    counts: dict[str, int] = {}
    for c in letters:
        s = script_of(c)
        counts[s] = counts.get(s, 0) + 1
    scripts = sorted(s for s, n in counts.items() if n >= 0.001 * len(letters))
    batch = TurnBatch.of(data.dialogues)
    m = batch.validity(frozenset(vocab), frozenset(scripts))
    j_known = VALIDITY_MEASURES.index("known_word_ratio")
    k = min(cfg.folds, len(set(data.groups)))
    if k >= 2:
        fold = grouped_folds(data.groups, k, cfg.seed)
        for f in range(k):
            other = general | frozenset(vocabulary([t for d, g in zip(data.dialogues, fold, strict=True)
                                                    if g != f for t in d.target_turns]))
            rows = fold == f
            m[rows, j_known] = batch.known_word_ratio(other)[rows]
    thresholds = {k: float(np.quantile(m[:, j], cfg.gate_quantile)) for j, k in enumerate(VALIDITY_MEASURES)}
    thresholds["known_word_ratio"] = min(thresholds["known_word_ratio"], cfg.gate_max_known)
    return Gate(thresholds=thresholds, vocabulary=vocab, scripts=scripts, floor=float(np.quantile(scores, 0.02)),
                enabled=cfg.gate)


def distill(dialogues: Sequence[Dialogue], ratings: Sequence[TraitRatings], trait_set: TraitSet,
            contrast: Contrast, *, target_role: str | None = None, aggregator: Aggregator | None = None,
            judge: str | None = None, config: RewardConfig | None = None,
            inputs: Mapping[str, str | Path] | None = None) -> LocalReward:
    """Train a LocalReward on labelled (and rated) dialogues; held-out figures (CV grouped by the contrast's
    group) go in ``meta["heldout"]``, the audit of the fold rewards on their held-out dialogues (``cfg.audit``)
    in ``.audit``, provenance (judges, label values, role, contrast, aggregator, sha256 of ``inputs`` =
    {what: file}) in ``meta["provenance"]``."""
    cfg = config or RewardConfig()
    data = training_set(dialogues, ratings, trait_set, contrast, target_role=target_role, judge=judge)
    X = features(data.dialogues, cfg.encoder)
    edits = None
    if cfg.augment:
        ed, src, kind = with_edits(data, cfg)
        edits = (features(ed, cfg.encoder), src, kind)
    oof = cross_val_predict(X, data, cfg, aggregator=aggregator, edits=edits)
    metrics = heldout_metrics(oof, data, cfg)
    report = heldout_audit(X, data, cfg, oof) if cfg.audit else None
    return finish(X, data, cfg, oof, metrics, aggregator=aggregator, edits=edits, inputs=inputs, audit=report)


def distill_files(dialogues: Sequence[str | Path], ratings: Sequence[str | Path], traits: str | Path, *,
                  contrast: str | Path | Contrast | None = None, positive: str | None = None,
                  negative: str | None = None, target_role: str | None = None,
                  aggregator: str | Path | None = None, judge: str | None = None,
                  config: RewardConfig | None = None) -> LocalReward:
    """:func:`distill` from files (what ``traitlab distill`` runs): the contrast is the given one with the
    flags applied, else ``positive`` against ``negative`` (default: the one other label in the dialogues)."""
    from traitlab.data import load_dialogues, load_ratings
    from traitlab.judges.aggregate import Aggregator

    rows = [d for f in dialogues for d in load_dialogues(f, target_role=target_role)]
    rated = [r for f in ratings for r in load_ratings(f)]
    trait_set = load_trait_set(traits)
    if isinstance(contrast, str | Path):
        contrast = Contrast.load(contrast)
    if contrast is not None:
        contrast = contrast.override(positive=positive, negative=negative, target_role=target_role)
    else:
        labels = sorted({d.label for d in rows if d.label is not None})
        if positive is None:
            raise ValueError(f"name the rewarded side: --positive LABEL (labels in the dialogues: {labels})")
        others = [x for x in labels if x != positive]
        if negative is None and len(others) != 1:
            raise ValueError(f"--negative is needed: labels other than {positive!r} are {others}")
        negative = negative or others[0]
        contrast = Contrast(positive=positive, negative=negative, target_role=target_role,
                            description=f"{positive} versus {negative}")
    agg = Aggregator.load(aggregator) if aggregator is not None else None
    if agg is not None and agg.trait_set_hash and agg.trait_set_hash != trait_set.hash:
        raise DataError(aggregator, None, "trait_set_hash", f"{agg.trait_set_hash} is not the trait set's "
                        f"{trait_set.hash} ({traits})")
    files = {f"dialogues[{i}]": f for i, f in enumerate(dialogues)} | {
        f"ratings[{i}]": f for i, f in enumerate(ratings)} | {"traits": traits}
    if aggregator is not None:
        files["aggregator"] = aggregator
    return distill(rows, rated, trait_set, contrast, target_role=target_role, aggregator=agg, judge=judge,
                   config=config, inputs=files)


def finish(X: np.ndarray, data: TrainingSet, cfg: RewardConfig, oof: Mapping[str, Any], metrics: dict, *,
           aggregator: Aggregator | None, edits: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
           inputs: Mapping[str, str | Path] | None, audit: AuditReport | None = None) -> LocalReward:
    """The final reward on every row: calibration from the out-of-fold logits, gate from the training data;
    ``audit``: the held-out audit of its fold rewards, kept with it (its verdict in ``meta["heldout"]``)."""
    from traitlab.judges.aggregate import fit_calibration

    lab = ~np.isnan(data.labels)
    calibration = fit_calibration(oof["logits"][lab], data.labels[lab].astype(int), "platt")
    every = np.ones(len(X), dtype=bool)
    params = _fit(X, data, every, cfg, _aggregate_logits(data, every, aggregator), edits)
    params["calibration"] = np.array([calibration.a, calibration.b], dtype=np.float32)
    _, scores = predict_params(params, X)
    gate = fit_gate(data, scores[lab], cfg)
    style_default = X[:, -len(STYLE_FEATURES):][lab].mean(0).tolist()
    provenance = {
        "judges": data.judges, "contrast": data.contrast.model_dump(mode="json"),
        "labels": {"positive": data.contrast.positive, "negative": data.contrast.negative,
                   "counts": {data.contrast.positive: int((data.labels == 1).sum()),
                              data.contrast.negative: int((data.labels == 0).sum()),
                              "unlabelled": int((~lab).sum())}},
        "target_roles": sorted({d.target_role for d in data.dialogues}),
        "aggregator": (f"given: {aggregator.name} (trait set {aggregator.trait_set_hash})" if aggregator is not None
                       else "L1 logistic (C=0.1) fitted inside distill on the labelled, fully rated rows"),
        "inputs": {k: {"path": str(p), "sha256": file_sha256(p)} for k, p in (inputs or {}).items()},
    }
    if audit is not None:
        w = audit.worst
        metrics = metrics | {"audit": {"passed": audit.passed, "threshold": audit.threshold, "folds": audit.folds,
                                       "n_negative": audit.n_negative, "worst_edit": w.edit,
                                       "worst_share_above": w.share_above, "worst_interval": list(w.share_interval)}}
    meta = {"trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "n_rows": len(X),
            "n_labelled": int(lab.sum()), "n_edits": 0 if edits is None else len(edits[1]),
            "provenance": provenance, "heldout": metrics, "style_default": style_default}
    return LocalReward(data.trait_set, cfg, params, meta, gate, audit)




# inference (numpy) ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Scoring allocates about a million short-lived strings and lists per 4,000 dialogues and no reference
    cycles; with the cyclic collector on, its passes walk the caller's whole heap (a loaded data set, a model)
    for nothing: a quarter of the scoring time (``bench/reward.py --only cost``). A caller's own
    ``gc.disable()`` is kept."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    """torch's tanh GELU, 0.5 x (1 + tanh(c (x + 0.044715 x^3))), in place on one buffer: ``x ** 3`` and the
    temporaries of the plain expression took 30x longer on a (4000, 384) batch."""
    c = 0.7978845608028654
    t = x * x
    t *= 0.044715 * c
    t += c
    t *= x
    np.tanh(t, out=t)
    t += 1.0
    t *= x
    t *= 0.5
    return t


def predict_params(p: Mapping[str, np.ndarray], X: np.ndarray, *, calibrated: bool = True,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(traits on the rating scale, score) per row: the TraitHead forward in numpy (no torch needed), an
    ensemble's members side by side (traits: their mean; logit: their mean, through the scalar's weights).

    ``calibrated`` gives the bounded calibrated log-odds; else the raw logit over the traits."""
    clip, bound = (float(v) for v in p["bounds"])
    xs = np.clip((X.astype(np.float32) - p["x_mean"]) / p["x_scale"], -clip, clip)
    z = _gelu_tanh(xs @ p["trunk.0.weight"].T + p["trunk.0.bias"]) @ p["trunk.3.weight"].T + p["trunk.3.bias"]
    z = z.reshape(len(z), -1, len(p["trait_mean"]))  # (rows, members, traits)
    members = np.clip(z * p["trait_scale"] + p["trait_mean"], p["trait_lo"], p["trait_hi"])
    zc = ((members - p["trait_mean"]) / p["trait_scale"]).reshape(len(z), -1)
    logit, traits = zc @ p["head.weight"][0] + p["head.bias"][0], members.mean(1)
    if not calibrated:
        return traits.astype(float), logit.astype(float)
    a, b = (float(v) for v in p["calibration"])
    return traits.astype(float), (bound * np.tanh((a * logit + b) / bound)).astype(float)


# the reward -----------------------------------------------------------------------------------------------
class LocalReward:
    """Scores a dialogue's judged speaker (``Dialogue.target_turns``): bounded calibrated log-odds of the
    positive side (``sigmoid(score)`` = P(positive), ``|score| <= config.score_bound``) after the validity gate,
    plus the predicted rating of every trait (on the judge's scale), keyed by trait id. Satisfies
    :class:`traitlab.registry.Reward`."""

    def __init__(self, trait_set: TraitSet, config: RewardConfig, params: Mapping[str, np.ndarray],
                 meta: dict | None = None, gate: Gate | None = None, audit: AuditReport | None = None):
        if params["trait_mean"].shape[0] != len(trait_set.ids):
            raise ValueError(f"heads predict {params['trait_mean'].shape[0]} traits, trait set {trait_set.name!r} "
                             f"has {len(trait_set.ids)}")
        self.trait_set, self.config, self.params = trait_set, config, dict(params)
        self.meta, self.gate = dict(meta or {}), gate
        self._audit, self._audit_file = audit, None
        self.last_trait_means: dict[str, float] = {}

    @property
    def audit(self) -> AuditReport | None:
        """The held-out audit the reward was made with (``distill``'s, or a saved reward's ``audit.json``, read
        on first use: the audit module's statistics would otherwise double a scoring process's start-up)."""
        if self._audit is None and self._audit_file is not None:
            from traitlab.judges.audit import AuditReport

            self._audit = _saved(self._audit_file, AuditReport, "an audit report")
        return self._audit

    @property
    def trait_ids(self) -> list[str]:
        return self.trait_set.ids

    @property
    def trait_set_hash(self) -> str:
        return self.trait_set.hash

    @property
    def aggregator(self) -> Aggregator:
        """The scalar head as an Aggregator over the predicted traits (weights per standard deviation), before
        the bound and the gate (which leave it unchanged for valid dialogues with ``|score|`` well inside the
        bound)."""
        from traitlab.judges.aggregate import Aggregator, Calibration

        p, ids = self.params, self.trait_ids
        a, b = (float(v) for v in p["calibration"])
        return Aggregator(name="local_reward", trait_set_hash=self.trait_set_hash,
                          weights=dict(zip(ids, self._head_weights().tolist(), strict=True)),
                          bias=float(p["head.bias"][0]),
                          feature_mean=dict(zip(ids, p["trait_mean"].tolist(), strict=True)),
                          feature_scale=dict(zip(ids, p["trait_scale"].tolist(), strict=True)),
                          calibration=Calibration(method="platt", a=a, b=b))

    def trait_weights(self) -> dict[str, float]:
        """Score units per trait unit (calibrated log-odds, near the centre of the bound)."""
        p = self.params
        a = float(p["calibration"][0])
        return {t: float(a * w / s) for t, w, s in
                zip(self.trait_ids, self._head_weights(), p["trait_scale"], strict=True)}

    def _head_weights(self) -> np.ndarray:
        """The scalar's weight per standardised trait, summed over an ensemble's members (each holds 1/k of it):
        the score is exactly this over the mean traits when the members share one scalar, as :func:`fit_head`
        trains them."""
        return self.params["head.weight"][0].reshape(-1, len(self.trait_ids)).sum(0)

    def features(self, dialogues: Sequence[Dialogue], batch: TurnBatch | None = None) -> np.ndarray:
        """What the heads read of each dialogue (``[embedding | style]``)."""
        self._check(dialogues)
        return features(dialogues, self.config.encoder, batch)

    @staticmethod
    def _check(dialogues: Sequence[Dialogue]) -> None:
        bad = [i for i, d in enumerate(dialogues) if not isinstance(d, Dialogue)]
        if bad:
            raise TypeError(f"LocalReward scores Dialogue objects; item {bad[0]} is {type(dialogues[bad[0]]).__name__}")
        ids = [d.id for d in dialogues]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"dialogue ids must be unique (scores are keyed by id); {dup!r} repeats")

    def score_features(self, X: np.ndarray, dialogues: Sequence[Dialogue], batch: TurnBatch | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """(traits, gated scores) of precomputed features (``batch``: the dialogues' measured turns, if at hand)."""
        traits, scores = predict_params(self.params, X)
        if self.gate is not None and self.gate.enabled and len(dialogues):
            _, v = self.gate.values(dialogues, batch)
            floor = self.gate.floor
            scores = np.where(scores > floor, floor + v * (scores - floor), scores)
        return traits, scores

    def score(self, dialogues: Sequence[Dialogue]) -> list[RewardScore]:
        """One RewardScore per dialogue, in order; ``score`` is the gated bounded log-odds (higher = more like
        the positive side)."""
        self._check(dialogues)
        with _collector_paused():
            batch = TurnBatch.of(dialogues)
            traits, scores = self.score_features(features(dialogues, self.config.encoder, batch), dialogues, batch)
        ids = self.trait_ids  # built from the trait set on each access: once per batch, not per dialogue
        return [RewardScore(id=d.id, score=s, traits=dict(zip(ids, t, strict=True)))
                for d, s, t in zip(dialogues, scores.tolist(), traits.tolist(), strict=True)]

    def p_positive(self, dialogues: Sequence[Dialogue]) -> list[float]:
        """Calibrated probability that each judged speaker is on the contrast's positive side."""
        return [float(1.0 / (1.0 + np.exp(-s.score))) for s in self.score(dialogues)]

    def validity(self, dialogues: Sequence[Dialogue]) -> list[Validity]:
        """What the gate measures of each dialogue (1.0 = valid; all 1.0 when the reward has no gate)."""
        if self.gate is None:
            return [Validity(id=d.id, validity=1.0, weakest="", measures={}) for d in dialogues]
        m, v = self.gate.values(dialogues)
        tau = np.array([self.gate.thresholds[k] for k in self.gate.measures])
        return [Validity(id=d.id, validity=float(v[i]), weakest=self.gate.measures[int(np.argmin(m[i] / np.maximum(
                    tau, 1e-6)))], measures=dict(zip(self.gate.measures, map(float, m[i]), strict=True)))
                for i, d in enumerate(dialogues)]

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
        """Write the small fitted parts (config, trait set, heads, gate, held-out audit); the encoder comes from
        its package."""
        from safetensors.numpy import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.trait_set.save(path / TRAITS_FILE)
        save_file({k: np.ascontiguousarray(v) for k, v in self.params.items()}, str(path / HEADS_FILE))
        if self.gate is not None:
            (path / GATE_FILE).write_text(self.gate.model_dump_json() + "\n", encoding="utf-8")
        if self.audit is not None:
            (path / AUDIT_FILE).write_text(self.audit.model_dump_json(indent=1) + "\n", encoding="utf-8")
        doc = {"format": FORMAT, "trait_set_hash": self.trait_set_hash, "trait_ids": self.trait_ids,
               "style_features": list(STYLE_FEATURES), "config": self.config.model_dump(mode="json"),
               "meta": self.meta}
        (path / CONFIG_FILE).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> LocalReward:
        """Load a saved reward; refuses parts that do not belong together (trait set, features, heads)."""
        from safetensors.numpy import load_file

        path = Path(path)
        try:
            doc = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(path / CONFIG_FILE, None, None, f"not a saved LocalReward: {e}") from e
        ts = load_trait_set(path / TRAITS_FILE)
        for field, expected in (("format", FORMAT), ("trait_set_hash", ts.hash), ("trait_ids", ts.ids),
                                ("style_features", list(STYLE_FEATURES))):
            if doc.get(field) != expected:
                raise DataError(path / CONFIG_FILE, None, field,
                                f"{doc.get(field)!r} does not match this reward's parts / code ({expected!r})")
        # fields a reward saved before them did not use: one head, every style feature read, no strict edit
        before = {"ensemble": 1, "ignore_style": [], "strict_edits": []}
        try:
            cfg = RewardConfig.model_validate(before | doc["config"])
        except ValueError as e:  # pydantic's ValidationError names the field inside the config
            raise DataError(path / CONFIG_FILE, None, "config", str(e).replace("\n", " ")) from e
        try:
            params = load_file(str(path / HEADS_FILE))
        except OSError as e:
            raise DataError(path / HEADS_FILE, None, None, f"heads do not load: {e}") from e
        n_in = encoder_dim(cfg.encoder) + len(STYLE_FEATURES)
        if params.get("x_mean", np.zeros(0)).shape != (n_in,):
            raise DataError(path / HEADS_FILE, None, "x_mean", f"heads do not take {n_in} features")
        if params.get("head.weight", np.zeros(0)).shape != (1, cfg.ensemble * len(ts.ids)):
            raise DataError(path / HEADS_FILE, None, "head.weight", f"is not the scalar of {cfg.ensemble} "
                            f"heads over {len(ts.ids)} traits (config ensemble={cfg.ensemble})")
        reward = cls(ts, cfg, params, doc.get("meta"), _saved(path / GATE_FILE, Gate, "a gate profile"))
        if (path / AUDIT_FILE).exists():
            reward._audit_file = path / AUDIT_FILE
        return reward

    def export_hf(self, path: str | Path) -> Path:
        """Save as a Hugging Face model: ``AutoModelForSequenceClassification.from_pretrained(path,
        trust_remote_code=True)`` gives ``logits[:, 0]`` = this reward's score before the gate (fp32 MiniLM
        encoder, so only for rewards trained on it; pass ``style_features`` for the exact score, see
        ``reward_hf_modeling``). The saved tokenizer deletes punctuation when the reward's encoder does."""
        import torch
        from transformers import AutoModel, AutoTokenizer

        from traitlab.judges import reward_hf_modeling as hf

        if self.config.encoder.kind != "minilm":
            raise ValueError(f"export_hf carries the MiniLM encoder; this reward reads the "
                             f"{self.config.encoder.kind!r} encoder")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        base = AutoModel.from_pretrained(encoder_path(), local_files_only=True)
        config = hf.TraitlabRewardConfig(
            encoder=base.config.to_dict(), hidden=self.config.hidden, dropout=self.config.dropout,
            members=self.config.ensemble,
            trait_ids=self.trait_ids, style_names=list(STYLE_FEATURES), trait_set_hash=self.trait_set_hash,
            style_default=self.meta.get("style_default"), max_length=self.config.encoder.max_tokens,
            auto_map={"AutoConfig": "modeling_traitlab_reward.TraitlabRewardConfig",
                      "AutoModelForSequenceClassification": "modeling_traitlab_reward.TraitlabRewardModel"})
        model = hf.TraitlabRewardModel(config)
        model.bert.load_state_dict({k: v for k, v in base.state_dict().items() if not k.startswith("pooler.")})
        model.reward_head.load_state_dict({k: torch.tensor(v) for k, v in self.params.items()})
        model.save_pretrained(str(path))
        tokenizer = AutoTokenizer.from_pretrained(encoder_path(), local_files_only=True)
        if self.config.encoder.strip_punctuation:  # the exported tokenizer deletes punctuation as encode() does
            from tokenizers import Regex, normalizers
            from transformers import PreTrainedTokenizerFast

            backend = tokenizer.backend_tokenizer
            backend.normalizer = normalizers.Sequence([normalizers.Replace(Regex(r"\p{P}"), ""), backend.normalizer])
            tokenizer = PreTrainedTokenizerFast(  # a BertTokenizer would rebuild its own normaliser on load
                tokenizer_object=backend, model_max_length=tokenizer.model_max_length,
                **{k: getattr(tokenizer, k) for k in ("cls_token", "sep_token", "pad_token", "unk_token",
                                                      "mask_token")})
        tokenizer.save_pretrained(str(path))
        shutil.copyfile(hf.__file__, path / "modeling_traitlab_reward.py")
        return path


def _saved(path: Path, model: type[BaseModel], what: str) -> Any:
    """An optional part of a saved reward: ``model`` read from ``path``, None when the file is absent."""
    if not path.exists():
        return None
    try:
        return model.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise DataError(path, None, None, f"not {what}: {e}") from e


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


@register_reward("local")
def local_reward(path: str | Path | None = None) -> LocalReward:
    """The registry's ``local`` reward: a saved LocalReward folder, None = the shipped default."""
    return load_reward(path)


def style_of(d: Dialogue) -> np.ndarray:
    """The style features of a dialogue's judged turns (what an HF export needs as ``style_features``)."""
    return style_features(d.target_turns, previous_messages(d))
