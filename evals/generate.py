"""Running a suite: have the conversations with the model under test, score them, record the run.

:func:`evaluate` is the library function (``traitlab eval`` calls it). Generation runs on one event loop:
every planned conversation is a task, up to ``concurrency`` of them in flight, each advancing turn by turn on
its own (a slow conversation holds up no other), and each finished conversation is written to the store as
soon as it ends: one write in flight at a time, holding every conversation that finished meanwhile (32
conversations ending together cost one or two store transactions, not 32). A run started again with the
same ``run_id`` plans the same conversations, skips the ones stored and scores only what is unscored; model
calls are cached by the client as well, so a kill mid-run loses no finished conversation and pays for no call
twice.

What lands in the store (run kind ``eval``): the dialogues (the model speaks as the scenario's target role),
then what each scorer says (layout in :mod:`traitlab.evals.scoring`), and a summary on the run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from traitlab.aio import run_sync
from traitlab.evals.scoring import ScorerSummary, score_run
from traitlab.evals.suite import Suite, load_suite
from traitlab.judges.provider import ProviderOptions
from traitlab.registry import (
    ChatModel,
    Conversation,
    GenerationError,
    Scenario,
    ScenarioContext,
    ScoringContext,
)
from traitlab.store import Store
from traitlab.types import Dialogue

DEFAULT_CONCURRENCY = 16
T = TypeVar("T")


class EvalResult(BaseModel):
    """What a suite run did: conversations generated now, found stored, failed; and each scorer's summary.
    ``reward_mean`` is the mean scalar of the first scorer that gives scalars (None: no such scorer)."""

    run_id: str
    model: str
    generated: int
    resumed: int
    failed: list[str]
    n_dialogues: int
    reward_mean: float | None
    scorers: dict[str, ScorerSummary]
    unscored: list[str] = []
    errors: list[str] = []
    status: str = "done"

    @property
    def n_items(self) -> int:
        """Conversations planned: what ``--max-failures`` fractions are of."""
        return self.n_dialogues + len(self.failed)

    @property
    def n_failed(self) -> int:
        """Conversations that could not be had, plus dialogues some scorer could not score (failed calls)."""
        return len(self.failed) + len(self.unscored)


class ClientChat:
    """A :class:`~traitlab.registry.ChatModel` over a JudgeClient: cached, retried, logged with the run."""

    def __init__(self, client: Any):
        self.client = client

    @property
    def name(self) -> str:
        return self.client.model

    async def chat(self, messages: Sequence[Mapping[str, str]], params: Mapping[str, Any] | None = None) -> str:
        outcome = await self.client.acall(list(messages), params=dict(params or {}))
        if not outcome.ok:
            raise GenerationError(f"{self.name}: {outcome.error}")
        return str(outcome.value or "")


def model_client(model: str, store: Store, run_id: str, concurrency: int, **params: Any) -> Any:
    """The JudgeClient for a model under test or an interlocutor; a local model or adapter folder (a path,
    or ``local/<path>``) runs in-process, and its weights' fingerprint is part of every request's hash, so
    a retrained adapter at the same path is never answered from the cache."""
    from traitlab.judges.client import JudgeClient

    if model.startswith("local/") or Path(model).expanduser().is_dir():  # only then pay for torch's import
        from traitlab.judges.local import PROVIDER, folder_fingerprint, local_folder

        folder = local_folder(model)
        if folder is not None:
            model = f"{PROVIDER}/{folder}"
            params = {**params, "local_fingerprint": folder_fingerprint(folder)}
    return JudgeClient(model, store=store, run_id=run_id, concurrency=concurrency, **params)


def plan(suite: Suite, n: int | None = None, data_dir: Path | None = None) -> list[Conversation]:
    """The suite's ``n`` planned conversations (deterministic: a resumed run plans the same ones)."""
    scenario = suite.build_scenario()
    return scenario.plan(n or suite.conversations, _context(suite, _Unused(), data_dir))


class _Unused:
    """The model slot of a context used only for planning."""

    name = "unused"

    async def chat(self, messages: Sequence[Mapping[str, str]], params: Mapping[str, Any] | None = None) -> str:
        raise RuntimeError("planning does not call a model")


def _context(suite: Suite, model: ChatModel, data_dir: Path | None, chat_model: Any = None) -> ScenarioContext:
    return ScenarioContext(model=model, name=suite.name, turns=suite.turns, system_prompt=suite.system_prompt,
                           params=dict(suite.params), seed=suite.seed, data_dir=data_dir, base_dir=suite.base_dir,
                           chat_model=chat_model)


async def generate(scenario: Scenario, conversations: Sequence[Conversation], ctx: ScenarioContext, *,
                   concurrency: int = DEFAULT_CONCURRENCY, on_done: Any = None, progress: bool = True
                   ) -> tuple[list[Dialogue], dict[str, str]]:
    """Have ``conversations`` with up to ``concurrency`` in flight; ``on_done(dialogues)`` (sync, run in a
    thread, one call at a time) gets the conversations finished since its last call, as soon as the previous
    call returns. Returns the dialogues and ``{id: error}`` of the failed ones; an exception of ``on_done``
    ends the run with it."""
    from rich.progress import Progress

    gate = asyncio.Semaphore(concurrency)
    done: list[Dialogue] = []
    failed: dict[str, str] = {}
    writer = _Writer(on_done)
    target = scenario.roles[1]
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task(f"conversations ({ctx.model.name} as {target})", total=len(conversations))

        async def one(c: Conversation) -> None:
            async with gate:
                try:
                    d = await scenario.converse(c, ctx)
                except (GenerationError, ValueError) as e:  # ValueError: a dialogue in which the model never spoke
                    failed[c.id] = str(e)
                else:
                    writer.add(d)
                    done.append(d)
                bar.advance(task)

        try:
            await asyncio.gather(*(one(c) for c in conversations))
        finally:
            await writer.drain()
    return done, failed


class _Writer:
    """Hands finished dialogues to ``write`` in a thread: one call in flight, the next takes all that waited."""

    def __init__(self, write: Any):
        self.write = write
        self.pending: list[Dialogue] = []
        self.task: asyncio.Task[None] | None = None

    def add(self, dialogue: Dialogue) -> None:
        if self.write is None:
            return
        self.pending.append(dialogue)
        if self.task is None or self.task.done():
            if self.task is not None:
                self.task.result()  # a failed write ends the run
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self.pending:
            batch, self.pending = self.pending, []
            await asyncio.to_thread(self.write, batch)

    async def drain(self) -> None:
        """Wait until everything added is written (raises what a write raised)."""
        if self.task is not None:
            await self.task
        if self.pending:  # added after the last write began, while it was finishing
            await self._run()




def evaluate(suite: Suite | str | Path, model: str | None, store: Store, *, n: int | None = None,
             run_id: str | None = None, data_dir: Path | None = None,
             concurrency: int = DEFAULT_CONCURRENCY, provider: ProviderOptions | None = None) -> EvalResult:
    """Generate (or resume) a suite's conversations with ``model`` (None: the suite's), score them with the
    suite's scorers, and record the run (kind ``eval``). ``suite`` is a Suite, a file or a shipped name.

    The scorers' reward and trait set are loaded before any conversation is generated, so a bad one fails
    at once; an exception marks the run ``failed``; ``status`` is ``failed`` when nothing succeeded.
    ``provider`` (default: the suite's ``provider:`` block) reaches every model the conversations call.
    """
    from traitlab.store import now

    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    reach = (provider or suite.provider).client_kwargs()
    concurrency = reach.pop("concurrency", concurrency)
    model = model or suite.model
    n = n or suite.conversations
    scenario = suite.build_scenario()
    scorers = suite.build_scorers()
    _load_scorers(scorers, ScoringContext(store=store, data_dir=data_dir, base_dir=suite.base_dir))
    config = {"suite": suite.model_dump(mode="json"), "model": model, "n": n,
              "data_dir": str(data_dir) if data_dir else None}
    started = now()
    with store.running("eval", suite.name, config, run_id=run_id) as rid:
        return _evaluate(suite, scenario, scorers, model, store, n, rid, data_dir, concurrency, started, reach)


def _load_scorers(scorers: Sequence[Any], ctx: ScoringContext) -> None:
    """Load what the built-in scorers read (reward folder, trait set file) now, before any generation."""
    from traitlab.evals.scoring import JudgeScorer, RewardScorer

    for s in scorers:
        if isinstance(s, RewardScorer):
            s.reward(ctx)
        elif isinstance(s, JudgeScorer):
            s.trait_set(ctx)


def _evaluate(suite: Suite, scenario: Scenario, scorers: list[Any], model: str, store: Store, n: int, run_id: str,
              data_dir: Path | None, concurrency: int, started: Any, reach: dict[str, Any]) -> EvalResult:
    from traitlab.progress import track

    stored = {d.id for d in store.dialogues(run_id)}
    clients: dict[str, ChatModel] = {}

    def chat_model(name: str, **params: Any) -> ChatModel:
        key = f"{name}|{sorted(params.items())}"
        if key not in clients:
            clients[key] = ClientChat(model_client(name, store, run_id, concurrency, **{**reach, **params}))
        return clients[key]

    ctx = _context(suite, chat_model(model), data_dir, chat_model)
    todo = [c for c in scenario.plan(n, ctx) if c.id not in stored]
    with track(f"{suite.name}: conversations", len(todo)) as bar:

        def saved(batch: list[Dialogue]) -> None:
            store.add_dialogues(run_id, batch)
            bar.advance(len(batch))

        done, failed = run_sync(generate(scenario, todo, ctx, concurrency=concurrency, on_done=saved))
    dialogues = store.dialogues(run_id)
    summaries = score_run(store, run_id, dialogues, scorers,
                          ctx=ScoringContext(store=store, run_id=run_id, data_dir=data_dir, base_dir=suite.base_dir))
    reward_mean = next((s.mean for s in summaries.values() if s.mean is not None), None)
    scored = [set(store.artifact(run_id, f"scorer:{name}")["done"]) for name in summaries]
    unscored = sorted(d.id for d in dialogues if any(d.id not in done for done in scored))
    result = EvalResult(run_id=run_id, model=model, generated=len(done), resumed=len(stored), failed=sorted(failed),
                        n_dialogues=len(dialogues), reward_mean=reward_mean, scorers=summaries, unscored=unscored,
                        errors=store.failed_calls(run_id, since=started) or list(failed.values()))
    result.status = ("done" if not result.n_failed else
                     "failed" if not dialogues or len(unscored) == len(dialogues) else "partial")
    store.finish_run(run_id, result.status, result.model_dump(mode="json"))
    return result
