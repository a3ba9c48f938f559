"""HAL's recipe for the local reward: which files of the HAL data folder, which judges, which rows held out.

It trains on

- ``hal_turing/dialogues.jsonl`` (witness judged, labels human/ai, games paired by ``game_id``) with GPT-5's
  HAL32Q ratings (``judge_ratings.jsonl``),
- ``hal_doctor/train_scored_gpt5mini.jsonl`` (patient judged, unlabelled, gpt-5-mini's HL16Q ratings),
- ``hal_doctor/generations_scored.jsonl`` (patient judged, unlabelled, GPT-5's HL16Q ratings) except the
  personas of :func:`doctor_heldout` (one in four), kept out so the doctor-transfer figures of
  ``bench/reward.py`` stay held out; CV groups the doctor rows by persona.

Reproduce the shipped default (``judges/default_reward``)::

    traitlab distill --preset hal --data ../shared/data --out judges/default_reward
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from traitlab.contrast import Contrast
from traitlab.data import load_dialogues, load_ratings, load_trait_set
from traitlab.judges.reward import LocalReward, RewardConfig, distill
from traitlab.presets.hal import CONTRAST as HAL_CONTRAST
from traitlab.presets.hal import DOCTOR_TRAIN_JUDGE, JUDGE
from traitlab.presets.hal import files as hal_files
from traitlab.types import Dialogue, TraitRatings, TraitSet

TURING_JUDGE = DOCTOR_GEN_JUDGE = JUDGE
CONTRAST: Contrast = HAL_CONTRAST.model_copy(update={
    "target_role": None, "description": "a human versus an AI speaker, judged on how human the judged speaker seems"})
"""HAL's contrast for the reward: no fixed role, since Turing rows judge the witness and doctor rows the
patient (each file's own default)."""


class HalInputs(BaseModel):
    """What the HAL recipe hands to :func:`traitlab.judges.reward.distill`."""

    model_config = {"arbitrary_types_allowed": True}

    dialogues: list[Dialogue]
    ratings: list[TraitRatings]
    trait_set: TraitSet
    files: dict[str, Path]


def files(data_dir: str | Path) -> dict[str, Path]:
    """The recipe's inputs, named as its provenance records them, in the preset's folder layout."""
    f = hal_files(Path(data_dir))
    return {"traits": f["traits"], "turing_dialogues": f["dialogues"], "turing_ratings": f["ratings"],
            "doctor_train": f["doctor_train"], "doctor_generations": f["doctor_generations"]}


def doctor_heldout(d: Dialogue) -> bool:
    """The doctor generations kept out of training: every fourth persona (all its policies and epochs)."""
    return int(d.meta.get("persona_id", 0)) % 4 == 0


def _grouped(ds: list[Dialogue], prefix: str) -> list[Dialogue]:
    return [d.model_copy(update={"meta": d.meta | {"group": f"{prefix}-{d.meta.get('persona_id', d.id)}"}})
            for d in ds]


def doctor_generations(data_dir: str | Path, *, heldout: bool) -> tuple[list[Dialogue], list[TraitRatings]]:
    """The scored doctor generations (the held-out personas, or the others) with GPT-5's ratings."""
    path = files(data_dir)["doctor_generations"]
    ds = [d for d in load_dialogues(path, skipped=[]) if doctor_heldout(d) == heldout]
    ids = {d.id for d in ds}
    return _grouped(ds, "gen-persona"), [r for r in load_ratings(path, judge=DOCTOR_GEN_JUDGE) if r.dialogue_id in ids]


class DoctorTransfer(BaseModel):
    """The doctor-transfer check: held-out generations, GPT-5's aggregate of their ratings, the patient's
    mean turn length (what a reward that knows only length would follow)."""

    model_config = {"arbitrary_types_allowed": True}

    dialogues: list[Dialogue]
    judge_aggregate: Any  # np.ndarray (n,)
    mean_turn_chars: Any  # np.ndarray (n,)
    traits: list[str]


def doctor_transfer(data_dir: str | Path) -> DoctorTransfer:
    """The generations of the held-out personas with GPT-5's aggregate of the traits it rated on all of them
    (an L1 logistic, C=0.1, fitted on GPT-5's ratings of the same traits on the labelled Turing transcripts).
    A reward transfers when its scalar follows that aggregate beyond ``mean_turn_chars``."""
    from traitlab.judges.aggregate import fit_linear

    doc, ratings = doctor_generations(data_dir, heldout=True)
    by_id = {r.dialogue_id: r.ratings for r in ratings}
    doc = [d for d in doc if d.id in by_id]
    traits = sorted(set.intersection(*(set(by_id[d.id]) for d in doc)))
    f = files(data_dir)
    turing = [d for d in load_dialogues(f["turing_dialogues"]) if d.label is not None]
    rated = {r.dialogue_id: r.ratings for r in load_ratings(f["turing_ratings"], judge=TURING_JUDGE)}
    full = [d for d in turing if d.id in rated and set(traits) <= set(rated[d.id])]
    agg = fit_linear(np.array([[rated[d.id][t] for t in traits] for d in full]),
                     np.array([int(CONTRAST.y(d)) for d in full]), traits, C=0.1)
    return DoctorTransfer(dialogues=doc, traits=traits,
                          judge_aggregate=agg.logit_matrix(np.array([[by_id[d.id][t] for t in traits] for d in doc]),
                                                           traits),
                          mean_turn_chars=np.array([np.mean([len(t) for t in d.target_turns]) for d in doc]))


def inputs(data_dir: str | Path, *, doctor_generations_too: bool = True) -> HalInputs:
    """The HAL training rows (see the module docstring)."""
    f = files(data_dir)
    ts = load_trait_set(f["traits"], name="hal32")
    turing = load_dialogues(f["turing_dialogues"])
    ratings = load_ratings(f["turing_ratings"], judge=TURING_JUDGE)
    doctor = _grouped(load_dialogues(f["doctor_train"], skipped=[]), "train-persona")
    ids = {d.id for d in doctor}
    ratings += [r for r in load_ratings(f["doctor_train"], judge=DOCTOR_TRAIN_JUDGE) if r.dialogue_id in ids]
    dialogues = [*turing, *doctor]
    used = {k: f[k] for k in ("traits", "turing_dialogues", "turing_ratings", "doctor_train")}
    if doctor_generations_too:
        gen, gen_ratings = doctor_generations(data_dir, heldout=False)
        dialogues += gen
        ratings += gen_ratings
        used["doctor_generations"] = f["doctor_generations"]
    rated = {r.dialogue_id for r in ratings}
    missing = [d.id for d in turing if d.id not in rated]
    if missing:
        raise ValueError(f"{f['turing_ratings']}: no {TURING_JUDGE} rating for {len(missing)} Turing dialogues, "
                         f"e.g. {missing[:3]}")
    return HalInputs(dialogues=dialogues, ratings=ratings, trait_set=ts, files=used)


def distill_preset(data_dir: str | Path, config: RewardConfig | None = None) -> LocalReward:
    """The HAL default reward, trained through the general :func:`~traitlab.judges.reward.distill`."""
    x = inputs(data_dir)
    return distill(x.dialogues, x.ratings, x.trait_set, CONTRAST, config=config, inputs=x.files)
