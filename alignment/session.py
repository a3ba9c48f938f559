"""What a DPO and a GRPO run share: loading the policy and reward, the store run, the held-out evaluation
before, during and after training, and the artifacts it leaves.

On resume (``resume`` set and ``out_dir`` holding an earlier run) the store run id and the baseline
snapshot are reused, so the before/after table still compares against the untrained policy.

Under ``accelerate launch`` (several processes): only the main process opens the store and writes files in
``out_dir``; the held-out evaluations are made by the main process and broadcast, so every rank's monitor sees
the same snapshot (and stops or flags identically); each rank leaves ``out_dir/ranks/rank<N>.json`` saying what
it sampled and saw, which is how the split and the agreement are checked.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from traitlab.settings import store_path
from traitlab.store import Store

from .config import AlignRunConfig, LoraSettings
from .monitors import (
    Snapshot,
    TraitMonitor,
    before_after,
    capability_texts,
    evaluate_policy,
    find_flags,
    sample_table,
    trait_weights,
)
from .pairs import PromptRecord, load_prompts

LOCAL_PREFIX = "local:"


class AlignResult(BaseModel):
    """What a run returns (and leaves in the store under ``run_id``)."""

    run_id: str
    out_dir: str
    adapter_dir: str
    before_after: dict[str, Any]
    flags: list[dict[str, Any]]
    monitor_log: list[dict[str, Any]]
    train_metrics: dict[str, Any]
    train_log: list[dict[str, Any]]
    n_pairs: int | None = None
    trait_texts: dict[str, str] = {}
    """The reward's trait statements by id (for tables a person reads)."""


def load_policy(name: str, lora: LoraSettings, dtype: str = "auto") -> tuple[Any, Any]:
    """A trainable copy of the policy and its tokenizer: ``local:<name>`` is an offline traitlab model,
    anything else a transformers path or hub id (4-bit for QLoRA when CUDA and bitsandbytes are there)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    torch_dtype = getattr(torch, dtype) if dtype != "auto" else torch.bfloat16 if cuda else torch.float32
    if name.startswith(LOCAL_PREFIX):
        from traitlab.judges.local import load_local_model

        model, tokenizer = load_local_model(name[len(LOCAL_PREFIX):])
        # the loader caches one instance per process (judging uses it); LoRA must not land in that one
        model, tokenizer = copy.deepcopy(model).to(torch_dtype), copy.deepcopy(tokenizer)
    else:
        kwargs: dict[str, Any] = {"dtype": torch_dtype}
        if cuda:
            if lora.quantize != "none" and _has_bitsandbytes():
                from transformers import BitsAndBytesConfig

                kwargs["quantization_config"] = BitsAndBytesConfig(
                    load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
            elif lora.quantize == "4bit":
                raise RuntimeError("lora.quantize='4bit' needs bitsandbytes (pip install bitsandbytes)")
        model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def process_state() -> Any:
    """accelerate's process state. Without CUDA the processes join over gloo on CPU: ``accelerate launch
    --multi_gpu --num_processes N`` starts them with torchrun (its ``--cpu`` flag alone starts one process)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _connected() -> bool:
    """Whether the processes can still talk (TRL's trainer destroys the process group when training ends)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _unwrap(model: Any) -> Any:
    """The bare model under a DDP/accelerate wrapper (evaluation is a local forward, no collective)."""
    return getattr(model, "module", model)


def say(message: str) -> None:
    """Progress on stdout (runs take minutes to hours; the trainer's own log covers the steps)."""
    print(f"[traitlab align {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _has_bitsandbytes() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


class AlignSession:
    """One alignment run's shared state (a context manager); ``kind`` is ``"dpo"`` or ``"grpo"``."""

    def __init__(self, cfg: AlignRunConfig, kind: str, *, model: Any = None, tokenizer: Any = None,
                 reward: Any = None, store: Store | None = None):
        from accelerate.utils import broadcast_object_list

        self.cfg, self.kind = cfg, kind
        state = process_state()
        self.is_main = state.is_main_process
        self.rank, self.world = state.process_index, state.num_processes
        self.rank_info: dict[str, Any] = {}
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        if model is None:
            model, tokenizer = load_policy(cfg.model, cfg.lora, cfg.dtype)
        self.model, self.tokenizer = model, tokenizer
        if reward is None:
            from traitlab.judges.reward import load_reward

            reward = load_reward(cfg.reward)
        self.reward = reward
        self.heldout: list[PromptRecord] = load_prompts(cfg.heldout, cfg.monitor.heldout_limit)
        self.capability = capability_texts(cfg.monitor.capability_texts, cfg.monitor.capability_limit,
                                           target_role=cfg.monitor.capability_role, label=cfg.monitor.capability_label)
        self.flags: list[dict[str, Any]] = []
        self.log: list[dict[str, Any]] = []
        # only the main process touches the store (one DuckDB writer); the others learn the run id
        self._own_store = store is None and self.is_main
        self.store = store if store is not None or not self.is_main else Store(store_path(cfg.store))
        run_id = ""
        if self.is_main:
            marker = self.out / "run.json"
            resume_id = json.loads(marker.read_text())["run_id"] if cfg.resume and marker.exists() else None
            run_id = self.store.start_run("align", name=f"{kind}:{cfg.model}",
                                          config={"kind": kind, **cfg.model_dump(mode="json")}, run_id=resume_id)
            marker.write_text(json.dumps({"run_id": run_id}))
            if (ts := getattr(self.reward, "trait_set", None)) is not None:  # the report shows trait texts
                self.store.put_artifact(run_id, "reward_trait_set", {**ts.model_dump(mode="json"), "hash": ts.hash})
            if (audited := getattr(self.reward, "audit", None)) is not None:  # the report shows this reward's own
                self.store.put_artifact(run_id, "reward_audit", audited.model_dump(mode="json"))
            if resume_id is not None:
                self.log, self.flags = self._stored(run_id, "monitor_log"), self._stored(run_id, "flags")
        self.run_id = broadcast_object_list([run_id])[0] if state.num_processes > 1 else run_id

    def _stored(self, run_id: str, name: str) -> list[dict[str, Any]]:
        """An artifact list of the run being resumed (empty when the earlier run never wrote it)."""
        try:
            return list(self.store.artifact(run_id, name))
        except KeyError:
            return []

    def snapshot(self, model: Any, step: int, limit: int | None = None) -> Snapshot:
        """The held-out evaluation at ``step``: made by the main process, the same object on every rank."""
        snap = None
        if self.is_main:
            snap = evaluate_policy(_unwrap(model), self.tokenizer, self.reward, self.heldout[:limit], step=step,
                                   target_role=self.cfg.target_role, sampling=self.cfg.sampling,
                                   capability=self.capability)
        if self.world > 1 and _connected():
            # torch's own call: inside TRL's trainer accelerate's state no longer says "multi-CPU" on gloo
            import torch.distributed as dist

            box = [snap]
            dist.broadcast_object_list(box, src=0)
            snap = box[0]
        return snap

    def begin(self) -> None:
        """Evaluate the untrained policy (or reload that evaluation when resuming)."""
        path = self.out / "baseline.json"
        if self.cfg.resume and path.exists():
            self.base = Snapshot.model_validate_json(path.read_text())
        else:
            say(f"sampling the untrained policy on {len(self.heldout)} held-out prompts")
            self.base = self.snapshot(self.model, 0)
            if self.is_main:
                path.write_text(self.base.model_dump_json())
        if not self.base.scores:
            raise RuntimeError(f"no held-out completion of {self.cfg.model} could be scored as "
                               f"{self.cfg.target_role!r}: check target_role and the prompts")
        self.weights, self.weights_source = trait_weights(self.reward, self.base)
        if not self.log:
            self._report(self.base, [])

    def _report(self, snap: Snapshot, flags: list[dict[str, Any]]) -> None:
        self.log.append(snap.summary())
        say(f"step {snap.step}: held-out score {self.log[-1]['score']:.3f}, scorable {snap.parse_rate:.0%}, "
            f"perplexity {snap.perplexity}")
        self.flags.extend(flags)
        for f in flags:
            say(f"FLAG step {f['step']}: {f['message']}")
        if self.is_main:
            self.store.put_artifact(self.run_id, "monitor_log", self.log)
            self.store.put_artifact(self.run_id, "flags", self.flags)

    def monitor(self) -> TraitMonitor:
        limit = self.cfg.monitor.eval_limit
        return TraitMonitor(lambda model, step: self.snapshot(model, step, limit), self.base, self.weights,
                            self.cfg.monitor, self._report)

    def __enter__(self) -> AlignSession:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        """A run that raises is marked failed in the store (``--resume`` reopens it)."""
        if exc is not None and self.is_main:
            self.store.finish_run(self.run_id, status="failed", summary={"kind": self.kind, "error": repr(exc)})
        if self._own_store:
            self.store.close()

    def finish(self, trainer: Any, n_pairs: int | None = None) -> AlignResult:
        """Final evaluation, the before/after table and flags, the saved adapter, the closed store run."""
        say(f"sampling the trained policy on {len(self.heldout)} held-out prompts")
        final = self.snapshot(trainer.model, trainer.state.global_step)
        log = [{k: v for k, v in h.items() if isinstance(v, int | float)} for h in trainer.state.log_history]
        if final is None:  # another rank: the trainer closed the process group; the main process evaluates
            self._rank_report(trainer, n_pairs)
            return AlignResult(run_id=self.run_id, out_dir=str(self.out), adapter_dir=str(self.out / "adapter"),
                               before_after={}, flags=self.flags, monitor_log=self.log,
                               train_metrics=log[-1] if log else {}, train_log=log, n_pairs=n_pairs)
        self._report(final, find_flags(self.base, final, self.weights, self.cfg.monitor))
        table = before_after(self.base, final, self.weights, self.weights_source, self.cfg.monitor.level)
        adapter = self.out / "adapter"
        trainer.save_model(str(adapter))
        if self.is_main:
            self.store.put_artifact(self.run_id, "before_after", table)
            self.store.put_artifact(self.run_id, "train_log", log)
            self.store.put_artifact(self.run_id, "samples", sample_table(self.heldout, self.base, final))
            self.store.finish_run(self.run_id, summary={
                "kind": self.kind, "steps": trainer.state.global_step, "n_pairs": n_pairs,
                "score_before": table["score"]["before"]["mean"], "score_after": table["score"]["after"]["mean"],
                "flags": len(self.flags), "adapter": str(adapter)})
        result = AlignResult(run_id=self.run_id, out_dir=str(self.out), adapter_dir=str(adapter),
                             before_after=table, flags=self.flags, monitor_log=self.log,
                             train_metrics=log[-1] if log else {}, train_log=log, n_pairs=n_pairs,
                             trait_texts={t.id: t.text for t in ts.traits} if (ts := getattr(
                                 self.reward, "trait_set", None)) is not None else {})
        if self.is_main:
            (self.out / "result.json").write_text(result.model_dump_json(indent=1))
        self._rank_report(trainer, n_pairs)
        return result

    def _rank_report(self, trainer: Any, n_pairs: int | None) -> None:
        """``out_dir/ranks/rank<N>.json`` in a multi-process run: what this rank sampled, trained on and saw."""
        if self.world == 1:
            return
        ranks = self.out / "ranks"
        ranks.mkdir(exist_ok=True)
        (ranks / f"rank{self.rank}.json").write_text(json.dumps({
            "rank": self.rank, "world": self.world, "wrote_store": self.is_main, "run_id": self.run_id,
            **self.rank_info, "n_pairs": n_pairs, "steps": trainer.state.global_step,
            "monitor_log": [{"step": e["step"], "score": e["score"]} for e in self.log]}, indent=1))
