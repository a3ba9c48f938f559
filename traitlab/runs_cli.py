"""``traitlab runs`` (list), ``traitlab runs show RUN`` and ``traitlab runs export RUN``: thin wrappers of
:mod:`traitlab.runs` that print rich tables (or JSON with ``--json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from traitlab.console import fail

StoreOpt = Annotated[Path | None, typer.Option(
    "--store", help="run store (default $TRAITLAB_STORE or ./traitlab.duckdb)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]

app = typer.Typer(help="List the runs in a store, show one, export one.", no_args_is_help=False)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="runs")


def _open(store: Path | None):
    from traitlab.settings import store_path
    from traitlab.store import Store

    path = store_path(store)
    if not Path(path).exists():
        raise fail(f"no store at {path} (give --store PATH or set $TRAITLAB_STORE)")
    return Store(path)


def _when(t: object) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S") if t is not None else "–"  # type: ignore[attr-defined]


@app.callback(invoke_without_command=True)
def list_cmd(ctx: typer.Context, store: StoreOpt = None,
             kind: Annotated[str | None, typer.Option(help="only runs of this kind (eval, score, align...)")] = None,
             as_json: JsonOpt = False) -> None:
    """List runs: kind, name, status, counts, cost, created."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console
    from rich.table import Table

    from traitlab.runs import list_runs

    with _open(store) as st:
        rows = list_runs(st, kind)
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in rows], indent=1))
        return
    table = Table(title=f"{len(rows)} run(s)")
    numbers = ("dialogues", "ratings", "calls (failed)", "cost $")
    for col in ("run", "kind", "name", "status", *numbers, "created"):
        table.add_column(col, justify="right" if col in numbers else "left", overflow="fold")
    for r in rows:
        table.add_row(r.run_id, r.kind, r.name, r.status, str(r.dialogues), str(r.ratings),
                      f"{r.calls} ({r.failed_calls})", f"{r.cost_usd:.4f}", _when(r.created))
    Console(soft_wrap=False).print(table)


@app.command("show")
def show_cmd(run: Annotated[str, typer.Argument(help="run id")], store: StoreOpt = None,
             as_json: JsonOpt = False) -> None:
    """One run: config (secrets redacted), summary, artifacts, failures by kind."""
    from rich.console import Console
    from rich.table import Table

    from traitlab.runs import show_run

    try:
        with _open(store) as st:
            d = show_run(st, run)
    except KeyError as e:
        raise fail(e.args[0]) from None
    if as_json:
        typer.echo(d.model_dump_json(indent=1))
        return
    con = Console()
    r = d.run
    con.print(f"[bold]{r.run_id}[/bold]  {r.kind} · {r.name} · {r.status} · created {_when(r.created)}, finished "
              f"{_when(r.finished)}", highlight=False)
    con.print(f"{r.dialogues} dialogues, {r.ratings} rating rows, {r.calls} calls ({r.failed_calls} failed), "
              f"${r.cost_usd:.4f}" + (f"; ratings by judge: {d.judges}" if d.judges else ""), highlight=False)
    con.print("[bold]config[/bold] (secrets redacted)")
    con.print_json(json.dumps(d.config, default=str))
    con.print("[bold]summary[/bold]")
    con.print_json(json.dumps(d.summary, default=str))
    arts = Table(title="artifacts")
    for col in ("name", "kind", "bytes", "created"):
        arts.add_column(col)
    for a in d.artifacts:
        arts.add_row(a.name, a.kind, str(a.size_bytes), _when(a.created))
    con.print(arts if d.artifacts else "no artifacts")
    if d.failures:
        fails = Table(title="failed calls by kind")
        for col in ("kind", "count", "first message"):
            fails.add_column(col, overflow="fold")
        for f in d.failures:
            fails.add_row(f.kind, str(f.count), f.first)
        con.print(fails)
    else:
        con.print("no failed calls")


@app.command("export")
def export_cmd(run: Annotated[str, typer.Argument(help="run id")],
               fmt: Annotated[str, typer.Option("--format", help="jsonl or parquet")] = "jsonl",
               out: Annotated[Path | None, typer.Option(help="folder (default ./<run id>-export)")] = None,
               store: StoreOpt = None) -> None:
    """Write the run's rows of every table (runs, calls, ratings, dialogues, artifacts) to files."""
    from traitlab.runs import export_run

    if fmt not in ("jsonl", "parquet"):
        raise fail(f"--format must be jsonl or parquet, not {fmt!r}")
    chosen: Literal["jsonl", "parquet"] = "parquet" if fmt == "parquet" else "jsonl"
    try:
        with _open(store) as st:
            res = export_run(st, run, out or Path(f"{run}-export"), chosen)
    except (KeyError, ValueError) as e:
        raise fail(e.args[0]) from None
    for table, path in res.files.items():
        typer.echo(f"{path}  ({res.rows[table]} rows)")
