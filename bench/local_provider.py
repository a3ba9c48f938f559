"""Tokens/s of the offline ``local/smollm2-135m`` provider: free text vs JSON-schema-constrained decoding
(lm-format-enforcer), and one vs two torch threads, measured interleaved in one run (warm model).

    python bench/local_provider.py [--reps 3] [--max-tokens 48]

Wall time includes chat templating, the enforcer's per-token work and logprob extraction where asked;
the model load and the enforcer's one-off vocabulary scan are done before timing.
"""

from __future__ import annotations

import argparse
import statistics
import time

from rich.console import Console
from rich.table import Table

import traitlab.judges.local as local

TRAITS = ["warmth", "humour", "typos", "hedging", "brevity"]
LIKERT = {
    "type": "json_schema",
    "json_schema": {
        "name": "Rating",
        "schema": {
            "type": "object",
            "properties": {
                "scores": {
                    "type": "object",
                    "properties": {t: {"type": "integer", "enum": [1, 2, 3, 4, 5]} for t in TRAITS},
                    "required": TRAITS,
                },
                "reason": {"type": "string", "maxLength": 120},
            },
            "required": ["scores", "reason"],
        },
    },
}
PROMPT = [
    {
        "role": "user",
        "content": f"Rate the witness 1-5 on {', '.join(TRAITS)} and explain why.\n"
        "Interrogator: hi, are you a bot?\nWitness: lol no. r u? i was just making tea tbh",
    }
]


def _rate(max_tokens: int, **kw) -> tuple[float, int]:
    """(tokens/s, tokens) of one greedy generation."""
    t = time.perf_counter()
    gen = local.generate_chat(PROMPT, temperature=0, max_tokens=max_tokens, **kw)
    return gen.completion_tokens / (time.perf_counter() - t), gen.completion_tokens


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=48)
    args = ap.parse_args()
    local.load_local_model()
    _rate(4, response_format=LIKERT)  # warm-up: the enforcer's vocabulary scan happens once per process

    cases = {
        "free text, 1 thread": (1, {}),
        "json_schema (Likert x5 + reason), 1 thread": (1, {"response_format": LIKERT}),
        "json_schema + logprobs top 5, 1 thread": (1, {"response_format": LIKERT, "logprobs": True, "top_logprobs": 5}),
        "free text, 2 threads": (2, {}),
    }
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in cases}
    for _ in range(args.reps):
        for name, (threads, kw) in cases.items():
            local.THREADS = threads
            runs[name].append(_rate(args.max_tokens, **kw))

    base = statistics.median(r for r, _ in runs["free text, 1 thread"])
    table = Table(title=f"local/smollm2-135m on CPU, greedy, median of {args.reps} (max_tokens={args.max_tokens})")
    for col in ("case", "tokens/s", "tokens", "ratio to free text, 1 thread"):
        table.add_column(col)
    for name, rs in runs.items():
        rate = statistics.median(r for r, _ in rs)
        table.add_row(name, f"{rate:.1f}", f"{statistics.median(n for _, n in rs):.0f}", f"{rate / base:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
