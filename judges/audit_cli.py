"""``traitlab reward audit``: red-team a reward from the command line (exit 1 when it can be gamed, for CI)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from traitlab.console import fail
from traitlab.options import ContrastOpt, NegativeOpt, PositiveOpt, PresetOpt, TargetRoleOpt, resolve, target_role_for


def register_audit(reward_app: typer.Typer) -> None:
    """Add ``audit`` to the ``traitlab reward`` group."""

    @reward_app.command("audit")
    def audit_command(
        dialogues: Annotated[Path, typer.Option(help="labelled dialogues (JSONL/CSV) of both sides")],
        reward: Annotated[Path | None, typer.Option(help="a saved LocalReward folder (default: shipped)")] = None,
        reward_name: Annotated[str | None, typer.Option(help="a registered reward (traitlab.registry.rewards)")] = None,
        plugin: Annotated[list[str] | None, typer.Option(help="module or .py registering rewards/operators")] = None,
        positive: PositiveOpt = None,
        negative: NegativeOpt = None,
        contrast: ContrastOpt = None,
        preset: PresetOpt = None,
        target_role: TargetRoleOpt = None,
        operators: Annotated[str | None, typer.Option(help="comma-separated operators (default: all)")] = None,
        threshold: Annotated[float, typer.Option(
            min=0.0, max=1.0, help="most negatives an edit may push above the median positive")] = 0.05,
        max_depth: Annotated[int, typer.Option(min=1, help="operators composed at most by the search")] = 3,
        beam: Annotated[int, typer.Option(min=1, help="compositions kept per search depth")] = 3,
        limit: Annotated[int | None, typer.Option(min=1, help="use the first N dialogues of each side")] = None,
        seed: Annotated[int, typer.Option(help="seed of the randomised operators")] = 0,
        out: Annotated[Path | None, typer.Option(help="write the AuditReport JSON here")] = None,
        store: Annotated[Path | None, typer.Option(help="run store (default: settings.store_path())")] = None,
    ) -> None:
        """Apply cheap edits (emoji, empty turns, other languages...) to the negative side's judged turns and
        report how far they lift its score; exits 1 when an edit pushes more than --threshold of the negatives
        above the median positive."""
        from rich.console import Console
        from rich.table import Table

        from traitlab.data import load_dialogues
        from traitlab.judges.audit import audit
        from traitlab.registry import as_reward, load_plugins, rewards
        from traitlab.settings import store_path
        from traitlab.store import Store

        try:
            if reward is not None and reward_name is not None:
                raise ValueError("give --reward DIR or --reward-name NAME, not both")
            load_plugins(plugin or [])
            if reward_name is not None:
                scorer, label = as_reward(rewards.create(reward_name), f"reward {reward_name!r}"), reward_name
            else:
                from traitlab.judges.reward import load_reward

                scorer, label = load_reward(reward), str(reward or "default")
            role = target_role_for(contrast, preset, target_role)
            loaded = load_dialogues(dialogues, target_role=role)
            labels = resolve(loaded, contrast, preset, positive, negative, target_role)
            pos, neg = labels.labels
            if limit is not None:
                loaded = [d for side in (pos, neg) for d in [d for d in loaded if d.label == side][:limit]]
            names = [o.strip() for o in operators.split(",") if o.strip()] if operators else None
            report = audit(scorer, loaded, labels, operators=names, max_depth=max_depth, threshold=threshold,
                           seed=seed, beam=beam, name=label)
        except (ValueError, KeyError, TypeError, FileNotFoundError) as e:  # DataError is a ValueError
            raise fail(e.args[0] if isinstance(e, KeyError) else e) from None

        console = Console()
        r = report.real
        table = Table(title=f"reward audit of {label}: {report.n_negative} {neg!r} dialogues edited, median "
                            f"{pos!r} score {r['median_positive']:+.2f}, real score SD {r['sd']:.2f}")
        # A CI log is 80 columns wide: the edit names and detectors wrap so the figures and the verdict never drop.
        table.add_column("edit", overflow="fold", min_width=18)
        for col in ("share > median", "shift SD", "mean"):
            table.add_column(col, justify="right", no_wrap=True)
        table.add_column("", no_wrap=True, min_width=4)
        table.add_column("caught by", overflow="fold")
        table.add_row("(unedited)", f"{r['share_above']:.2f}", "0.00", f"{r['mean_negative']:+.2f}", "", "")
        for row in [*report.edits, *report.composites]:
            table.add_row(row.edit, f"{row.share_above:.2f}", f"{row.shift_sd:+.2f}", f"{row.mean_score:+.2f}",
                          "ok" if row.passed else "[red]FAIL[/red]", ", ".join(row.detected_by))
        console.print(table)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
        w = report.worst
        summary = {"passed": report.passed, "threshold": threshold, "worst_edit": w.edit,
                   "worst_share_above": w.share_above, "n_negative": report.n_negative, "n_scored": report.n_scored}
        config = {"reward": label, "dialogues": str(dialogues), "contrast": report.contrast, "target_role": role,
                  "operators": names, "threshold": threshold, "max_depth": max_depth, "beam": beam, "limit": limit,
                  "seed": seed}
        with Store(store_path(store)) as st:
            run_id = st.start_run("audit", name=label, config=config)
            st.put_artifact(run_id, "reward_audit", report.model_dump(mode="json"))
            st.finish_run(run_id, summary=summary)
        console.print(f"{report.verdict()}; run {run_id}" + (f", report -> {out}" if out else ""))
        if not report.passed:
            raise typer.Exit(1)
