"""Discovery: statistics helpers, consolidation and validation on real HAL data, proposal bookkeeping, and
an end-to-end discover -> score -> validate run with the offline model."""

from __future__ import annotations

import json
from typing import ClassVar

import numpy as np
import pytest
from scipy.stats import false_discovery_control, spearmanr
from sklearn.metrics import roc_auc_score

from traitlab import stats
from traitlab.data import load_dialogues, load_proposals, load_ratings, load_trait_set, pair_dialogues
from traitlab.discovery.consolidate import (
    MergeAnswer,
    MergedTrait,
    build_clusters,
    consolidate,
    recall,
    statements_from_proposals,
    ward_labels,
)
from traitlab.discovery.propose import (
    ProposalAnswer,
    ProposalRecord,
    instructions,
    is_echo,
    pair_orders,
    position_bias,
    proposal_messages,
    propose,
    write_proposals,
)
from traitlab.discovery.validate import validate, write_table
from traitlab.judges.client import CallOutcome
from traitlab.presets.hal import CONTRAST as HAL
from traitlab.prompts import fenced_spans
from traitlab.types import Dialogue, Message, TraitRatings, TraitSet

NAN = np.nan
# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", the 4 observers x 12 units example.
KRIPP = [[1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN], [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
         [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN], [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN]]


# ---- stats -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("level", "value"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_krippendorff_alpha_matches_published_example(level, value):
    assert stats.krippendorff_alpha(KRIPP, level) == pytest.approx(value, abs=1e-3)


def test_krippendorff_alpha_perfect_and_undefined():
    assert stats.krippendorff_alpha([[1, 2, 3, 4], [1, 2, 3, 4]]) == pytest.approx(1.0)
    assert np.isnan(stats.krippendorff_alpha([[3, 3, 3], [3, 3, 3]]))


def test_auc_effect_sizes_and_fdr_against_references():
    rng = np.random.default_rng(1)
    h, a = rng.integers(1, 6, 60), rng.integers(1, 6, 45)
    assert stats.auc(h, a) == pytest.approx(roc_auc_score([1] * 60 + [0] * 45, np.r_[h, a]))
    assert stats.cliffs_delta(h, a) == pytest.approx(2 * stats.auc(h, a) - 1)
    assert stats.cohens_d([2, 4, 6], [1, 3, 5]) == pytest.approx(0.5)
    p = [0.001, 0.04, 0.03, 0.2, 0.5]
    assert stats.bh_fdr(p) == pytest.approx(false_discovery_control(p))
    lo, hi = stats.bootstrap_ci((h, a), stats.auc, n_boot=300)
    assert lo < stats.auc(h, a) < hi
    assert stats.mean_pairwise_spearman([[1, 2, 3, 4], [2, 3, 4, 5], [4, 3, 2, 1]]) == pytest.approx(-1 / 3)


def test_partial_spearman_ranks_the_control_out():
    rng = np.random.default_rng(0)
    length = rng.normal(size=500)
    a, b = length + 0.3 * rng.normal(size=500), length + 0.3 * rng.normal(size=500)
    assert stats.partial_spearman(a, b, length) == pytest.approx(0.0, abs=0.1)  # agree only through length
    shared = rng.normal(size=500)
    c, d = shared + 0.3 * rng.normal(size=500), shared + 0.3 * rng.normal(size=500)
    assert stats.partial_spearman(c, d, length) == pytest.approx(spearmanr(c, d).statistic, abs=0.03)


# ---- consolidation -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def proposals(shared_data):
    return load_proposals(shared_data / "hal_turing" / "proposals.jsonl")[:40]


@pytest.fixture(scope="module")
def embed(proposals):
    """Embeddings of the test proposals computed once, looked up by text (consolidate takes any embedder)."""
    from traitlab.embed import embed_texts

    texts = list(dict.fromkeys(s.text for s in statements_from_proposals(proposals)))
    table = dict(zip(texts, embed_texts(texts), strict=True))
    return lambda batch: np.stack([table[t] for t in batch])


def test_statements_keep_provenance_and_skip_failed_calls():
    recs = [{"game_id": "g1", "proposer": "m", "statements": ["Uses slang.", "  "]},  # HAL's records
            {"group": "g2", "proposer": "m", "statements": [], "error": "timeout"},
            {"group": "g3", "proposer": "m", "order": "negative_first", "statements": ["Makes typos."]}]
    st = statements_from_proposals(recs)
    assert [(s.id, s.text, s.group) for s in st] == [("g1#0", "Uses slang.", "g1"),
                                                     ("g3#negative_first:0", "Makes typos.", "g3")]


def test_consolidate_real_proposals_medoid_fallback(proposals, embed, tmp_path):
    result = consolidate(proposals, n_traits=12, name="t", source="proposals.jsonl", embed=embed)
    ts = result.trait_set
    statements = {s.id: s for s in statements_from_proposals(proposals)}
    assert result.method == "medoid" and result.n_games == 40
    assert 2 <= len(ts.traits) <= 12 and len(ts.traits) == len(result.clusters)
    for t, c in zip(ts.traits, result.clusters, strict=True):
        members = [statements[p] for p in t.provenance.proposals]
        assert t.text in {m.text for m in members}  # the medoid is one of its cluster's statements
        assert t.provenance.support == len({m.group for m in members}) >= 2  # 1% of 40 games, at least 2
        assert t.provenance.proposers == ["gpt-5"] and len(members) == len(c.members)
    supports = [t.provenance.support for t in ts.traits]
    assert supports == sorted(supports, reverse=True)
    again = load_trait_set(ts.save(tmp_path / "traits.json"))
    assert again.hash == ts.hash and again.traits[0].provenance == ts.traits[0].provenance
    score, matches = recall(ts, ts, embed=embed)
    assert score == 1.0 and all(m[0] == tid for tid, m in matches.items())


def test_ward_clusters_separate_distinct_topics():
    from traitlab.embed import embed_texts

    texts = ["Uses slang and abbreviations.", "Writes with casual slang and shorthand.", "Uses lots of slang.",
             "Asks the other person questions back.", "Asks follow-up questions about the partner.",
             "Returns questions to the interrogator."]
    emb = embed_texts(texts)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    labels = ward_labels(emb, 2)
    assert len(set(labels[:3])) == 1 and len(set(labels[3:])) == 1 and labels[0] != labels[3]


class _MergeClient:
    """Returns a fixed merge answer: exercises how llm_merge maps cluster ids to provenance."""

    model = "scripted-merger"

    def __init__(self, answer: MergeAnswer | None, error: str | None = None):
        self.answer, self.error, self.requests, self.params = answer, error, [], {}

    def call_many(self, requests, progress=None):
        self.requests.extend(requests)
        return [CallOutcome(call_id="c1", value=self.answer, error=self.error)]


def test_llm_merge_maps_clusters_and_falls_back(proposals, embed):
    ans = MergeAnswer(traits=[
        MergedTrait(text="Writes casually.", group="style", clusters=[1, 2, 999]),
        MergedTrait(text="Shares personal details.", group="self", clusters=[3]),
        MergedTrait(text="writes  casually.", group="dupe", clusters=[4]),
        MergedTrait(text="Mentions plans.", group="self", clusters=[5, 6])])
    client = _MergeClient(ans)
    res = consolidate(proposals, client=client, contrast=HAL, n_traits=12, embed=embed)
    assert res.method == "llm" and [t.text for t in res.trait_set.traits] == [
        "Writes casually.", "Shares personal details.", "Mentions plans."]
    by_id = {c.id: c for c in res.clusters}
    assert len(res.trait_set.traits[0].provenance.proposals) == len(by_id[1].members) + len(by_id[2].members)
    prompt = client.requests[0].messages[1]["content"]
    spans = fenced_spans(prompt)
    listing = prompt[spans[0][0]:spans[0][1]]
    assert len(spans) == 1 and prompt.count("C1 (support") == listing.count("C1 (support") == 1
    failed = consolidate(proposals, client=_MergeClient(None, error="timeout"), contrast=HAL, n_traits=12,
                         embed=embed)
    assert failed.method == "medoid" and "timeout" in failed.note
    too_few = consolidate(proposals, client=_MergeClient(MergeAnswer(traits=ans.traits[:1])), contrast=HAL, n_traits=12,
                          embed=embed)
    assert too_few.method == "medoid" and "1 usable traits" in too_few.note


def test_build_clusters_drops_thin_support():
    from traitlab.discovery.consolidate import Statement

    st = [Statement(id=f"g{g}#0", text=str(g), group=f"g{g}") for g in (1, 2, 3, 3)]
    emb = np.eye(4)
    cl = build_clusters(st, emb, np.array([0, 0, 1, 1]), min_games=2)
    assert [c.games for c in cl] == [["g1", "g2"]]


# ---- validation --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hal(shared_data):
    d = shared_data / "hal_turing"
    return (load_dialogues(d / "dialogues.jsonl"), load_ratings(d / "judge_ratings.jsonl"),
            load_trait_set(d / "traits_hal32.json"))


def test_validate_real_hal_ratings(hal, tmp_path):
    labels, ratings, traits = hal
    sub = TraitSet(name="hal8", traits=[traits[t] for t in ("t02", "t03", "t04", "t20", "t22", "t11")])
    two = [r for r in ratings if r.judge in ("gpt-5", "gpt-4.1")]
    rep = validate(two, labels, sub)  # the contrast comes from the HAL preset, whose labels these are
    assert rep.contrast.name == "hal" and rep.judges == ["gpt-4.1", "gpt-5"] and len(rep.rows) == 12
    row = {(r.trait_id, r.judge): r for r in rep.rows}
    # reciprocity (t20) is rated higher for AI witnesses by every judge; t22 separates nothing
    assert all(row["t20", j].auc < 0.4 and row["t20", j].significant and row["t20", j].direction == "negative"
               for j in rep.judges)
    assert not any(row["t22", j].significant for j in rep.judges)
    assert all(r.q >= r.p and r.n_positive == r.n_negative == 428 for r in rep.rows)
    assert ["t02", "t03", "t04"] in rep.redundant_groups
    assert "t20" in rep.selected and "t22" not in rep.selected
    assert sum(t in rep.selected for t in ("t02", "t03", "t04")) <= 1
    assert 0.5 < rep.agreement["t03"] <= 1 and rep.agreement["t22"] < rep.agreement["t03"]
    csv_text = write_table(rep, tmp_path / "v.csv").read_text()
    assert csv_text.splitlines()[0].startswith("trait_id,text,judge") and len(csv_text.splitlines()) == 13
    assert json.loads(write_table(rep, tmp_path / "v.json").read_text())["selected"] == rep.selected


def test_validate_needs_matching_labels():
    ts = TraitSet(name="x", traits=[{"id": "a", "text": "A."}])
    r = [TraitRatings(dialogue_id="d1", judge="j", ratings={"a": 3})]
    with pytest.raises(ValueError, match="dialogue ids"):
        validate(r, [Dialogue(id="other", label="human", target_role="w", messages=[Message(role="w", content="x")]),
                     Dialogue(id="o2", label="ai", target_role="w", messages=[Message(role="w", content="y")])], ts)
    with pytest.raises(ValueError, match="--positive LABEL --negative LABEL"):  # labels no preset knows
        validate(r, [Dialogue(id="d1", label="best", target_role="w", messages=[Message(role="w", content="x")])], ts)


# ---- proposal bookkeeping ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pairs(shared_data):
    return pair_dialogues(load_dialogues(shared_data / "hal_turing" / "dialogues.jsonl"))


def test_pair_orders_are_seeded_per_pair(pairs):
    first = {p.id: pair_orders(p, 0, False) for p in pairs[:40]}
    assert first == {p.id: pair_orders(p, 0, False) for p in reversed(pairs[:40])}
    assert {o[0] for o in first.values()} == {"positive_first", "negative_first"}
    assert first != {p.id: pair_orders(p, 1, False) for p in pairs[:40]}
    assert pair_orders(pairs[0], 0, True) == ["positive_first", "negative_first"]


def test_proposal_prompt_hides_labels_and_fences_both_sides(pairs):
    pair = pairs[0]
    messages, version, shown_a, shown_b = proposal_messages(pair, "negative_first", HAL)
    user = messages[1]["content"]
    spans = fenced_spans(user)
    assert version.startswith("propose@v2#") and len(spans) == 2
    ai = next(d for d in (pair.a, pair.b) if d.label == "ai")
    assert (shown_a, shown_b) == (ai.id, pair.side("human").id)
    assert user[spans[0][0]:spans[0][1]].strip() == ai.transcript()
    full = messages[0]["content"] + user
    for word in ("label", pair.a.id, pair.b.id, ai.meta.get("witness", "@@")):
        assert word not in full


def test_position_bias_and_proposals_file(tmp_path):
    def rec(game, order, picked):
        human = "A" if order == "positive_first" else "B"
        a, b = (f"{game}-h", f"{game}-a") if order == "positive_first" else (f"{game}-a", f"{game}-h")
        return ProposalRecord(group=game, proposer="m", order=order, shown_a=a, shown_b=b, positive_side=human,
                              picked=picked, verdict_correct=picked == human, confidence=50,
                              statements=["Uses casual slang."], prompt_version="p")

    recs = [rec("1", "positive_first", "A"), rec("1", "negative_first", "A"), rec("2", "positive_first", "A"),
            rec("2", "negative_first", "B"),
            ProposalRecord(group="3", proposer="m", order="negative_first", shown_a="x", shown_b="y", positive_side="B",
                           prompt_version="p", error="timeout")]
    bias = position_bias(recs)
    assert bias == {"n": 5, "failed": 1, "accuracy": 0.75, "accuracy_positive_first": 1.0,
                    "accuracy_negative_first": 0.5,
                    "picked_a_rate": 0.75, "pairs_both_orders": 2, "consistency": 0.5,
                    "rejected_statements": 0}
    back = load_proposals(write_proposals(recs, tmp_path / "p.jsonl"))
    assert [r["verdict_correct"] for r in back] == [True, False, True, True, None]
    assert len(statements_from_proposals(back)) == 4


# ---- end to end with the offline model ---------------------------------------------------------------
@pytest.mark.slow
def test_discover_score_validate_end_to_end(shared_data, tmp_path):
    """discover (2 pairs, local judge, joined to given proposals) -> score (4 dialogues, 4 traits) -> validate."""
    from typer.testing import CliRunner

    from traitlab.cli import app
    from traitlab.store import Store

    turing = shared_data / "hal_turing"
    dialogues = tmp_path / "dialogues.jsonl"
    keep = {d.id for p in pair_dialogues(load_dialogues(turing / "dialogues.jsonl"))[:2] for d in (p.a, p.b)}
    dialogues.write_text("".join(line for line in (turing / "dialogues.jsonl").open()
                                 if json.loads(line)["id"] in keep))
    db, traits = tmp_path / "s.duckdb", tmp_path / "traits.json"
    given = tmp_path / "given.jsonl"  # GPT-5's proposals of 40 games: the 135M model's own mostly echo the prompt
    given.write_text("".join((turing / "proposals.jsonl").read_text().splitlines(keepends=True)[:40]))
    runner = CliRunner()
    r = runner.invoke(app, ["discover", "--pairs", str(dialogues), "--proposals", str(given), "--out", str(traits),
                            "--merge-judge", "none", "--store", str(db)])
    assert r.exit_code == 0, r.output
    assert "statements echoing the prompt dropped" in r.output
    ts = load_trait_set(traits)
    small = tmp_path / "small.json"
    TraitSet(name="small", traits=ts.traits[:4]).save(small)
    r = runner.invoke(app, ["score", "--dialogues", str(dialogues), "--traits", str(small), "--store", str(db)])
    assert r.exit_code == 0, r.output
    score_run = r.output.strip().splitlines()[-1]
    r = runner.invoke(app, ["validate", "--run", score_run, "--dialogues", str(dialogues), "--traits", str(small),
                            "--out", str(tmp_path / "v.csv"), "--store", str(db)])
    assert r.exit_code == 0, r.output
    with Store(db) as st:
        kinds = [x["kind"] for x in st.runs()]
        assert kinds == ["discover", "score", "validate"]
        discover_run = st.runs("discover")[0]["run_id"]
        acc = st.artifact(discover_run, "judge_accuracy")
        assert acc["n"] == 2 and acc["judge"] == "local/smollm2-135m"
        rated = st.ratings(score_run)
        assert {x.dialogue_id for x in rated} <= keep and all(x.trait_set_hash == load_trait_set(small).hash
                                                              for x in rated)
        assert all(1 <= v <= 5 for x in rated for v in x.ratings.values())
        val = st.artifact(st.runs("validate")[0]["run_id"], "validation")
        assert val["trait_set_hash"] == load_trait_set(small).hash
    assert (tmp_path / "v.csv").read_text().startswith("trait_id,")


# ---- the prompt's own words never come back as traits ------------------------------------------------
class _ScriptedProposer:
    """Answers every proposal with the given traits (what a small model that copies the prompt does)."""

    model = "scripted-proposer"
    params: ClassVar[dict] = {}

    def __init__(self, traits):
        self.traits = traits

    def call_many(self, requests, progress=None):
        ans = ProposalAnswer(positive="A", confidence=50, traits=self.traits, negative_tells=["<what marked them>"])
        return [CallOutcome(call_id=f"c{i}", value=ans) for i, _ in enumerate(requests)]


def test_proposals_that_echo_the_prompt_are_dropped(pairs):
    echoes = ["<first trait of the human>", "a list of 3-5 statements about the human witness",
              "traits_negative_tells", "Write your own statements from what you read"]
    real = "Uses lowercase and skips punctuation."
    recs = propose(pairs[:2], _ScriptedProposer([*echoes, real]), HAL)
    assert [r.statements for r in recs] == [[real], [real]]
    assert recs[0].rejected == [*echoes, "<what marked them>"] and recs[0].negative_tells == []
    assert position_bias(recs)["rejected_statements"] == 10
    prompt = instructions(proposal_messages(pairs[0], "positive_first", HAL)[0])
    assert not is_echo(real, prompt) and is_echo("the human witness", prompt)
    assert "human" in prompt and "$" not in prompt  # the contrast filled every placeholder


@pytest.mark.slow
def test_offline_model_placeholders_never_become_traits(pairs):
    """The offline model copies the answer format; what it copies is rejected, what is kept is not an echo."""
    from traitlab.judges.rate import judge_client

    recs = propose(pairs[:1], judge_client("local/smollm2-135m"), HAL)
    prompt = instructions(proposal_messages(pairs[0], recs[0].order, HAL)[0])
    assert recs[0].error is None and recs[0].rejected
    assert not any(is_echo(s, prompt) for r in recs for s in r.statements)
