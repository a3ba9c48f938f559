"""What a DPO and a GRPO run share: loading the policy and reward, the store run, the held-out evaluation
before, during and after training, and the artifacts it leaves.

On resume (``resume`` set and ``out_dir`` holding an earlier run) the store run id and the baseline
snapshot are reused, so the before/after table still compares against the untrained policy.
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
        from accelerate import PartialState
        from accelerate.utils import broadcast_object_list

        self.cfg, self.kind = cfg, kind
        state = PartialState()
        self.is_main = state.is_main_process
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
        self.capability = capability_texts(cfg.monitor.capability_texts, cfg.monitor.capability_limit)
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
        return evaluate_policy(model, self.tokenizer, self.reward, self.heldout[:limit], step=step,
                               target_role=self.cfg.target_role, sampling=self.cfg.sampling,
                               capability=self.capability)

    def begin(self) -> None:
        """Evaluate the untrained policy (or reload that evaluation when resuming)."""
        path = self.out / "baseline.json"
        if self.cfg.resume and path.exists():
            self.base = Snapshot.model_validate_json(path.read_text())
        else:
            say(f"sampling the untrained policy on {len(self.heldout)} held-out prompts")
            self.base = self.snapshot(self.model, 0)
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
        self._report(final, find_flags(self.base, final, self.weights, self.cfg.monitor))
        table = before_after(self.base, final, self.weights, self.weights_source, self.cfg.monitor.level)
        adapter = self.out / "adapter"
        trainer.save_model(str(adapter))
        log = [{k: v for k, v in h.items() if isinstance(v, int | float)} for h in trainer.state.log_history]
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
        (self.out / "result.json").write_text(result.model_dump_json(indent=1))
        return result
