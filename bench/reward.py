"""Benchmark of the distilled local reward: every variant side by side in one run.

    python bench/reward.py [--data ../shared/data] [--only variants|fidelity|cost] [--encoders static minilm]
                           [--cache /tmp/traitlab-bench] [--set FIELD=JSON ...]  (RewardConfig overrides)
                           [--seeds 0 1 2]  (variants once per seed, then mean and range over them)
                           [--shipped-only]  (variants: only the shipped column, a few times faster)

Variants: encoder (static table distilled from MiniLM vs MiniLM itself) x edits trained out (augment) x
validity gate, all on the HAL recipe (``traitlab.presets.hal.reward``). For each, with 5-fold CV grouped by
game / persona (every figure from heads that never saw the row's group):

- discrimination: pairwise accuracy on the staged Turing games, ECE of the cross-fitted P(human);
- fidelity: Spearman of the scalar with GPT-5's aggregate (an L1 logistic on GPT-5's real ratings, fitted
  on the train folds) on held-out Turing dialogues;
- doctor transfer: on the doctor generations of the held-out personas (never trained on), Spearman of the
  scalar (mean of the fold models) with GPT-5's aggregate of its HL16Q ratings, and the partial Spearman
  with the patient's mean turn length ranked out, beside the length heuristic;
- robustness: for each edit of every witness turn, the share of held-out AI transcripts scoring above the
  median held-out human transcript (unedited: the first row). These edits are the bench's own (other
  strings than the training edits of ``traitlab.judges.reward_edits``).

Fidelity ceiling: how well GPT-5's aggregate can be predicted at all on held-out games: by the true label,
by the other judges' aggregates of their own ratings, by ridge regressions from the reward's features; and what
a reward that never errs on the side reaches when each side is ordered by one of those (the true label plus
it), beside the agreement within each side that a given fidelity needs.

Cost: ``LocalReward.score`` end to end (features, heads, gate) on 1,000 and 4,000 dialogues, marginal
dialogues/s between them, on every staged dialogue once (4,000 repeats some, and a batch measures a repeated
word or context once), and the start-up of a fresh process that loads the reward and scores one dialogue,
static vs MiniLM in the same run. Timings are on this machine; the ratio is what counts.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

import traitlab  # noqa: F401  (offline knobs first)
from traitlab.embed import EncoderConfig
from traitlab.judges import reward_features
from traitlab.judges.aggregate import fit_linear
from traitlab.judges.reward import (
    RewardConfig,
    cross_val_predict,
    fold_reward,
    heldout_metrics,
    training_set,
    with_edits,
)
from traitlab.judges.reward_edits import with_target_turns
from traitlab.judges.reward_features import features
from traitlab.presets.hal.reward import CONTRAST, TURING_JUDGE, doctor_transfer, inputs
from traitlab.stats import partial_spearman
from traitlab.types import Dialogue

REPO = Path(__file__).resolve().parent.parent
ENCODERS = {"static": EncoderConfig(kind="static"), "minilm": EncoderConfig(kind="minilm")}

SPANISH = ("pues mira, yo creo que sí, pero no estoy seguro", "vivo cerca del centro, con mi hermana",
           "me gusta mucho cocinar los fines de semana", "hoy hace bastante calor aquí, la verdad")
PASSAGE = ("The committee reviewed the quarterly figures and agreed that the budget for the coming year should "
           "remain broadly unchanged, with small increases for maintenance and training. ")


def _each(f):
    return lambda turns, rng: [f(t, rng) for t in turns]


BENCH_EDITS = {
    "unedited": lambda turns, rng: turns,
    '"😂😂😂" appended': _each(lambda t, rng: f"{t} 😂😂😂"),
    "10 emoji appended": _each(lambda t, rng: t + " 😂🤣😍🔥💯🙏😎😭✨🎉"),
    '"★★★" appended': _each(lambda t, rng: f"{t} ★★★"),
    "empty turns": _each(lambda t, rng: ""),
    "a Spanish reply instead": _each(lambda t, rng: rng.choice(SPANISH)),
    "the first turn repeated": lambda turns, rng: [turns[0]] * len(turns),
    "2,000 characters appended": _each(lambda t, rng: t + " " + (PASSAGE * 12)[:2000]),
    "keyboard mash": _each(lambda t, rng: "".join(rng.choice("asdfghjkl ") for _ in range(24))),
    "lowercased, no punctuation": _each(lambda t, rng: "".join(c for c in t.lower() if c.isalnum() or c == " ")),
    "ellipses only": _each(lambda t, rng: "..."),
}


def _features(name: str, rows: list[Dialogue], enc: EncoderConfig, cache: Path) -> np.ndarray:
    """Features of ``rows``, cached per encoder, feature code and row set (re-running a bench skips the
    encoder; an edit of the style features' code, or of the edits, makes a new entry)."""
    code = Path(reward_features.__file__).read_text()
    parts = [code, enc.model_dump_json(), *(d.id + "".join(d.target_turns) for d in rows)]
    key = hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]
    path = cache / f"{name}-{enc.kind}-{len(rows)}-{key}.npy"
    if path.exists():
        return np.load(path)
    X = features(rows, enc)
    np.save(path, X)
    return X


def variants(data_dir: Path, cache: Path, encoders: list[str], base: RewardConfig, shipped_only: bool = False
             ) -> dict[str, dict[str, float]]:
    """Prints the variants' tables; returns each variant's figures (for the summary over seeds).
    ``shipped_only``: only edits trained out with the gate, the column a ``--set`` change is judged by (a screen
    of a change over many seeds)."""
    x = inputs(data_dir)
    data = training_set(x.dialogues, x.ratings, x.trait_set, CONTRAST)
    lab = ~np.isnan(data.labels)
    turing = np.array([d.target_role == "witness" for d in data.dialogues]) & lab
    held_ai = [i for i in np.flatnonzero(turing) if data.labels[i] == 0]
    rng = random.Random(0)
    edited_rows = {name: [with_target_turns(data.dialogues[i], op(list(data.dialogues[i].target_turns), rng), name)
                          for i in held_ai] for name, op in BENCH_EDITS.items() if name != "unedited"}
    transfer = doctor_transfer(data_dir)
    doc, doc_agg, length, rated = (transfer.dialogues, transfer.judge_aggregate, transfer.mean_turn_chars,
                                   transfer.traits)
    print(f"== variants: {len(data.dialogues)} training rows ({int(lab.sum())} labelled Turing transcripts, "
          f"{int((~lab).sum())} unlabelled doctor dialogues), 5-fold CV grouped by game / persona; doctor "
          f"transfer on {len(doc)} generations of held-out personas ({len(rated)} GPT-5-rated traits) ==")
    print(f"  length heuristic (-mean patient turn chars) vs GPT-5's aggregate on them: Spearman "
          f"{spearmanr(-length, doc_agg)[0]:.3f}")
    head = (f"  {'variant':<28}{'pairwise':>9}{'ECE':>7}{'fidelity':>9}{'doc rho':>8}{'partial':>8}"
            f"{'worst edit':>11}  worst edit name")
    rows_out, robustness, figures = [], {}, {}
    for enc_name in encoders:  # the encoder kinds side by side, each with --set's other encoder knobs
        enc = base.encoder.model_copy(update={"kind": ENCODERS[enc_name].kind})
        t = time.time()
        X = _features("train", data.dialogues, enc, cache)
        XD = _features("doctor-heldout", doc, enc, cache)
        XB = {name: _features(f"bench-{k}", rows, enc, cache) for k, (name, rows) in enumerate(edited_rows.items())}
        ed, src, kind = with_edits(data, base)
        XE = _features("edits", ed, enc, cache)
        print(f"  [{enc_name}] features of {len(X) + len(XD) + sum(map(len, XB.values())) + len(XE)} dialogues "
              f"({time.time() - t:.0f}s, cached in {cache})")
        for augment in (True,) if shipped_only else (False, True):
            cfg = base.model_copy(update={"encoder": enc, "augment": augment})
            t = time.time()
            oof = cross_val_predict(X, data, cfg, edits=(XE, src, kind) if augment else None)
            m = heldout_metrics(oof, data, cfg)
            fold = oof["fold"]
            for gate in (True,) if shipped_only else (False, True):
                name = f"{enc_name}, {'edits trained out' if augment else 'no edits'}, {'gate' if gate else 'no gate'}"
                shares, doc_scores = {}, np.zeros(len(doc))
                oof_score = np.zeros(len(data.dialogues))
                for k in range(len(oof["params"])):
                    r = fold_reward(X, data, cfg.model_copy(update={"gate": gate}), oof, k)
                    test = np.flatnonzero(fold == k)
                    oof_score[test] = r.score_features(X[test], [data.dialogues[i] for i in test])[1]
                    doc_scores += r.score_features(XD, doc)[1] / len(oof["params"])
                    for ename, rows in edited_rows.items():
                        keep = [j for j, i in enumerate(held_ai) if fold[i] == k]
                        s = r.score_features(XB[ename][keep], [rows[j] for j in keep])[1]
                        shares.setdefault(ename, np.zeros(len(held_ai)))[keep] = s
                human = np.median(oof_score[turing & (data.labels == 1)])
                table = {"unedited": float(np.mean(oof_score[held_ai] > human))}
                table |= {e: float(np.mean(v > human)) for e, v in shares.items()}
                robustness[name] = table
                worst = max((e for e in table if e != "unedited"), key=table.get)
                figures[name] = {"pairwise": m["pairwise_accuracy"], "ECE": m["ece"],
                                 "fidelity": spearmanr(oof_score[turing], oof["agg"][turing])[0],
                                 "doc rho": spearmanr(doc_scores, doc_agg)[0],
                                 "partial": partial_spearman(doc_scores, doc_agg, length), "worst edit": table[worst]}
                cells = zip(list(figures[name].values())[:-1], (9, 7, 9, 8, 8), strict=True)
                rows_out.append(f"  {name:<28}" + "".join(f"{v:>{w}.3f}" for v, w in cells)
                                + f"{table[worst]:>11.2f}  {worst}")
            print(f"  [{enc_name}, augment={augment}] trained 5 folds in {time.time() - t:.0f}s; mean per-trait "
                  f"Spearman vs the judge {m['trait_spearman_mean']:.3f}")
    print(head)
    print("\n".join(rows_out))
    print("== robustness: share of held-out AI transcripts above the median held-out human (goal <= 0.05) ==")
    names = list(robustness)
    print("  " + f"{'edit of every witness turn':<30}" + "".join(f"{i + 1:>6}" for i in range(len(names))))
    for e in BENCH_EDITS:
        print("  " + f"{e:<30}" + "".join(f"{robustness[n][e]:>6.2f}" for n in names))
    print("  columns: " + "; ".join(f"{i + 1} = {n}" for i, n in enumerate(names)))
    return figures


def seed_summary(runs: dict[int, dict[str, dict[str, float]]]) -> None:
    """Each variant's figures over the seeds (a seed draws the folds, the edits and the heads' init)."""
    print(f"== over seeds {sorted(runs)}: mean (min-max) ==")
    first = next(iter(runs.values()))
    for name in first:
        cells = []
        for metric in first[name]:
            v = [runs[s][name][metric] for s in runs]
            cells.append(f"{metric} {np.mean(v):.3f} ({min(v):.3f}-{max(v):.3f})")
        print(f"  {name}: " + ", ".join(cells))


def fidelity(data_dir: Path, cache: Path, encoders: list[str]) -> None:
    """What limits fidelity to GPT-5's aggregate: how far any model of the text, or another judge, gets."""
    from sklearn.linear_model import LogisticRegression, Ridge

    from traitlab.data import load_ratings
    from traitlab.judges.aggregate import grouped_folds, pairwise_accuracy_groups
    from traitlab.presets.hal.reward import files

    x = inputs(data_dir, doctor_generations_too=False)
    data = training_set(x.dialogues, x.ratings, x.trait_set, CONTRAST)
    rows = np.flatnonzero(~np.isnan(data.labels) & ~np.isnan(data.targets).any(1))
    ds, Y, y = [data.dialogues[i] for i in rows], data.targets[rows], data.labels[rows].astype(int)
    groups, ids = [data.groups[i] for i in rows], data.trait_set.ids
    fold = grouped_folds(groups, 5, 0)

    def cross_agg(R: np.ndarray) -> np.ndarray:  # a judge's aggregate of its ratings, fitted on the other folds
        out = np.zeros(len(rows))
        for k in range(5):
            out[fold == k] = fit_linear(R[fold != k], y[fold != k], ids, C=0.1).logit_matrix(R[fold == k], ids)
        return out

    agg = cross_agg(Y)
    pw = lambda s: pairwise_accuracy_groups(s, y, groups)[0]  # noqa: E731
    print(f"== fidelity ceiling: {len(rows)} Turing transcripts, GPT-5's aggregate (pairwise {pw(agg):.3f}) ==")
    print(f"  the true label itself vs GPT-5's aggregate: Spearman {spearmanr(y, agg)[0]:.3f}")
    by_judge: dict[str, dict[str, dict[str, float]]] = {}
    for r in load_ratings(files(data_dir)["turing_ratings"]):
        by_judge.setdefault(r.judge, {})[r.dialogue_id] = r.ratings
    others = {}
    for judge, rated in by_judge.items():
        if judge != TURING_JUDGE and all(d.id in rated and set(ids) <= set(rated[d.id]) for d in ds):
            s = others[f"{judge}'s aggregate"] = cross_agg(np.array([[rated[d.id][t] for t in ids] for d in ds]))
            print(f"  {judge}'s aggregate of its own ratings vs GPT-5's: Spearman {spearmanr(s, agg)[0]:.3f}")
    if others:
        print(f"  mean of those {len(others)} judges' aggregates vs GPT-5's: Spearman "
              f"{spearmanr(np.mean(list(others.values()), 0), agg)[0]:.3f}")
    within = {}  # a source of order within each side -> its out-of-fold scores
    for enc_name in encoders:
        X = _features("fidelity", ds, ENCODERS[enc_name], cache)
        Xs = (X - X.mean(0)) / (X.std(0) + 1e-6)
        best = -1.0
        for alpha in (10, 100, 1000):
            direct, logit = np.zeros(len(rows)), np.zeros(len(rows))
            for k in range(5):
                tr, te = fold != k, fold == k
                target = fit_linear(Y[tr], y[tr], ids, C=0.1).logit_matrix(Y[tr], ids)
                direct[te] = Ridge(alpha=alpha).fit(Xs[tr], target).predict(Xs[te])
                logit[te] = LogisticRegression(C=1 / alpha, max_iter=2000).fit(Xs[tr], y[tr]).decision_function(Xs[te])
            rho = spearmanr(direct, agg)[0]
            print(f"  [{enc_name}] ridge (alpha {alpha:>4}) from the features to GPT-5's aggregate: Spearman "
                  f"{rho:.3f} (pairwise {pw(direct):.3f}); logistic on the labels: "
                  f"{spearmanr(logit, agg)[0]:.3f} (pairwise {pw(logit):.3f})")
            if rho > best:
                best, within[f"[{enc_name}] best ridge"] = rho, direct
    print("  (a ridge to the aggregate equals predicting the 32 traits by ridge and aggregating them: the aggregate "
          "is linear in the traits)")
    within |= others
    if others:
        within[f"mean of the {len(others)} other judges"] = np.mean(list(others.values()), 0)
    oracle_bound(y, agg, within, pw)


def _with_label(y: np.ndarray, s: np.ndarray, agg: np.ndarray) -> tuple[float, float]:
    """Fidelity and pairwise of the *true* label plus ``s`` (standardised), at the label weight that serves
    fidelity best: what a reward that never errs on the side and orders each side as ``s`` does would reach."""
    z = (s - s.mean()) / s.std()
    return max((spearmanr(c * y + z, agg)[0], c) for c in (0.5, 1, 2, 4, 8))


def oracle_bound(y: np.ndarray, agg: np.ndarray, within: dict[str, np.ndarray], pw) -> None:
    """How far fidelity can go for a reward that must also discriminate: the label alone reaches only its own
    Spearman with the aggregate, so the rest has to come from ordering each side as GPT-5 does. Prints, for
    each source of that order, its Spearman with the aggregate within each side and the fidelity of the true
    label plus it; then the within-side agreement that a perfect discriminator needs for a given fidelity."""
    print("== fidelity a perfect discriminator could reach (true label + order within each side) ==")
    print(f"  {'order within each side from':<36}{'within human':>13}{'within AI':>10}{'label + it':>11}"
          f"{'its pairwise':>13}")
    for name, s in within.items():
        rho = [spearmanr(s[y == c], agg[y == c])[0] for c in (1, 0)]
        print(f"  {name:<36}{rho[0]:>13.3f}{rho[1]:>10.3f}{_with_label(y, s, agg)[0]:>11.3f}{pw(s):>13.3f}")
    rng = np.random.default_rng(0)
    needed = []
    for r in (0.4, 0.5, 0.6, 0.7, 0.8):  # a synthetic order agreeing with the aggregate at r within each side
        s = np.zeros(len(y))
        for c in (0, 1):
            a = agg[y == c]
            s[y == c] = r * (a - a.mean()) / a.std() + np.sqrt(1 - r * r) * rng.standard_normal(len(a))
        needed.append(f"{r:.1f} -> {_with_label(y, s, agg)[0]:.3f}")
    print(f"  within-side agreement r (synthetic) -> fidelity with the true label: {', '.join(needed)}")


def _quick_reward(kind: str, data_dir: Path, out: Path) -> Path:
    """A reward on the given encoder for the cost figures (heads cost the same whatever their quality)."""
    from traitlab.judges.reward import distill

    x = inputs(data_dir, doctor_generations_too=False)
    keep = {d.id for d in x.dialogues[:120]}
    cfg = RewardConfig(encoder=ENCODERS[kind], steps=30, folds=2, augment=False)
    distill([d for d in x.dialogues if d.id in keep], [r for r in x.ratings if r.dialogue_id in keep], x.trait_set,
            CONTRAST, config=cfg).save(out)
    return out


STARTUP = """
import time, sys
t0 = time.perf_counter()
from traitlab.judges.reward import load_reward
from traitlab.types import Dialogue, Message
r = load_reward(sys.argv[1])
d = Dialogue(id="one", target_role="witness", messages=[Message(role="interrogator", content="hi, how are you?"),
             Message(role="witness", content="good thanks, just got home lol")])
r.score([d])
print(time.perf_counter() - t0)
"""


def cost(data_dir: Path, repeats: int) -> None:
    from traitlab.data import load_dialogues
    from traitlab.judges.reward import load_reward

    torch.set_num_threads(2)
    turing = load_dialogues(data_dir / "hal_turing" / "dialogues.jsonl")
    doctor = load_dialogues(data_dir / "hal_doctor" / "generations_scored.jsonl", skipped=[])
    pool = [*turing, *doctor]
    random.Random(0).shuffle(pool)  # one mix for both sizes, so the marginal rate is not a change of lengths
    sets = {n: [d.model_copy(update={"id": f"{d.id}#{i}"}) for i, d in enumerate((pool * 3)[:n])]
            for n in (1000, 4000)}
    sets["distinct"] = pool  # 4,000 repeats some dialogues (and so their contexts); this set repeats none
    with tempfile.TemporaryDirectory() as tmp:
        rewards = {"static (shipped)": None, "MiniLM (bf16 where native)": _quick_reward("minilm", data_dir,
                                                                                          Path(tmp) / "m")}
        loaded = {k: load_reward(v) for k, v in rewards.items()}
        for r in loaded.values():
            r.score(sets[1000][:8])  # load the encoder outside the timing
        print(f"== cost: LocalReward.score end to end (Turing + doctor dialogues), {torch.get_num_threads()} "
              f"threads, best of {repeats} interleaved rounds ==")
        best = {(k, n): float("inf") for k in loaded for n in sets}
        for _ in range(repeats):
            for k, r in loaded.items():
                for n, rows in sets.items():
                    t = time.perf_counter()
                    r.score(rows)
                    best[k, n] = min(best[k, n], time.perf_counter() - t)
        env = dict(os.environ)
        start = {}
        for k, path in rewards.items():
            arg = str(path) if path else str(REPO / "judges" / "default_reward")
            runs = []
            for _ in range(repeats):
                t = time.perf_counter()
                inner = subprocess.run([sys.executable, "-c", STARTUP, arg], capture_output=True, text=True,
                                       env=env, check=True).stdout
                runs.append((time.perf_counter() - t, float(inner.strip().splitlines()[-1])))
            start[k] = min(runs)
        base = "MiniLM (bf16 where native)"
        for k in loaded:
            r1, r4, rd = 1000 / best[k, 1000], 4000 / best[k, 4000], len(pool) / best[k, "distinct"]
            marginal = 3000 / max(best[k, 4000] - best[k, 1000], 1e-9)
            print(f"  {k:<28} 1,000: {r1:7.0f}/s  4,000: {r4:7.0f}/s  all {len(pool):,} once: {rd:7.0f}/s  "
                  f"marginal {marginal:7.0f}/s  "
                  f"(x{marginal / (3000 / (best[base, 4000] - best[base, 1000])):.1f})  start-up for one: "
                  f"{start[k][1]:.2f}s in process, {start[k][0]:.2f}s with the interpreter")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "traitlab-bench-reward")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                    help="a RewardConfig field of the variants, e.g. --set beta=0.45 (repeatable)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="variants: one run per seed (RewardConfig.seed) and a summary over them")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved timing rounds (best is kept)")
    ap.add_argument("--only", choices=["variants", "fidelity", "cost"], default=None)
    ap.add_argument("--encoders", nargs="+", choices=list(ENCODERS), default=list(ENCODERS))
    ap.add_argument("--shipped-only", action="store_true",
                    help="variants: only edits trained out with the gate (a screen of a --set change)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    try:
        base = RewardConfig.with_settings(args.set)
    except ValueError as e:  # a pydantic ValidationError too: a field given a value it does not take
        ap.error(f"--set: {e}")
    args.cache.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    if args.only in (None, "variants"):
        runs = {s: variants(args.data, args.cache, args.encoders, base.model_copy(update={"seed": s}),
                            args.shipped_only)
                for s in args.seeds or [base.seed]}
        if len(runs) > 1:
            seed_summary(runs)
    if args.only in (None, "fidelity"):
        fidelity(args.data, args.cache, args.encoders)
    if args.only in (None, "cost"):
        cost(args.data, args.repeats)


if __name__ == "__main__":
    main()
