"""Running a suite: have the conversations with the model under test, score them, record the run.

Conversations are generated turn by turn, a few at a time (each turn of a chunk is one batch through the
JudgeClient, so hosted models run concurrently), and each finished chunk is written to the store at once. A
run started again with the same ``run_id`` skips the conversations it already stored and scores only what is
unscored; model calls are cached by the client as well, so nothing is paid for twice.

What lands in the store (run kind ``eval``): the dialogues (the model speaks as the suite's target role, e.g.
``witness``); the reward's per-trait values as ratings of judge :data:`REWARD_JUDGE` and its scalar scores as
the ``scores`` artifact; the LLM judge's ratings under the judge model's name, with the ``trait_set``
artifact; and a summary on the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
from pydantic import BaseModel

from traitlab.data import load_dialogues, load_trait_set, sample_dialogues, sample_trait_set
from traitlab.evals.report import REWARD_TRAIT_SET_ARTIFACT, SCORES_ARTIFACT, TRAIT_SET_ARTIFACT
from traitlab.evals.suite import Suite, doctor_personas
from traitlab.settings import data_dir as default_data_dir
from traitlab.store import Store
from traitlab.types import Dialogue, Message, TraitRatings, TraitSet

REWARD_JUDGE = "local-reward"
CHUNK = 4
"""Conversations generated together; each finished chunk is stored, so an interrupt loses at most one."""


class Script(BaseModel):
    """What one conversation starts from: the interlocutor's lines and (doctor) the persona played."""

    id: str
    index: int
    lines: list[str]
    persona: str = ""
    source: str = ""


class EvalResult(BaseModel):
    run_id: str
    model: str
    generated: int
    resumed: int
    failed: list[str]
    n_dialogues: int
    reward_mean: float | None
    judge: str | None


def _interrogator_scripts(dialogues: Sequence[Dialogue]) -> list[tuple[str, list[str]]]:
    """(game id, interrogator lines) per game, in file order; both transcripts of a game share one entry."""
    seen: dict[str, list[str]] = {}
    for d in dialogues:
        key = str(d.meta.get("game_id", d.id))
        lines = [m.content for m in d.messages if m.role == "interrogator" and m.content.strip()]
        if lines and key not in seen:
            seen[key] = lines
    return list(seen.items())


def plan(suite: Suite, n: int, data_dir: Path | None = None) -> list[Script]:
    """The ``n`` conversation scripts of a suite (deterministic: a resumed run plans the same ones)."""
    inter = suite.interlocutor
    if suite.scenario == "doctor":
        personas = doctor_personas(data_dir, limit=n) if data_dir is not None else suite.personas
        src = "hal_doctor" if data_dir is not None else "suite"
        return [Script(id=f"{suite.name}-{i:04d}", index=i, lines=inter.lines, persona=personas[i % len(personas)],
                       source=f"{src}:persona{i % len(personas)}") for i in range(n)]
    if inter.source == "lines":
        games = [("lines", inter.lines)]
    elif inter.source == "sample":
        games = _interrogator_scripts(sample_dialogues())
    else:
        path = (data_dir or default_data_dir()) / "hal_turing" / "dialogues.jsonl"
        games = _interrogator_scripts(load_dialogues(path, skipped=[]))
    picks = [games[i % len(games)] for i in range(n)]
    return [Script(id=f"{suite.name}-{i:04d}", index=i, lines=lines, source=f"game:{gid}")
            for i, (gid, lines) in enumerate(picks)]


def _chat(system: str, history: list[Message], me: str) -> list[dict[str, str]]:
    """The conversation from one speaker's side: its own turns are ``assistant``, the other's ``user``."""
    return [{"role": "system", "content": system},
            *({"role": "assistant" if m.role == me else "user", "content": m.content} for m in history)]


def _generate_chunk(suite: Suite, scripts: list[Script], model_client: Any, inter_client: Any) -> tuple[
        list[Dialogue], list[str]]:
    """Alternate interlocutor and model turns for a chunk of conversations; a failed call drops that one."""
    from traitlab.judges.client import Request

    inter_role, target = suite.roles
    history: dict[str, list[Message]] = {s.id: [] for s in scripts}
    failed: dict[str, str] = {}
    for turn in range(suite.turns):
        live = [s for s in scripts if s.id not in failed]
        scripted = [s for s in live if suite.interlocutor.kind == "scripted" or turn == 0]
        for s in scripted:
            if turn < len(s.lines):
                history[s.id].append(Message(role=inter_role, content=s.lines[turn]))
        asking = [s for s in live if s not in scripted]
        if asking:
            sys_i = suite.interlocutor.system_prompt
            outs = inter_client.call_many([Request(messages=_chat(sys_i, history[s.id], inter_role),
                                                   params=_params(suite.interlocutor.params, suite, s, turn))
                                           for s in asking], progress=f"turn {turn + 1}: {inter_role}")
            for s, o in zip(asking, outs, strict=True):
                if o.ok:
                    history[s.id].append(Message(role=inter_role, content=str(o.value).strip()))
                else:
                    failed[s.id] = o.error or "error"
        answering = [s for s in live if s.id not in failed and history[s.id] and history[s.id][-1].role == inter_role]
        if not answering:
            break
        outs = model_client.call_many(
            [Request(messages=_chat(Template(suite.system_prompt).safe_substitute(persona=s.persona),
                                    history[s.id], target), params=_params(suite.params, suite, s, turn))
             for s in answering], progress=f"turn {turn + 1}: {target}")
        for s, o in zip(answering, outs, strict=True):
            if o.ok:
                history[s.id].append(Message(role=target, content=str(o.value or "").strip()))
            else:
                failed[s.id] = o.error or "error"
    done = [Dialogue(id=s.id, messages=history[s.id], target_role=target,
                     meta={"suite": suite.name, "source": s.source, **({"persona": s.persona} if s.persona else {})})
            for s in scripts if s.id not in failed and any(m.role == target for m in history[s.id])]
    return done, sorted(failed)


def _params(base: dict[str, Any], suite: Suite, s: Script, turn: int) -> dict[str, Any]:
    """The suite's params plus a seed per conversation and turn: distinct samples, reproducible runs."""
    if suite.seed is None:
        return dict(base)
    return {**base, "seed": suite.seed + 1000 * s.index + turn}


def score_reward(store: Store, run_id: str, dialogues: Sequence[Dialogue], reward_path: str) -> float | None:
    """Score the run's dialogues that have no reward score yet; returns the mean over all scored ones."""
    from traitlab.judges.reward import load_reward

    art = _artifact(store, run_id, SCORES_ARTIFACT) or {"scorer": REWARD_JUDGE, "scores": {}}
    todo = [d for d in dialogues if d.id not in art["scores"]]
    reward = load_reward(None if reward_path == "default" else reward_path)
    ts = reward.trait_set
    store.put_artifact(run_id, REWARD_TRAIT_SET_ARTIFACT, {**ts.model_dump(mode="json"), "hash": ts.hash})
    if todo:
        scores = reward.score(todo)
        store.add_ratings(run_id, [TraitRatings(dialogue_id=s.id, judge=REWARD_JUDGE, ratings=s.traits,
                                                trait_set_hash=ts.hash) for s in scores])
        art["scores"].update({s.id: s.score for s in scores})
        store.put_artifact(run_id, SCORES_ARTIFACT, art)
    return float(np.mean(list(art["scores"].values()))) if art["scores"] else None


def resolve_trait_set(name: str) -> TraitSet:
    """``traitlab12`` is the shipped set; anything else is a trait-set file."""
    return sample_trait_set() if name == "traitlab12" else load_trait_set(name)


def score_judge(store: Store, run_id: str, dialogues: Sequence[Dialogue], model: str, trait_set: TraitSet, *,
                mode: str = "all", params: dict[str, Any] | None = None) -> int:
    """Rate the run's dialogues this judge has not rated yet through the real judge path; returns how many
    dialogues got ratings (failures stay in the store's call log, not in the ratings)."""
    from traitlab.judges.client import JudgeClient
    from traitlab.judges.rate import rate_dialogues

    rated = {r.dialogue_id for r in store.ratings(run_id, judge=model)}
    todo = [d for d in dialogues if d.id not in rated]
    store.put_artifact(run_id, TRAIT_SET_ARTIFACT, {**trait_set.model_dump(mode="json"), "hash": trait_set.hash})
    if not todo:
        return 0
    client = JudgeClient(model, store=store, run_id=run_id, **(params or {}))
    return len(rate_dialogues(todo, trait_set, client, mode=mode))  # it adds the ratings to the run


def _artifact(store: Store, run_id: str, name: str) -> Any:
    try:
        return store.artifact(run_id, name)
    except KeyError:
        return None


def run_suite(suite: Suite, store: Store, *, model: str | None = None, n: int | None = None,
              run_id: str | None = None, data_dir: Path | None = None, concurrency: int = 4) -> EvalResult:
    """Generate (or resume) the suite's conversations with ``model``, score them, and record the run."""
    from traitlab.judges.client import JudgeClient

    model = model or suite.model
    n = n or suite.conversations
    run_id = store.start_run("eval", suite.name, {"suite": suite.model_dump(mode="json"), "model": model, "n": n,
                                                  "data_dir": str(data_dir) if data_dir else None}, run_id=run_id)
    stored = {d.id for d in store.dialogues(run_id)}
    todo = [s for s in plan(suite, n, data_dir) if s.id not in stored]
    model_client = JudgeClient(model, store=store, run_id=run_id, concurrency=concurrency)
    inter = suite.interlocutor
    inter_client = (JudgeClient(inter.model, store=store, run_id=run_id, concurrency=concurrency)
                    if inter.kind == "llm" and inter.model else None)
    failed: list[str] = []
    generated = 0
    for i in range(0, len(todo), CHUNK):
        done, bad = _generate_chunk(suite, todo[i:i + CHUNK], model_client, inter_client)
        store.add_dialogues(run_id, done)
        generated += len(done)
        failed += bad
    dialogues = store.dialogues(run_id)
    reward_mean = score_reward(store, run_id, dialogues, suite.scorers.reward) if suite.scorers.reward else None
    judge = suite.scorers.judge
    if judge:
        score_judge(store, run_id, dialogues, judge.model, resolve_trait_set(judge.trait_set), mode=judge.mode,
                    params=judge.params)
    result = EvalResult(run_id=run_id, model=model, generated=generated, resumed=len(stored), failed=failed,
                        n_dialogues=len(dialogues), reward_mean=reward_mean, judge=judge.model if judge else None)
    store.finish_run(run_id, "done" if not failed else "partial", result.model_dump(mode="json"))
    return result
