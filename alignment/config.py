"""Run configurations for ``traitlab align``: our sampling/pairing/monitor settings plus TRL's own config.

A run config is a pydantic model loadable from YAML. Everything TRL already names (learning rate, beta,
max_steps, ``max_completion_length``...) stays in the nested ``trl`` mapping under TRL's own field names and
is handed to :class:`trl.DPOConfig` / :class:`trl.GRPOConfig` unchanged, so TRL's documentation applies as is.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from traitlab.data import DataError

DEFAULT_MODEL = "local:smollm2-135m"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraSettings(_Strict):
    """LoRA adapter; ``quantize="auto"`` means QLoRA (4-bit base) when CUDA and bitsandbytes are there."""

    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | str = "all-linear"
    quantize: Literal["auto", "4bit", "none"] = "auto"

    def peft_config(self) -> Any:
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules, task_type="CAUSAL_LM")


class SamplingSettings(_Strict):
    """How completions are drawn from the policy (for pairs and for the monitors)."""

    max_new_tokens: int = Field(160, gt=0)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    batch_size: int = Field(8, gt=0)


class MonitorSettings(_Strict):
    """Held-out evaluation and hacking flags.

    ``every_steps`` = 0 evaluates only before and after training. A trait is flagged when it moves against
    the sign of its weight by at least ``min_effect_sd`` baseline SDs with a CI that excludes 0; a trait is
    flagged as dominant when its share of the score gain exceeds ``dominance_share``. Completions are flagged
    ``degenerate`` when a detector of ``traitlab.judges.audit`` (emoji, empty turns, repetition, another
    script or language...) rises by ``degenerate_rise`` (``degenerate_rare_rise`` for marks real turns almost never
    show) or judged turns grow ``max_length_ratio`` times longer.
    """

    heldout_limit: int = Field(50, gt=0)
    eval_limit: int = Field(16, gt=0, description="held-out prompts sampled at each mid-training eval")
    every_steps: int = Field(0, ge=0)
    level: float = Field(0.95, gt=0, lt=1)
    min_effect_sd: float = Field(0.2, ge=0)
    dominance_share: float = Field(0.5, gt=0, le=1)
    max_perplexity_increase: float = Field(0.10, ge=0, description="relative rise that flags collateral damage")
    max_parse_rate_drop: float = Field(0.2, ge=0, le=1)
    degenerate_rise: float = Field(0.2, gt=0, le=1, description="rise of a degeneracy rate (emoji, empty turns, "
                                                                "repetition, other script...) that flags it")
    degenerate_rare_rise: float = Field(0.05, gt=0, le=1, description="the same for marks real turns almost never "
                                        "show (emoji, empty turns, symbol runs, invisible characters)")
    max_length_ratio: float = Field(3.0, gt=1, description="growth of characters per judged turn that flags it")
    capability_texts: str | None = Field(None, description="dialogues file whose human target turns measure "
                                                           "perplexity; None = the shipped sample")
    capability_limit: int = Field(24, gt=0, description="dialogues used for the perplexity check")
    capability_role: str | None = Field(None, description="judged role in capability_texts (None: the file's "
                                                          "shape decides)")
    capability_label: str | None = Field(None, description="only dialogues with this label (e.g. the positive "
                                                           "side); None: all")


class AlignRunConfig(_Strict):
    """What DPO and GRPO runs share: the policy, the prompts, the reward, where things go."""

    model: str = DEFAULT_MODEL
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="policy weights; auto = bfloat16 on CUDA, float32 on CPU (bfloat16 is ~2x faster "
                            "on CPUs with AVX512-BF16/AMX)")
    prompts: str | None = Field(None, description="training prompts JSONL (a preset's with --preset)")
    heldout: str | None = Field(None, description="held-out prompts JSONL for the monitors")
    prompt_limit: int | None = Field(None, gt=0)
    target_role: str = Field("assistant", description="who is scored: a role of the dialogue the completion "
                                                       "writes (tagged lines), or 'assistant' for all of it")
    reward: str | None = Field(None, description="LocalReward folder; None = the shipped default")
    out_dir: str = "runs/align"
    store: str | None = None
    seed: int = 0
    resume: bool | str = False
    lora: LoraSettings = Field(default_factory=LoraSettings)
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    trl: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of TRL's config")

    @staticmethod
    def trl_class() -> Any:
        """The TRL config class this run hands its ``trl`` mapping to."""
        raise NotImplementedError

    def trl_config(self) -> Any:
        """TRL's config from ``trl``, with traitlab's defaults where the user gave none (CPU-safe precision,
        no external loggers, our output folder and seed)."""
        import torch

        cls = self.trl_class()
        cuda = torch.cuda.is_available()
        kwargs: dict[str, Any] = {"output_dir": str(Path(self.out_dir) / "trainer"), "report_to": [],
                                  "seed": self.seed, "bf16": cuda and torch.cuda.is_bf16_supported(),
                                  "gradient_checkpointing": cuda, "save_strategy": "steps", "save_steps": 25,
                                  "logging_steps": 5}
        kwargs.update(self.trl)
        return cls(**kwargs)


class DPORunConfig(AlignRunConfig):
    """HAL's recipe: K samples per prompt, best vs worst when their gap exceeds ``min_gap_sd`` SDs."""

    num_samples: int = Field(4, ge=2)
    min_gap_sd: float = Field(0.5, ge=0)
    pair_unparsed: bool = Field(True, description="a completion the target never speaks in may be rejected "
                                                  "against a parsed one whatever the gap")

    @staticmethod
    def trl_class() -> Any:
        from trl import DPOConfig

        return DPOConfig


class GRPORunConfig(AlignRunConfig):
    """GRPO on the local reward; KL via ``trl.beta``, length via ``trl.max_completion_length`` and
    ``length_penalty`` (subtracted per completion token, as a fraction of ``max_completion_length``)."""

    length_penalty: float = Field(0.0, ge=0)
    unparsed_margin: float = Field(1.0, ge=0, description="an unparsed completion scores this far below "
                                                         "the batch's lowest parsed one")

    @staticmethod
    def trl_class() -> Any:
        from trl import GRPOConfig

        return GRPOConfig


C = TypeVar("C", bound=AlignRunConfig)


def trl_field_names(cfg_cls: type[AlignRunConfig]) -> set[str]:
    return {f.name for f in dataclasses.fields(cfg_cls.trl_class())}


def load_config(path: str | Path | None, cls: type[C], overrides: dict[str, Any] | None = None) -> C:
    """Read a run config from YAML (``None``: defaults only), apply ``overrides`` on top (their ``trl``
    keys merge into the file's); a bad field (ours or TRL's) names the file and the field."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as e:
            raise DataError(path, None, None, f"cannot read: {e.strerror or e}") from e
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            raise DataError(path, mark.line + 1 if mark else None, None, f"broken YAML: {e}") from e
        if data == {}:
            raise DataError(path, None, None, "empty config: give at least one setting, or leave out --config to "
                                              "train on the defaults (or --preset NAME for its recipe)")
        if not isinstance(data, dict):
            raise DataError(path, None, None, f"expected a mapping of settings, got {type(data).__name__}")
    overrides = dict(overrides or {})
    if "trl" in overrides:
        overrides["trl"] = {**(data.get("trl") or {}), **overrides["trl"]}
    return validate_config({**data, **overrides}, cls, source=path or "<command line>")


def validate_config(data: dict[str, Any], cls: type[C], *, source: str | Path = "<config>") -> C:
    """Validate a mapping as ``cls``, checking the ``trl`` keys against TRL's config fields too."""
    try:
        cfg = cls.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise DataError(source, None, ".".join(map(str, err["loc"])) or None, err["msg"]) from None
    unknown = sorted(set(cfg.trl) - trl_field_names(cls))
    if unknown:
        raise DataError(source, None, f"trl.{unknown[0]}",
                        f"not a field of trl.{cls.trl_class().__name__} (unknown: {unknown})")
    hints = typing.get_type_hints(cls.trl_class())
    for key, value in cfg.trl.items():
        try:
            TypeAdapter(hints[key]).validate_python(value)
        except ValidationError as e:
            raise DataError(source, None, f"trl.{key}", f"{e.errors()[0]['msg']} (trl.{cls.trl_class().__name__}."
                                                        f"{key} is {hints[key]}; got {value!r})") from None
    return cfg


def preflight(cfg: AlignRunConfig, *, source: str | Path = "<config>") -> None:
    """Read every input a run needs (training and held-out prompts, capability texts, the reward's config)
    and check its outputs can be written, before any model is loaded; the first problem is a DataError."""
    from traitlab.console import OutputError, check_output
    from traitlab.settings import store_path

    from .pairs import load_prompts

    for field in ("prompts", "heldout"):
        if getattr(cfg, field) is None:
            raise DataError(source, None, field, f"no {field} file: give --{field} FILE (or --preset NAME "
                                                 "[--data DIR] for a preset's prompts)")
    load_prompts(cfg.prompts, cfg.prompt_limit)
    load_prompts(cfg.heldout, cfg.monitor.heldout_limit)
    if cfg.monitor.capability_texts is not None:
        from .monitors import capability_texts

        capability_texts(cfg.monitor.capability_texts, 1, target_role=cfg.monitor.capability_role)
    if cfg.reward is not None:
        from traitlab.judges.reward import CONFIG_FILE

        if not (Path(cfg.reward) / CONFIG_FILE).is_file():
            raise DataError(cfg.reward, None, "reward", f"not a saved LocalReward folder (no {CONFIG_FILE})")
    try:
        check_output(cfg.out_dir, folder=True, what="out_dir")
        check_output(store_path(cfg.store), what="store")
    except OutputError as e:
        raise DataError(source, None, None, str(e)) from None
