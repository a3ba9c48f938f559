"""Fine-tuned vs frozen encoder for the local reward, same folds, same heads, same loss (a GPU comparison).

    python bench/reward_finetune.py prepare --out .ft [--data ../shared/data] [--limit N]
                                                             # here: texts, style, targets, folds, fp16 weights
    python bench/reward_finetune.py run --data .ft           # on a GPU machine: torch + transformers only

CPU smoke of both steps (plumbing only; 30 rows give no figure): ``prepare --out /tmp/ft --limit 30`` then
``run --data /tmp/ft --epochs 1`` (under a minute).

``prepare`` needs traitlab; ``run`` does not (the GPU image lacks pydantic): it imports the self-contained
``judges/reward_hf_modeling.py`` by path. The frozen variant is the shipped recipe (MLP trait heads on a
frozen mean-pooled MiniLM + style features); the fine-tuned one also updates the encoder (lr 2e-5).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent


def prepare(out: Path, data_dir: Path, limit: int | None) -> None:
    """The HAL recipe's training rows as the shipped reward reads them (its text as embedded, its style
    features), written for ``run``; ``limit``: the first rows only (a CPU smoke run)."""
    import shutil

    from safetensors.torch import load_file, save_file

    from traitlab.embed import encoder_input, encoder_path
    from traitlab.judges.aggregate import grouped_folds
    from traitlab.judges.reward import RewardConfig, training_set
    from traitlab.judges.reward_features import TurnBatch, target_text
    from traitlab.presets.hal.reward import CONTRAST, inputs

    x = inputs(data_dir)
    rows = x.dialogues[:limit] if limit else x.dialogues
    ids = {d.id for d in rows}
    data = training_set(rows, [r for r in x.ratings if r.dialogue_id in ids], x.trait_set, CONTRAST)
    out.mkdir(parents=True, exist_ok=True)
    cfg = RewardConfig()
    (out / "data.json").write_text(json.dumps({
        "texts": encoder_input([target_text(d) for d in data.dialogues], cfg.encoder),
        "style": TurnBatch.of(data.dialogues).style().tolist(),
        "targets": np.nan_to_num(data.targets, nan=-99.0).tolist(),
        "labels": np.nan_to_num(data.labels, nan=-1).tolist(),
        "groups": data.groups, "fold": grouped_folds(data.groups, cfg.folds, cfg.seed).tolist(),
        "config": cfg.model_dump(mode="json")}))
    enc = Path(encoder_path())
    (out / "encoder").mkdir(exist_ok=True)
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (enc / f).exists():
            shutil.copyfile(enc / f, out / "encoder" / f)
    save_file({k: v.half() for k, v in load_file(str(enc / "model.safetensors")).items()},
              str(out / "encoder" / "model.safetensors"))


def _pairwise(s: np.ndarray, y: np.ndarray, groups: list[str]) -> float:
    rows: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        if y[i] >= 0:
            rows.setdefault(g, []).append(i)
    pairs = [r for r in rows.values() if len(r) == 2 and {y[r[0]], y[r[1]]} == {0.0, 1.0}]
    return float(np.mean([s[r[0]] > s[r[1]] if y[r[0]] == 1 else s[r[1]] > s[r[0]] for r in pairs]))


def run(data_dir: Path, epochs: int, out: Path | None) -> None:
    from scipy.stats import spearmanr
    from transformers import AutoModel, AutoTokenizer

    spec = importlib.util.spec_from_file_location("rhf", REPO / "judges" / "reward_hf_modeling.py")
    rhf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rhf)
    d = json.loads((data_dir / "data.json").read_text())
    cfg = d["config"]
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(str(data_dir / "encoder"))
    enc = tok(d["texts"], padding=True, truncation=True, max_length=cfg["encoder"]["max_tokens"], return_tensors="pt")
    style = torch.tensor(d["style"], dtype=torch.float32)
    targets = torch.tensor(d["targets"], dtype=torch.float32)
    seen = targets > -90
    labels = torch.tensor(d["labels"], dtype=torch.float32)
    fold = np.array(d["fold"])

    def embed(model: torch.nn.Module, idx: np.ndarray) -> torch.Tensor:
        ids, mask = enc["input_ids"][idx].to(dev), enc["attention_mask"][idx].to(dev)
        h = model(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)

    def fit(train: np.ndarray, finetune: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
        torch.manual_seed(cfg["seed"])
        model = AutoModel.from_pretrained(str(data_dir / "encoder"), torch_dtype=torch.float32).to(dev)
        with torch.no_grad():
            x0 = torch.cat([embed(model.eval(), train).cpu(), style[train]], 1)
        t = targets[train]
        t_mean = torch.stack([t[seen[train][:, j], j].mean() for j in range(t.shape[1])])
        t_std = torch.stack([t[seen[train][:, j], j].std() for j in range(t.shape[1])])
        head = rhf.TraitHead(x0.shape[1], cfg["hidden"], t.shape[1], cfg["dropout"])
        head.x_mean.copy_(x0.mean(0))
        head.x_scale.copy_(x0.std(0).clamp(min=1e-6))
        head.trait_mean.copy_(t_mean)
        head.trait_scale.copy_(t_std.clamp(min=1e-6))
        head.trait_lo.copy_(torch.stack([t[seen[train][:, j], j].min() for j in range(t.shape[1])]))
        head.trait_hi.copy_(torch.stack([t[seen[train][:, j], j].max() for j in range(t.shape[1])]))
        head.bounds.copy_(torch.tensor([cfg["input_clip"], cfg["score_bound"]]))
        head = head.to(dev)
        params = [{"params": head.parameters(), "lr": cfg["lr"]}]
        if finetune:
            params.append({"params": model.parameters(), "lr": 2e-5})
        opt = torch.optim.AdamW(params, weight_decay=0.0)
        steps = cfg["steps"] if not finetune else epochs * int(np.ceil(len(train) / 32))
        rng = np.random.default_rng(cfg["seed"])
        xs = x0.to(dev)
        for _ in range(steps):
            model.train(finetune)
            head.train()
            if finetune:
                b = train[rng.permutation(len(train))[:32]]
                x = torch.cat([embed(model, b), style[b].to(dev)], 1)
            else:
                b, x = train, xs
            z, _, logit = head.standardised(x)
            tz = ((targets[b].to(dev) - head.trait_mean) / head.trait_scale)
            sb = seen[b].to(dev)
            loss = ((z - tz) ** 2)[sb].mean()
            lab = labels[b].to(dev) >= 0
            if lab.any():
                loss = loss + cfg["beta"] * torch.nn.functional.binary_cross_entropy_with_logits(
                    logit[lab], labels[b].to(dev)[lab])
            loss = loss + cfg["weight_decay"] * sum((m.weight ** 2).sum() for m in head.trunk if hasattr(m, "weight"))
            loss = loss + cfg["l1_head"] * head.head.weight.abs().sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return model.eval(), head.eval()

    results = {}
    for variant in ("frozen", "finetuned"):
        t0 = time.time()
        traits = np.zeros(tuple(targets.shape))
        logits = np.zeros(len(labels))
        for k in range(int(fold.max()) + 1):
            te, tr = np.where(fold == k)[0], np.where(fold != k)[0]
            model, head = fit(tr, variant == "finetuned")
            with torch.no_grad():
                x = torch.cat([embed(model, te), style[te].to(dev)], 1)
                tt, _ = head(x)
                _, _, lg = head.standardised(x)
            traits[te], logits[te] = tt.cpu().numpy(), lg.cpu().numpy()
        y = labels.numpy()
        lab = y >= 0
        rho = [spearmanr(traits[lab & seen[:, j].numpy(), j], targets[lab & seen[:, j].numpy(), j].numpy())[0]
               for j in range(targets.shape[1])]
        results[variant] = {"pairwise_accuracy": _pairwise(logits, y, d["groups"]),
                            "trait_spearman_mean": float(np.mean(rho)), "seconds": time.time() - t0}
        print(variant, results[variant], flush=True)
    if out:
        (out / "finetune.json").write_text(json.dumps(results, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["prepare", "run"])
    ap.add_argument("--out", type=Path, default=REPO / ".ft")
    ap.add_argument("--data", type=Path, default=None, help="prepare: the HAL data folder (../shared/data); "
                    "run: the prepared folder (.ft)")
    ap.add_argument("--limit", type=int, default=None, help="prepare: the first N dialogues only (a smoke run)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--results", type=Path, default=None)
    args = ap.parse_args()
    if args.mode == "prepare":
        prepare(args.out, args.data or REPO.parent / "shared" / "data", args.limit)
    else:
        run(args.data or REPO / ".ft", args.epochs, args.results)


if __name__ == "__main__":
    main()
