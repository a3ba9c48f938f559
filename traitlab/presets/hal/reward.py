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
