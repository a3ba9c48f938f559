"""CLI commands of traitlab.alignment: ``traitlab align dpo`` and ``traitlab align grpo``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from traitlab.console import fail
from traitlab.options import DataOpt, PresetOpt

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="run config YAML (default with --preset: the "
                                                                 "preset's recipe)")]
ModelOpt = Annotated[str | None, typer.Option(help="policy: a transformers path/id or local:smollm2-135m")]
PromptsOpt = Annotated[Path | None, typer.Option(help="training prompts JSONL ({id, prompt} per line)")]
HeldoutOpt = Annotated[Path | None, typer.Option(help="held-out prompts JSONL for the monitors")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="output folder (checkpoints, adapter, pairs)")]
RewardOpt = Annotated[Path | None, typer.Option(help="LocalReward folder (default: the shipped reward)")]
StepsOpt = Annotated[int | None, typer.Option(help="optimizer steps (TRL max_steps)")]
StoreOpt = Annotated[Path | None, typer.Option(help="run store (default $TRAITLAB_STORE or ./traitlab.duckdb)")]
ResumeOpt = Annotated[bool, typer.Option(help="resume from the last checkpoint in the output folder")]


def _overrides(model: str | None, prompts: Path | None, heldout: Path | None, out: Path | None,
               reward: Path | None, steps: int | None, store: Path | None, resume: bool) -> dict[str, Any]:
    given = {"model": model, "prompts": prompts, "heldout": heldout, "out_dir": out, "reward": reward,
             "store": store}
    data: dict[str, Any] = {k: str(v) for k, v in given.items() if v is not None}
    if resume:
        data["resume"] = True
    if steps is not None:
        data["trl"] = {"max_steps": steps}
    return data


def _preset_defaults(kind: str, preset: str, data: Path | None, config: Path | None,
                     overrides: dict[str, Any]) -> tuple[Path | None, dict[str, Any]]:
    """A preset's align recipe (``Preset.extra["align"]``: its config per kind and which of its files are the
    training and held-out prompts) under what the command line gives."""
    from traitlab.presets import get_preset
    from traitlab.settings import data_dir

    p = get_preset(preset)
    recipe = p.extra.get("align")
    if recipe is None:
        raise ValueError(f"preset {preset!r} has no align recipe; give --config and --prompts/--heldout")
    prompts = {k: str(p.path(recipe[k], data_dir(data))) for k in ("prompts", "heldout") if k not in overrides}
    return config or Path(recipe["configs"][kind]), {**prompts, **overrides}


def _config(kind: str, config: Path | None, overrides: dict[str, Any], preset: str | None = None,
            data: Path | None = None) -> Any:
    """The run config from YAML + options (+ a preset's recipe), its inputs read and outputs checked; a bad
    file or value ends the command with one clear line."""
    from .config import DPORunConfig, GRPORunConfig, load_config, preflight

    try:
        if preset is not None:
            config, overrides = _preset_defaults(kind, preset, data, config, overrides)
        cfg = load_config(config, DPORunConfig if kind == "dpo" else GRPORunConfig, overrides)
        preflight(cfg, source=config or "<command line>")  # every input read before any model loads
        return cfg
    except (OSError, ValueError, KeyError) as e:  # DataError and pydantic's ValidationError are ValueErrors
        raise fail(e.args[0] if isinstance(e, KeyError) else e) from None


def _print(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    table = result.before_after
    if not table:  # a non-main process of a multi-process run: the main one evaluates and prints
        return
    t = Table(title=f"run {result.run_id}: held-out means with {table['level']:.0%} CI ({table['n_prompts']} prompts)")
    console = Console()
    texts = result.trait_texts if console.width >= 110 else {}  # a narrow terminal keeps the numbers whole
    for col in ("", *(["trait"] if texts else []), "weight", "before", "after", "delta", "share"):
        t.add_column(col, max_width=48 if col == "trait" else None, overflow="ellipsis", no_wrap=col == "trait")

    def fmt(i: dict[str, float]) -> str:
        return f"{i['mean']:.3f} [{i['lo']:.3f}, {i['hi']:.3f}]"

    s = table["score"]
    text = (lambda tid: [texts.get(tid, "")]) if texts else (lambda tid: [])
    t.add_row("score", *text(""), "", fmt(s["before"]), fmt(s["after"]), fmt(s["delta"]), "")
    for tid, row in sorted(table["traits"].items(), key=lambda kv: -abs(kv[1]["share"])):
        t.add_row(tid, *text(tid), f"{row['weight']:+.3f}", fmt(row["before"]), fmt(row["after"]),
                  fmt(row["delta"]), f"{row['share']:.0%}")
    console.print(t)
    for f in result.flags:
        console.print(f"[bold red]FLAG[/] step {f['step']} {f['kind']}: {f['message']}")
    console.print(f"adapter: {result.adapter_dir}")


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the ``traitlab`` app."""
    align = typer.Typer(help="Align a model to the local reward with TRL (DPO, GRPO) while watching every trait.",
                        no_args_is_help=True)
    app.add_typer(align, name="align")

    @align.command("dpo")
    def dpo(config: ConfigOpt = None, model: ModelOpt = None, prompts: PromptsOpt = None,
            heldout: HeldoutOpt = None, out: OutOpt = None, reward: RewardOpt = None, steps: StepsOpt = None,
            store: StoreOpt = None, resume: ResumeOpt = False, preset: PresetOpt = None, data: DataOpt = None) -> None:
        """Sample K per prompt, score, pair by the gap rule, train DPO with LoRA (HAL's recipe: --preset hal)."""
        from .dpo import run_dpo

        cfg = _config("dpo", config, _overrides(model, prompts, heldout, out, reward, steps, store, resume), preset,
                      data)
        _print(run_dpo(cfg))

    @align.command("grpo")
    def grpo(config: ConfigOpt = None, model: ModelOpt = None, prompts: PromptsOpt = None,
             heldout: HeldoutOpt = None, out: OutOpt = None, reward: RewardOpt = None, steps: StepsOpt = None,
             store: StoreOpt = None, resume: ResumeOpt = False, preset: PresetOpt = None, data: DataOpt = None) -> None:
        """GRPO with the local reward as reward function (KL: trl.beta; length: max_completion_length)."""
        from .grpo import run_grpo

        cfg = _config("grpo", config, _overrides(model, prompts, heldout, out, reward, steps, store, resume),
                      preset, data)
        _print(run_grpo(cfg))
