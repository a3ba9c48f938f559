"""``traitlab align dpo``: HAL's recipe with TRL's DPOTrainer and LoRA.

For each training prompt, sample ``num_samples`` completions from the policy, score them with the local
reward, pair the best against the worst when their gap exceeds ``min_gap_sd`` SDs, and train DPO on the
pairs with a LoRA adapter (the adapter-free base is the reference model). The pairs are saved as
``out_dir/pairs.jsonl`` and reused when resuming, so a resumed run trains on the same data.

Several GPUs or nodes: use accelerate's own config, as TRL does; sampling is split across the processes and
gathered (every rank trains on all pairs; the main process alone writes them and the store), training is
TRL's (see alignment/README.md for DeepSpeed ZeRO and FSDP)::

    accelerate launch --config_file my_accelerate.yaml -m traitlab.cli align dpo --config dpo.yaml
"""

from __future__ import annotations

from typing import Any

from traitlab.store import Store

from .config import DPORunConfig
from .pairs import PreferencePair, PromptRecord, build_pairs, generate, load_prompts, pairs_dataset, score_completions
from .session import AlignResult, AlignSession, process_state, say


def sample_pairs(session: AlignSession, prompts: list[PromptRecord]) -> list[PreferencePair]:
    """Sample, score and pair; each process takes its share of the prompts and all get every pair."""
    from accelerate.utils import gather_object

    cfg = session.cfg
    state = process_state()
    with state.split_between_processes(prompts) as mine:
        session.rank_info["sampled_prompts"] = [p.id for p in mine]
        samples = generate(session.model, session.tokenizer, [p.prompt for p in mine], cfg.num_samples,
                           cfg.sampling)
        rows = []
        for rec, texts in zip(mine, samples, strict=True):
            ids = [f"{rec.id}#{k}" for k in range(len(texts))]
            rows.append((rec, texts, score_completions(session.reward, ids, [rec.prompt] * len(texts), texts,
                                                       cfg.target_role)))
    if state.num_processes > 1:
        rows = gather_object(rows)
    session.rank_info["gathered_prompts"] = len(rows)
    recs, samples, scores = zip(*rows, strict=True) if rows else ((), (), ())
    return build_pairs(recs, samples, scores, min_gap_sd=cfg.min_gap_sd, pair_unparsed=cfg.pair_unparsed)


def run_dpo(cfg: DPORunConfig, *, model: Any = None, tokenizer: Any = None, reward: Any = None,
            store: Store | None = None) -> AlignResult:
    """Sample, pair, train DPO with LoRA and monitor every trait; the results land in the store."""
    from trl import DPOTrainer

    with AlignSession(cfg, "dpo", model=model, tokenizer=tokenizer, reward=reward, store=store) as session:
        session.begin()
        pairs_path = session.out / "pairs.jsonl"
        if cfg.resume and pairs_path.exists():
            pairs = [PreferencePair.model_validate_json(line) for line in pairs_path.read_text().splitlines() if line]
        else:
            prompts = load_prompts(cfg.prompts, cfg.prompt_limit)
            say(f"sampling {cfg.num_samples} completions for each of {len(prompts)} training prompts")
            pairs = sample_pairs(session, prompts)
            if session.is_main:
                pairs_path.write_text("".join(p.model_dump_json() + "\n" for p in pairs))
        say(f"{len(pairs)} preference pairs -> {pairs_path}")
        if not pairs:
            raise RuntimeError("no preference pair passed the gap rule: sample more (num_samples, prompt_limit) "
                               "or lower min_gap_sd")
        if session.is_main:
            session.store.put_artifact(session.run_id, "pairs_summary", {
                "n_pairs": len(pairs), "min_gap_sd": cfg.min_gap_sd,
                "unparsed_rejected": sum(p.rejected_score is None for p in pairs)})
        trainer = DPOTrainer(model=session.model, args=cfg.trl_config(), train_dataset=pairs_dataset(pairs),
                             processing_class=session.tokenizer, peft_config=cfg.lora.peft_config(),
                             callbacks=[session.monitor()])
        trainer.train(resume_from_checkpoint=cfg.resume or None)
        return session.finish(trainer, n_pairs=len(pairs))
