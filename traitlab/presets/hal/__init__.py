"""The HAL preset (arXiv 2601.02813): human vs AI witnesses of Turing-test games, and doctor-patient visits.

Everything traitlab knows about HAL's data lives in this package: the contrast (``human``/``ai``, the
witness judged, games paired by ``game_id``), the Turing and doctor dialogue shapes (roles and their
``I:``/``W:``/``P:``/``D:`` transcript tags), the ``-A``/``-B`` id convention of its games, the judges of its
release, the layout of its data folder (``hal_turing/``, ``hal_doctor/``), ``traitlab data fetch hal``
(:mod:`.fetch`) and its trait sets and HL16 weights (:mod:`.traits`). Importing this module is cheap; it is
imported through the ``traitlab.plugins`` entry point and registers the preset and the shapes.
"""

from __future__ import annotations

from pathlib import Path

from traitlab.contrast import Contrast
from traitlab.data import Shape, register_shape
from traitlab.presets import Preset, preset
from traitlab.types import Dialogue

CONTRAST = Contrast(name="hal", positive="human", negative="ai", positive_noun="human", negative_noun="AI",
                    target_role="witness", group="game_id",
                    description="a human witness versus an AI witness in the same Turing-test game, judged on "
                                "how human the witness seems")
"""HAL's contrast: the side the reward rewards is the human witness of each game."""

TURING = register_shape(Shape("hal-turing", frozenset({"interrogator", "witness"}), "witness",
                              {"I": "interrogator", "W": "witness"}))
DOCTOR = register_shape(Shape("hal-doctor", frozenset({"patient", "doctor"}), "patient",
                              {"P": "patient", "D": "doctor"}))

JUDGE = "gpt-5"
"""The judge HAL's reward and HL16 weights were fitted on."""
TURING_JUDGES = ("gpt-5", "gpt-5-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-oss-120b", "gpt-oss-20b")
"""The six judges whose HAL32Q ratings of the Turing games HAL released."""
DOCTOR_TRAIN_JUDGE = "gpt-5-mini"
"""The judge of HAL's scored synthlabs training dialogues."""


def game_id(d: Dialogue) -> str:
    """The game of a HAL transcript: ``meta["game_id"]``, else its id without the ``-A``/``-B`` suffix."""
    if "game_id" in d.meta:
        return str(d.meta["game_id"])
    for suffix in ("-A", "-B"):
        if d.id.endswith(suffix):
            return d.id[: -len(suffix)]
    return d.id


def files(data_dir: Path) -> dict[str, Path]:
    """Where each input of the loop sits in a HAL data folder (``traitlab data fetch hal`` makes one)."""
    turing, doctor = data_dir / "hal_turing", data_dir / "hal_doctor"
    return {"dialogues": turing / "dialogues.jsonl", "ratings": turing / "judge_ratings.jsonl",
            "traits": turing / "traits_hal32.json", "proposals": turing / "proposals.jsonl",
            "hl16": turing / "hl16_weights.json", "doctor_generations": doctor / "generations_scored.jsonl",
            "doctor_train": doctor / "train_scored_gpt5mini.jsonl", "doctor_test": doctor / "dialogues_test.jsonl",
            "prompts_train": doctor / "prompts_train.jsonl", "prompts_test": doctor / "prompts_test.jsonl"}


def _register_cli(app) -> None:
    from traitlab.presets.hal import fetch

    fetch.register(app)


ALIGN = {"prompts": "prompts_train", "heldout": "prompts_test",
         "configs": {k: Path(__file__).parent / "configs" / f"{k}.yaml" for k in ("dpo", "grpo")}}
"""``traitlab align dpo|grpo --preset hal``: the doctor-visit persona prompts, the patient's turns scored."""

def _distill(data_dir: Path, config=None):
    """``traitlab distill --preset hal``: the recipe of the shipped default reward (:mod:`.reward`)."""
    from traitlab.presets.hal.reward import distill_preset

    return distill_preset(data_dir, config)


HAL = preset(Preset(name="hal", contrast=CONTRAST, files=files, judge=JUDGE, register_cli=_register_cli,
                    extra={"align": ALIGN, "distill": _distill},
                    description="HAL's Turing-test games (human vs AI witness) and doctor-patient visits"))
