"""The calibrated aggregator: HL16 reproduction, id safety, grouped CV, calibration, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from traitlab.data import DataError, load_dialogues, load_ratings, load_trait_set
from traitlab.judges import cli as judges_cli
from traitlab.judges.aggregate import (
    Aggregator,
    TraitMismatchError,
    average_judges,
    expected_calibration_error,
    fit_aggregator,
    fit_arrays,
    grouped_folds,
    pairwise_accuracy,
    reliability_bins,
)
from traitlab.presets.hal import game_id
from traitlab.presets.hal.traits import aggregator_from_hl16
from traitlab.store import Store
from traitlab.types import TraitRatings


@pytest.fixture(scope="module")
def hal(shared_data):
    d = shared_data / "hal_turing"
    return {"dir": d, "dialogues": load_dialogues(d / "dialogues.jsonl"),
            "gpt5": load_ratings(d / "judge_ratings.jsonl", judge="gpt-5"),
            "traits": load_trait_set(d / "traits_hal32.json")}


@pytest.fixture(scope="module")
def gpt5_fit(hal):
    return fit_aggregator(hal["gpt5"], hal["dialogues"], hal["traits"], penalty="l1", C=1.0, folds=5, seed=0,
                          n_bootstrap=30)


def test_hl16_weights_by_id_reproduce_pairwise_accuracy(hal):
    agg = aggregator_from_hl16(hal["dir"] / "hl16_weights.json", hal["traits"])
    assert len(agg.trait_ids) == 16 and agg.trait_set_hash == hal["traits"].hash
    scores = {r.dialogue_id: agg.logit(r) for r in hal["gpt5"]}
    assert len(scores) == 856
    acc = pairwise_accuracy(scores, hal["dialogues"])
    assert acc == 367 / 428  # README: 0.8575 on the 428 staged games, ties counted as failures
    assert round(acc, 4) == 0.8575
    ids = hal["traits"].ids
    X = np.array([r.vector(ids) for r in hal["gpt5"]])
    np.testing.assert_allclose(agg.logit_matrix(X, ids), [scores[r.dialogue_id] for r in hal["gpt5"]])


def test_positional_or_foreign_ratings_are_refused(hal):
    agg = aggregator_from_hl16(hal["dir"] / "hl16_weights.json", hal["traits"])
    r = hal["gpt5"][0]
    with pytest.raises(TypeError, match="keyed by trait id"):
        agg.logit(r.vector(agg.trait_ids))  # a positional list, HAL's bug
    with pytest.raises(TypeError, match="positional ndarray"):
        agg.p_human(np.array(r.vector(agg.trait_ids)))
    renamed = {f"q{i}": v for i, v in enumerate(r.ratings.values())}
    with pytest.raises(TraitMismatchError, match=r"'t01', 't02'"):
        agg.logit(renamed)
    missing_one = {k: v for k, v in r.ratings.items() if k != "t24"}
    with pytest.raises(TraitMismatchError, match=r"\['t24'\]"):
        agg.logit(missing_one)
    other_set = TraitRatings(dialogue_id="x", judge="j", ratings=r.ratings, trait_set_hash="0123456789abcdef")
    with pytest.raises(TraitMismatchError, match="0123456789abcdef"):
        agg.logit(other_set)
    assert agg.logit(r.model_copy(update={"trait_set_hash": hal["traits"].hash})) == agg.logit(r.ratings)
    # columns are matched by name: reordering the matrix and its ids changes nothing
    ids = hal["traits"].ids
    X = np.array([x.vector(ids) for x in hal["gpt5"][:20]])
    perm = np.random.default_rng(0).permutation(len(ids))
    np.testing.assert_allclose(agg.logit_matrix(X[:, perm], [ids[i] for i in perm]), agg.logit_matrix(X, ids))
    with pytest.raises(TraitMismatchError, match="t01"):
        agg.logit_matrix(X, [f"c{i}" for i in range(len(ids))])


def test_hl16_file_errors_name_the_field(tmp_path):
    bad = tmp_path / "w.json"
    bad.write_text(json.dumps({"bias": 0.1, "weights": [0.5, 0.2]}))
    with pytest.raises(DataError, match=r"w.json \[weights\]"):
        aggregator_from_hl16(bad)
    bad.write_text(json.dumps({"bias": "x", "weights": {"t01": 1.0}}))
    with pytest.raises(DataError, match=r"\[bias\]"):
        aggregator_from_hl16(bad)


def test_grouped_cv_keeps_both_transcripts_of_a_game_in_one_fold(hal, gpt5_fit):
    _, rep = gpt5_fit
    fold_of_game: dict[str, set[int]] = {}
    for g, f in zip(rep.groups, rep.fold, strict=True):
        fold_of_game.setdefault(g, set()).add(f)
    assert len(fold_of_game) == 428
    assert all(len(fs) == 1 for fs in fold_of_game.values())
    by_id = {d.id: d for d in hal["dialogues"]}
    assert all(game_id(by_id[i]) == g for i, g in zip(rep.ids, rep.groups, strict=True))
    sizes = np.bincount(rep.fold)
    assert len(sizes) == 5 and sizes.min() >= 170 and sizes.max() <= 172  # 856 rows, 428 games of 2
    groups = [f"g{i // 2}" for i in range(40)]
    assert not np.array_equal(grouped_folds(groups, 4, seed=0), grouped_folds(groups, 4, seed=1))
    with pytest.raises(ValueError, match="at least as many games"):
        grouped_folds(groups[:6], 4)


def test_ece_small_when_calibrated_large_when_not():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=20_000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    assert expected_calibration_error(p, y) < 0.02
    overconfident = np.where(p > 0.5, 0.99, 0.01)
    assert expected_calibration_error(overconfident, y) > 0.2
    assert expected_calibration_error(np.full(10, 0.9), np.array([1] * 5 + [0] * 5)) == pytest.approx(0.4)
    bins = reliability_bins(p, y, bins=10)
    assert sum(b.count for b in bins) == p.size and len(bins) == 10
    assert all(abs(b.mean_predicted - b.observed_rate) < 0.03 for b in bins)


def test_cv_fit_on_gpt5_ratings(hal, gpt5_fit, tmp_path):
    agg, rep = gpt5_fit
    assert rep.cv.pairwise_accuracy > 0.8 and rep.cv.n_pairs == 428
    assert rep.cv.auc > 0.8 and rep.cv.ece < 0.1 and rep.cv.accuracy > 0.7
    oof = dict(zip(rep.ids, rep.oof_logit, strict=True))
    assert pairwise_accuracy(oof, hal["dialogues"]) == rep.cv.pairwise_accuracy
    t01 = rep.traits["t01"]  # "brief and casual": the strongest human signal in HAL too
    assert t01.weight > 0.5 and t01.ci_low > 0 and t01.selection_freq == 1.0
    assert "t01" in rep.selected_threshold and set(rep.selected_stable) <= set(rep.traits)
    assert agg.trait_set_hash == hal["traits"].hash and agg.calibration.method == "platt"
    # the raw-scale weights give the same logits as the standardised model
    w, b = agg.raw_weights()
    r = hal["gpt5"][3]
    assert agg.logit(r) == pytest.approx(b + sum(w[t] * r.ratings[t] for t in w))
    loaded = Aggregator.load(agg.save(tmp_path / "agg.json"))
    assert [loaded.p_human(x) for x in hal["gpt5"][:50]] == [agg.p_human(x) for x in hal["gpt5"][:50]]


def test_fit_arrays_recovers_a_sparse_truth_with_each_penalty():
    rng = np.random.default_rng(1)
    ids = [f"x{i}" for i in range(8)]
    X = rng.normal(size=(600, 8))
    y = (rng.uniform(size=600) < 1 / (1 + np.exp(-(2 * X[:, 0] - 1.5 * X[:, 3])))).astype(int)
    groups = [f"g{i // 2}" for i in range(600)]
    agg, rep = fit_arrays(X, y, groups, ids, penalty="l1", C=0.05, calibration="isotonic", n_bootstrap=20)
    assert {"x0", "x3"} <= set(agg.trait_ids) and len(agg.trait_ids) <= 5
    assert agg.weights["x0"] > 0 > agg.weights["x3"]
    assert set(rep.selected_stable) >= {"x0", "x3"} and rep.traits["x0"].selection_freq == 1.0
    assert agg.calibration.method == "isotonic" and 0.0 <= agg.p_human(dict(zip(ids, X[0], strict=True))) <= 1.0
    for penalty in ("l2", "elasticnet"):
        agg2, rep2 = fit_arrays(X, y, groups, ids, penalty=penalty, n_bootstrap=0, calibration="none")
        assert rep2.cv.auc > 0.75 and rep2.traits["x0"].ci_low is None and agg2.weights["x0"] > 0
    with pytest.raises(ValueError, match="both labels"):
        fit_arrays(X, np.ones(600), groups, ids)
    _, unpaired = fit_arrays(X, y, [f"g{i}" for i in range(600)], ids, n_bootstrap=0)
    assert unpaired.cv.pairwise_accuracy is None and unpaired.cv.n_pairs == 0 and unpaired.cv.auc > 0.75


def test_fit_inputs_are_checked(hal):
    two_judges = [*hal["gpt5"][:4], hal["gpt5"][0].model_copy(update={"judge": "other"})]
    with pytest.raises(ValueError, match="rated twice"):
        fit_aggregator(two_judges, hal["dialogues"], hal["traits"])
    stray = [hal["gpt5"][0].model_copy(update={"dialogue_id": "nope-A"})]
    with pytest.raises(ValueError, match="nope-A"):
        fit_aggregator(stray, hal["dialogues"], hal["traits"])


def test_average_judges_means_each_trait():
    a = TraitRatings(dialogue_id="d", judge="a", ratings={"t1": 1.0, "t2": 4.0, "t3": 2.0})
    b = TraitRatings(dialogue_id="d", judge="b", ratings={"t1": 2.0, "t2": 5.0})
    (m,) = average_judges([a, b])
    assert m.ratings == {"t1": 1.5, "t2": 4.5} and m.judge == "mean"


def test_cli_fit_writes_aggregator_report_and_run(hal, tmp_path):
    app = typer.Typer()
    app.callback()(lambda: None)  # keep "fit" a subcommand, as in the traitlab app
    judges_cli.register(app)
    d = hal["dir"]
    out, report, db = tmp_path / "agg.json", tmp_path / "rep.json", tmp_path / "s.duckdb"
    res = CliRunner().invoke(app, ["fit", "--ratings", str(d / "judge_ratings.jsonl"), "--judge", "gpt-5",
                                   "--dialogues", str(d / "dialogues.jsonl"), "--traits", str(d / "traits_hal32.json"),
                                   "--penalty", "l1", "--C", "0.5", "--bootstrap", "5", "--select", "threshold",
                                   "--out", str(out),
                                   "--report", str(report), "--store", str(db)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "pairwise" in res.output and "gpt-5" in res.output
    agg = Aggregator.load(out)
    rep = json.loads(report.read_text())
    assert agg.meta["C"] == 0.5 and rep["cv"]["pairwise_accuracy"] > 0.8
    assert "threshold (refit)" in res.output and set(agg.weights) < set(hal["traits"].ids)
    assert agg.trait_set_hash == hal["traits"].hash
    with Store(db) as st:
        (run,) = st.runs("fit")
        assert run["status"] == "done" and run["config"]["judge"] == "gpt-5"
        assert st.artifact(run["run_id"], "aggregator")["weights"] == agg.weights
        assert st.artifact(run["run_id"], "fit_report")["cv"] == rep["cv"]
        first = st.artifact(run["run_id"], "fit_report_all_traits")
        assert set(agg.weights) == set(first["selected_threshold"])
    no_judge = CliRunner().invoke(app, ["fit", "--ratings", str(d / "judge_ratings.jsonl"), "--dialogues",
                                        str(d / "dialogues.jsonl"), "--traits", str(d / "traits_hal32.json"),
                                        "--out", str(tmp_path / "x.json"), "--store", str(db)],
                                  env={"COLUMNS": "200"})
    assert no_judge.exit_code == 2 and "rated twice" in no_judge.output and not (tmp_path / "x.json").exists()
