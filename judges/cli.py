"""CLI commands of traitlab.judges: scoring, aggregator fitting, reward distillation and scoring."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from traitlab.console import MaxFailuresOpt, check_outputs, fail, finish, policy_or_fail
from traitlab.judges.audit_cli import register_audit
from traitlab.judges.provider import ProviderOptions, provider_options
from traitlab.options import (
    ContrastOpt,
    DataOpt,
    GroupOpt,
    NegativeOpt,
    PositiveOpt,
    PresetOpt,
    TargetRoleOpt,
    preset_file,
    require,
    resolve,
    target_role_for,
)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the ``traitlab`` app."""
    _register_score(app)
    _register_aggregate(app)
    _register_reward(app)


def _register_score(app: typer.Typer) -> None:
    """``traitlab score``: rate dialogues on a trait set with an LLM judge."""

    @app.command("score")
    @provider_options
    def score(
        dialogues: Annotated[Path | None, typer.Option(help="dialogues JSONL/CSV whose judged speaker is rated")
                             ] = None,
        traits: Annotated[Path | None, typer.Option(help="trait set JSON (a TraitSet or a bare list)")] = None,
        judge: Annotated[str, typer.Option(help="judge model (LiteLLM name)")] = "local/smollm2-135m",
        mode: Annotated[Literal["all", "per_trait"], typer.Option(
            help="all traits in one call, or one call per trait")] = "all",
        expected: Annotated[bool, typer.Option(
            help="expected Likert score from the judge's token logprobs")] = False,
        limit: Annotated[int | None, typer.Option(help="rate the first N dialogues only")] = None,
        budget_usd: Annotated[float | None, typer.Option(help="stop calling the judge beyond this spend")] = None,
        run_id: Annotated[str | None, typer.Option(help="resume this run (finished calls are cache hits)")] = None,
        out: Annotated[Path | None, typer.Option(help="also write the ratings as JSONL")] = None,
        contrast: ContrastOpt = None, target_role: TargetRoleOpt = None, preset: PresetOpt = None,
        data: DataOpt = None,
        store: Annotated[Path | None, typer.Option(help="run store (default: settings.store_path())")] = None,
        max_failures: MaxFailuresOpt = None,
        batch: Annotated[bool, typer.Option(
            help="send through the provider's batch API (half price, results within 24 h; resumable)")] = False,
        *,
        provider: ProviderOptions,
    ) -> None:
        """Rate each dialogue's judged speaker on every trait; ratings land in the store; prints the run id."""
        from rich.console import Console

        from traitlab.data import load_dialogues, load_trait_set
        from traitlab.judges.rate import score as run
        from traitlab.judges.rate import write_ratings
        from traitlab.settings import store_path
        from traitlab.store import Store

        console = Console()
        policy = policy_or_fail(max_failures)
        check_outputs(("--out", out, False), ("--store", store_path(store), False))
        try:
            trait_set = load_trait_set(require(preset_file(preset, data, "traits", traits), "--traits"))
            path = require(preset_file(preset, data, "dialogues", dialogues), "--dialogues")
            rated = load_dialogues(path, target_role=target_role_for(contrast, preset, target_role))[:limit]
            provider.check(judge)
        except ValueError as e:
            raise fail(e) from None
        config = {"dialogues": str(path), "traits": str(traits), "trait_set_hash": trait_set.hash,
                  "judge": judge, "mode": mode, "expected": expected, "limit": limit,
                  "target_role": rated[0].target_role, "batch": batch,
                  "provider": provider.model_dump(exclude_none=True)}
        with Store(store_path(store)) as st:
            result = run(rated, trait_set, judge, mode=mode, expected=expected, budget_usd=budget_usd, store=st,
                         run_id=run_id, config=config, client_kwargs={"batch": batch, **provider.client_kwargs()})
        if out:
            write_ratings(result.ratings, out)
        wrote = f"; wrote {out}" if out else ""
        console.print(f"rated {len(result.ratings)}/{len(rated)} dialogues on {len(trait_set.traits)} traits "
                      f"({result.failed_calls} failed calls, ${result.cost_usd:.4f}){wrote}")
        print(result.run_id)
        finish(result.unrated, len(rated), policy, errors=result.errors)


def _register_aggregate(app: typer.Typer) -> None:
    """``traitlab fit``: fit the calibrated aggregator."""

    @app.command("fit")
    def fit(
        ratings: Annotated[Path | None, typer.Option(help="ratings JSONL ({id, judge, ratings: {trait_id: value}})")
                           ] = None,
        dialogues: Annotated[Path | None, typer.Option(help="labelled dialogues (labels and groups)")] = None,
        traits: Annotated[Path | None, typer.Option(help="trait set JSON the ratings were made on")] = None,
        judge: Annotated[str | None, typer.Option(help="this judge's ratings ('mean': mean of all judges)")] = None,
        penalty: Annotated[Literal["l1", "l2", "elasticnet"], typer.Option(help="logistic penalty")] = "l1",
        C: Annotated[float, typer.Option("--C", help="inverse regularisation strength")] = 1.0,
        l1_ratio: Annotated[float, typer.Option(help="elastic-net mixing (1 = L1)")] = 0.5,
        calibration: Annotated[Literal["platt", "isotonic", "none"], typer.Option(
            help="P(positive) map")] = "platt",
        folds: Annotated[int, typer.Option(help="cross-validation folds (grouped by the contrast's group)")] = 5,
        seed: Annotated[int, typer.Option(help="fold shuffling and bootstrap seed")] = 0,
        bootstrap: Annotated[int, typer.Option(help="group-bootstrap refits for weight CIs and selection")] = 200,
        select: Annotated[Literal["none", "threshold", "stable"], typer.Option(
            help="refit on the traits kept by |w| > 0.2 (HAL) or by bootstrap stability")] = "none",
        out: Annotated[Path, typer.Option(help="where to write the aggregator")] = Path("aggregator.json"),
        report: Annotated[Path | None, typer.Option(help="where to write the fit report JSON")] = None,
        contrast: ContrastOpt = None, positive: PositiveOpt = None, negative: NegativeOpt = None,
        target_role: TargetRoleOpt = None, group: GroupOpt = None, preset: PresetOpt = None, data: DataOpt = None,
        store: Annotated[Path | None, typer.Option(help="run store (default: settings.store_path())")] = None,
    ) -> None:
        """Fit a calibrated logistic aggregator on trait ratings, cross-validated by group."""
        from rich.console import Console
        from rich.table import Table

        from traitlab.data import load_dialogues, load_ratings, load_trait_set
        from traitlab.judges.aggregate import fit as run
        from traitlab.settings import store_path
        from traitlab.store import Store

        console = Console()
        check_outputs(("--out", out, False), ("--report", report, False), ("--store", store_path(store), False))
        try:  # bad files and unusable ratings (DataError is a ValueError) end in one clear line
            if judge is None and preset is not None:
                from traitlab.presets import get_preset

                judge = get_preset(preset).judge
            rated = load_ratings(require(preset_file(preset, data, "ratings", ratings), "--ratings"),
                                 judge=None if judge == "mean" else judge)
            trait_set = load_trait_set(require(preset_file(preset, data, "traits", traits), "--traits"))
            labelled = load_dialogues(require(preset_file(preset, data, "dialogues", dialogues), "--dialogues"),
                                      target_role=target_role_for(contrast, preset, target_role))
            spec = resolve(labelled, contrast, preset, positive, negative, target_role, group)
            config = {"ratings": str(ratings), "dialogues": str(dialogues), "traits": str(traits), "judge": judge,
                      "penalty": penalty, "C": C, "l1_ratio": l1_ratio, "calibration": calibration,
                      "folds": folds, "seed": seed, "bootstrap": bootstrap, "out": str(out)}
            with Store(store_path(store)) as st:
                result = run(rated, labelled, trait_set, contrast=spec, judge=judge, select=select, store=st,
                             config=config, penalty=penalty, C=C, folds=folds, seed=seed, calibration=calibration,
                             l1_ratio=l1_ratio, n_bootstrap=bootstrap)
        except (ValueError, KeyError) as e:  # KeyError: a rating lacks traits of the set (it names them)
            raise fail(e.args[0] if isinstance(e, KeyError) else e) from None
        agg, rep = result.aggregator, result.report
        agg.save(out)
        if report:
            report.write_text(rep.model_dump_json(indent=2) + "\n", encoding="utf-8")

        cv = Table(title=f"cross-validated ({folds} folds by group, {rep.n_rows} dialogues, {rep.n_games} groups; "
                         f"P({spec.positive_name}))")
        for col in ("judge", "traits", "pairwise acc", "AUC", "accuracy", "ECE", "ECE uncal.", "log loss", "used"):
            cv.add_column(col, justify="left" if col in ("judge", "traits") else "right")
        reports = [rep] if result.all_traits is None else [result.all_traits, rep]
        for r, label in zip(reports, ["all", f"{select} (refit)"], strict=False):
            m = r.cv
            used = sum(abs(s.weight) > 0 for s in r.traits.values())
            pw = "-" if m.pairwise_accuracy is None else f"{m.pairwise_accuracy:.4f}"
            cv.add_row(r.name, label, pw, f"{m.auc:.4f}", f"{m.accuracy:.4f}",
                       f"{m.ece:.4f}", f"{m.ece_uncalibrated:.4f}", f"{m.log_loss:.4f}", f"{used}/{len(r.traits)}")
        console.print(cv)
        tt = Table(title=f"weights per rating point ({bootstrap} group-bootstrap fits)")
        for col in ("trait", "weight", "95% CI", "sel. freq", f"|w|>{rep.threshold}", f"freq>={rep.min_freq}"):
            tt.add_column(col, justify="left" if col == "trait" else "right", no_wrap=True)
        tt.add_column("text", no_wrap=True, overflow="ellipsis", max_width=50)
        for tid, s in sorted(rep.traits.items(), key=lambda kv: -abs(kv[1].weight)):
            ci = "" if s.ci_low is None else f"[{s.ci_low:+.2f}, {s.ci_high:+.2f}]"
            freq = "" if s.selection_freq is None else f"{s.selection_freq:.2f}"
            tt.add_row(tid, f"{s.weight:+.3f}", ci, freq, "x" if tid in rep.selected_threshold else "",
                       "x" if tid in rep.selected_stable else "", trait_set[tid].text[:60])
        console.print(tt)
        console.print(f"aggregator -> {out}" + (f", report -> {report}" if report else "") + f" (run {result.run_id})")


def _register_reward(app: typer.Typer) -> None:
    """``traitlab distill`` and ``traitlab reward score``: the local reward."""

    @app.command("distill")
    def distill(
        out: Annotated[Path, typer.Option(help="folder for the fitted reward")] = Path("local_reward"),
        dialogues: Annotated[list[Path] | None, typer.Option(
            help="labelled dialogues JSONL/CSV (repeatable); labels name the contrast's sides")] = None,
        ratings: Annotated[list[Path] | None, typer.Option(
            help="ratings JSONL as `score --out` writes them (repeatable; several judges are averaged)")] = None,
        traits: Annotated[Path | None, typer.Option(help="trait set JSON the ratings were made on")] = None,
        positive: Annotated[str | None, typer.Option(help="label of the side the reward rewards")] = None,
        negative: Annotated[str | None, typer.Option(help="label of the other side (default: the other label)")] = None,
        contrast: Annotated[Path | None, typer.Option(help="contrast YAML/JSON (flags override its fields)")] = None,
        target_role: Annotated[str | None, typer.Option(help="the judged role (default: each file's own)")] = None,
        aggregator: Annotated[Path | None, typer.Option(
            help="aggregator JSON from `fit`: the scalar is trained to follow it")] = None,
        judge: Annotated[str | None, typer.Option(help="use only this judge's ratings")] = None,
        preset: Annotated[str | None, typer.Option(help="a preset's recipe instead of the files (e.g. hal)")] = None,
        data: Annotated[Path | None, typer.Option(help="the preset's data folder")] = None,
        encoder: Annotated[Literal["static", "minilm"], typer.Option(help="text encoder")] = "static",
        augment: Annotated[bool, typer.Option(
            help="train the cheap edits that lift negatives out (RewardConfig.edits)")] = True,
        gate: Annotated[bool, typer.Option(help="validity gate for degenerate input")] = True,
        audit: Annotated[bool, typer.Option(
            help="red-team each fold's reward on the dialogues it did not train on; kept as audit.json")] = True,
        seed: Annotated[int, typer.Option(help="training and fold seed")] = 0,
    ) -> None:
        """Distil an LLM judge's ratings and the dialogues' labels into a local reward (no LLM call at scoring)."""
        check_outputs(("--out", out, True))
        from traitlab.judges.reward import RewardConfig, distill_files

        cfg = RewardConfig(encoder=RewardConfig().encoder.model_copy(update={"kind": encoder}), augment=augment,
                           gate=gate, audit=audit, seed=seed)
        try:
            if preset is not None:
                if data is None or dialogues or ratings or traits:
                    raise ValueError("--preset takes --data DIR (the preset's folder) and no --dialogues/--ratings/"
                                     "--traits")
                from traitlab.presets import get_preset

                try:
                    recipe = get_preset(preset).extra.get("distill")
                except KeyError as e:
                    raise ValueError(e.args[0]) from None
                if recipe is None:
                    raise ValueError(f"preset {preset!r} has no reward recipe (Preset.extra['distill'])")
                reward = recipe(data, cfg)
            else:
                if not dialogues or not ratings or traits is None:
                    raise ValueError("distill needs --dialogues, --ratings and --traits (or --preset NAME --data DIR)")
                reward = distill_files(dialogues, ratings, traits, contrast=contrast, positive=positive,
                                       negative=negative, target_role=target_role, aggregator=aggregator,
                                       judge=judge, config=cfg)
        except ValueError as e:  # DataError included: one clear line with file:line [field]
            raise fail(e) from None
        reward.save(out)
        held = reward.meta["heldout"]
        fid = held.get("fidelity_spearman")
        typer.echo(f"saved {out}: held-out pairwise accuracy {held['pairwise_accuracy']:.3f}, "
                   f"ECE {held['ece']:.3f}, mean trait Spearman {held['trait_spearman_mean']:.3f}"
                   + (f", fidelity to the judge's aggregate {fid:.3f}" if fid is not None else ""))
        if reward.audit is not None:
            a = reward.audit
            typer.echo(f"held-out audit over {a.folds} folds ({a.n_negative} negatives, each scored by the reward that "
                       f"did not train on it) - {a.verdict(digits=1)}; table in {out / 'audit.json'}")

    reward_app = typer.Typer(help="The distilled local reward.", no_args_is_help=True)

    @reward_app.command("score")
    def score(
        dialogues: Annotated[Path, typer.Option(help="dialogues JSONL/CSV whose judged speaker is scored")],
        out: Annotated[Path, typer.Option(help="JSONL: {id, score, p_positive, validity, traits} per input line")],
        reward: Annotated[Path | None, typer.Option(help="a saved reward folder (default: the shipped one)")] = None,
        target_role: Annotated[str | None, typer.Option(help="who is scored (default: by file shape)")] = None,
    ) -> None:
        """Score the judged speaker of each dialogue (higher = more like the positive side); writes all or none."""
        import json
        import math

        from traitlab.data import load_dialogues
        from traitlab.judges.reward import load_reward

        check_outputs(("--out", out, False))
        try:
            model = load_reward(reward)
            rows = load_dialogues(dialogues, target_role=target_role)
            scores = model.score(rows)
            valid = model.validity(rows)
        except ValueError as e:  # DataError included: one clear line with file:line [field]
            raise fail(e) from None
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps({"id": s.id, "score": s.score, "p_positive": 1 / (1 + math.exp(-s.score)),
                                           "validity": v.validity, "traits": s.traits}) + "\n"
                               for s, v in zip(scores, valid, strict=True)), encoding="utf-8")
        typer.echo(f"scored {len(scores)} dialogues -> {out}")

    register_audit(reward_app)
    app.add_typer(reward_app, name="reward")
