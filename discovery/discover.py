"""``discover``: contrastive dialogues (or given proposals) -> a TraitSet, as one library call.

Proposing (:mod:`.propose`) asks a judge, pair by pair, what sets the contrast's positive side apart;
consolidation (:mod:`.consolidate`) clusters the statements and merges them into traits. With a store the
whole call is one ``discover`` run holding the proposals, the judge's accuracy and the trait set, and a
failure marks the run failed before the error propagates.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from traitlab.contrast import Contrast
from traitlab.data import pair_dialogues
from traitlab.discovery.consolidate import ConsolidationResult, consolidate
from traitlab.discovery.propose import ProposalRecord, position_bias, propose, write_proposals
from traitlab.types import Dialogue, DialoguePair, TraitSet

if TYPE_CHECKING:
    from traitlab.judges.client import JudgeClient
    from traitlab.store import Store


class DiscoveryResult(BaseModel):
    """The trait set and how it was made."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    trait_set: TraitSet
    contrast: Contrast
    consolidation: ConsolidationResult
    proposals: list[ProposalRecord] = []
    """Proposals made by this call (empty when proposals were given)."""
    proposals_path: Path | None = None
    judge_accuracy: dict[str, Any] | None = None
    run_id: str | None = None


def discover(dialogues: Sequence[DialoguePair] | Sequence[Dialogue] | None = None,
             client: JudgeClient | str | None = "local/smollm2-135m", contrast: Contrast | None = None, *,
             proposals: Sequence[dict[str, Any]] | None = None, limit: int | None = None,
             both_orders: bool = False, seed: int = 0, n_traits: int | None = None, min_games: int | None = None,
             merge_client: JudgeClient | str | None = "same", name: str = "discovered", source: str = "",
             proposals_out: str | Path | None = None, budget_usd: float | None = None,
             store: Store | None = None, config: dict[str, Any] | None = None,
             client_kwargs: dict[str, Any] | None = None) -> DiscoveryResult:
    """Discover traits from contrastive ``dialogues`` (pairs, or dialogues paired by the contrast's group)
    with ``client`` (a JudgeClient or a LiteLLM model name), or consolidate given ``proposals``; with both,
    the new proposals are consolidated together with the given ones (e.g. a second judge's).

    ``merge_client`` merges the clusters into traits: ``"same"`` = ``client``, None = medoids only.
    ``contrast`` defaults to :meth:`Contrast.resolve` on the dialogues' labels. ``proposals_out`` keeps the new
    proposals as JSONL. ``config`` is what the store records as the run's configuration.
    """
    if dialogues is None and proposals is None:
        raise ValueError("give dialogues (propose, then consolidate), proposals (consolidate), or both")
    if dialogues is not None:
        flat = [d for x in dialogues for d in ((x.a, x.b) if isinstance(x, DialoguePair) else (x,))]
        contrast = Contrast.resolve(contrast, flat)
    elif contrast is None:
        raise ValueError("consolidating proposals needs the contrast they describe (contrast=)")
    run_id = store.start_run("discover", name, config or {"name": name}) if store is not None else None
    try:
        result = _discover(dialogues, client, contrast, proposals, limit=limit, both_orders=both_orders,
                           seed=seed, n_traits=n_traits, min_games=min_games, merge_client=merge_client, name=name,
                           source=source, proposals_out=proposals_out, budget_usd=budget_usd, store=store,
                           client_kwargs=client_kwargs,
                           run_id=run_id)
    except BaseException as e:
        if store is not None and run_id is not None:
            store.finish_run(run_id, "failed", {"error": str(e)})
        raise
    if store is not None and run_id is not None:
        ts = result.trait_set
        summary = {"traits": len(ts.traits), "hash": ts.hash, "method": result.consolidation.method,
                   "note": result.consolidation.note, "statements": result.consolidation.n_statements,
                   "games": result.consolidation.n_games}
        if result.proposals:
            store.put_artifact(run_id, "proposals", [r.model_dump(mode="json") for r in result.proposals])
            store.put_artifact(run_id, "judge_accuracy", result.judge_accuracy)
        store.put_artifact(run_id, "contrast", contrast.model_dump(mode="json"))
        store.put_artifact(run_id, "trait_set", {**ts.model_dump(mode="json"), "hash": ts.hash})
        store.put_artifact(run_id, "consolidation", {**summary, "clusters": [
            {**c.model_dump(), "support": c.support} for c in result.consolidation.clusters]})
        store.finish_run(run_id, "done", summary)
        result = result.model_copy(update={"run_id": run_id})
    return result


def _client(client: JudgeClient | str, store: Store | None, run_id: str | None, **kw: Any) -> JudgeClient:
    from traitlab.judges.rate import judge_client

    return judge_client(client, store=store, run_id=run_id, **kw) if isinstance(client, str) else client


def _discover(dialogues, client, contrast: Contrast, proposals, *, limit, both_orders, seed, n_traits, min_games,
              merge_client, name, source, proposals_out, budget_usd, store, run_id,
              client_kwargs=None) -> DiscoveryResult:
    made: list[ProposalRecord] = []
    path, accuracy = None, None
    records = list(proposals or [])
    if dialogues is not None:
        pairs = [x for x in dialogues if isinstance(x, DialoguePair)] or pair_dialogues(list(dialogues), contrast)
        pairs = pairs[:limit]
        if not pairs:
            raise ValueError(f"no {contrast.positive}/{contrast.negative} pair: dialogues are paired by "
                             f"meta {contrast.group!r} (or 'group'/'game_id'), one dialogue of each label")
        if client is None:
            raise ValueError("proposing needs a judge (client=)")
        client = _client(client, store, run_id, budget_usd=budget_usd, **(client_kwargs or {}))
        made = propose(pairs, client, contrast, seed=seed, both_orders=both_orders)
        accuracy = {"judge": client.model, **position_bias(made)}
        if proposals_out is not None:
            path = write_proposals(made, proposals_out)
        records += [r.model_dump(mode="json") for r in made]
        source = source or (str(path) if path else "proposals")
    if merge_client == "same":
        merge_client = client
    merger = None if merge_client is None else _client(merge_client, store, run_id, **(client_kwargs or {}))
    result = consolidate(records, client=merger, contrast=contrast, n_traits=n_traits, min_games=min_games,
                         name=name, source=source)
    return DiscoveryResult(trait_set=result.trait_set, contrast=contrast, consolidation=result, proposals=made,
                           proposals_path=path, judge_accuracy=accuracy)
