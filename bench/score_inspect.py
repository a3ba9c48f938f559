"""``traitlab score`` on N dialogues vs the same judge calls through Inspect AI, side by side in one run.

Both run as fresh processes (start-up included, as a user would see it) against one loopback OpenAI-compatible
server in its own process (100 ms per call): traitlab with ``--structured-mode json_schema --concurrency C``, a
fresh store and each ``--transport`` asked for (default ``auto``, the openai SDK fast path here, and
``litellm``); Inspect with one sample per dialogue whose input is exactly the messages traitlab sends
(``rating_messages``), ``response_schema`` = traitlab's ratings model, ``max_connections=C``, no scorer, chat
completions (``responses_api=False``: the loopback server speaks chat completions). Each is run ``--repeat``
times (default 3) in a rotating order; it prints the median wall time of each, the server's count of requests
per run, and traitlab's ratio to Inspect.

    python bench/score_inspect.py --inspect-path DIR [--n 128] [--latency 0.1] [--concurrency 32] [--repeat 3]
                                  [--transport auto litellm]

Needs the ``bench`` extra (inspect-ai). inspect-ai 0.3.285 wants openai>=3.4 while traitlab pins openai<3.4;
``--inspect-path DIR`` puts DIR first on the Inspect process's PYTHONPATH only, e.g. after
``pip install --no-deps --target DIR openai==3.4.0``. On a shared machine note the load (``uptime``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from judge_client import ServerProcess

SAMPLE = Path(__file__).resolve().parent.parent / "traitlab" / "sample"

INSPECT = """
import json, sys
from inspect_ai import Task, eval
from inspect_ai.dataset import Sample
from inspect_ai.model import ChatMessageSystem, ChatMessageUser, GenerateConfig, ResponseSchema
from inspect_ai.solver import generate

rows = [json.loads(line) for line in open(sys.argv[1])]
schema = json.loads(open(sys.argv[2]).read())
roles = {"system": ChatMessageSystem, "user": ChatMessageUser}
samples = [Sample(input=[roles[m["role"]](content=m["content"]) for m in r["messages"]], id=r["id"]) for r in rows]
task = Task(dataset=samples, solver=generate(),
            config=GenerateConfig(response_schema=ResponseSchema(name="Ratings", json_schema=schema)))
logs = eval(task, model="openai/bench-judge", model_base_url=sys.argv[3], max_connections=int(sys.argv[4]),
            model_args={"responses_api": False}, display="none", log_dir=sys.argv[5], max_retries=0)
print("inspect status", logs[0].status, "samples", len(logs[0].samples or []))
sys.exit(0 if logs[0].status == "success" else 1)
"""


def dialogues(n: int, path: Path) -> Path:
    """``n`` distinct dialogues (the shipped samples with a numbered last turn, so no two requests match)."""
    base = [json.loads(line) for line in (SAMPLE / "dialogues.jsonl").read_text().splitlines() if line.strip()]
    out = []
    for i in range(n):
        d = json.loads(json.dumps(base[i % len(base)]))
        d["id"], d["game_id"] = f"{d['id']}-{i}", f"{d.get('game_id', 'g')}-{i}"
        d["messages"][-1]["content"] += f" ({i})"
        out.append(json.dumps(d))
    path.write_text("\n".join(out) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--inspect-path", help="prepended to PYTHONPATH for the Inspect process only")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--transport", nargs="+", default=["auto", "litellm"], choices=["auto", "litellm", "openai"])
    args = ap.parse_args()
    from traitlab.data import load_dialogues, load_trait_set
    from traitlab.judges.rate import rating_messages, ratings_model

    server = ServerProcess(args.latency)
    env = {**os.environ, "BENCH_KEY": "sk-bench", "OPENAI_API_KEY": "sk-bench"}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            dfile = dialogues(args.n, tmp_path / "d.jsonl")
            traits = SAMPLE / "traits_traitlab12.json"
            trait_set = load_trait_set(traits)
            inputs = tmp_path / "inputs.jsonl"
            inputs.write_text("".join(json.dumps({"id": d.id, "messages": rating_messages(d, trait_set)}) + "\n"
                                      for d in load_dialogues(dfile)))
            (tmp_path / "schema.json").write_text(json.dumps(ratings_model(trait_set).model_json_schema()))
            traitlab = Path(sys.executable).with_name("traitlab")
            inspect_env = {**env, "PYTHONPATH": os.pathsep.join(
                p for p in (args.inspect_path, env.get("PYTHONPATH")) if p)}
            commands = {f"traitlab ({t})": (lambda r, t=t: [
                str(traitlab), "score", "--dialogues", str(dfile), "--traits", str(traits), "--judge",
                "openai/bench-judge", "--api-base", server.base_url, "--api-key-env", "BENCH_KEY",
                "--structured-mode", "json_schema", "--concurrency", str(args.concurrency), "--transport", t,
                "--store", str(tmp_path / f"s-{t}-{r}.duckdb")], env) for t in args.transport}
            commands["inspect"] = (lambda r: [sys.executable, "-c", INSPECT, str(inputs), str(tmp_path / "schema.json"),
                                              server.base_url, str(args.concurrency), str(tmp_path / f"logs-{r}")],
                                   inspect_env)
            names = list(commands)
            times: dict[str, list[float]] = {name: [] for name in names}
            calls: dict[str, list[int]] = {name: [] for name in names}
            for r in range(args.repeat):
                for name in names[r % len(names):] + names[:r % len(names)]:  # rotate who goes first
                    cmd, cmd_env = commands[name]
                    server.reset()
                    start = time.perf_counter()
                    proc = subprocess.run(cmd(r), capture_output=True, text=True, env=cmd_env)
                    times[name].append(time.perf_counter() - start)
                    calls[name].append(server.total)
                    if proc.returncode != 0:
                        raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                                         f"{proc.stderr[-3000:]}")
                    if r == 0:
                        print(f"{name}: {proc.stdout.strip().splitlines()[0]}")
    finally:
        server.stop()
    print(f"{args.n} dialogues, {args.latency * 1000:.0f} ms per call, concurrency {args.concurrency} "
          f"(ideal {args.n / args.concurrency * args.latency:.1f} s of calls), median of {args.repeat}")
    inspect_s = statistics.median(times["inspect"])
    for name in names:
        runs = " ".join(f"{t:.2f}" for t in times[name])
        print(f"  {name:18s} {statistics.median(times[name]):6.2f} s wall (process; runs {runs}), "
              f"{'/'.join(map(str, calls[name]))} requests at the server"
              + ("" if name == "inspect" else f", {statistics.median(times[name]) / inspect_s:.2f}x inspect"))


if __name__ == "__main__":
    main()
