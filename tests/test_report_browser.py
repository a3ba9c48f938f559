"""The HTML report: built from a store of sample + synthetic data (no model call), checked as text and in
headless Chromium (plots drawn with a size, dialogue text inert, the headline first, every trait label
showing its text, long lines wrapped, direction overrides isolated). Needs the Debian packages ``chromium``
and ``chromium-driver`` and the pip package ``selenium``; screenshots land in test-artifacts/."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import pytest

from traitlab.data import sample_dialogues, sample_trait_set
from traitlab.evals.report import SCORES_ARTIFACT, build_report, compare_runs
from traitlab.evals.svg import el, esc
from traitlab.types import Dialogue, Message, TraitRatings

REPO = Path(__file__).resolve().parent.parent
EVIL = ("<script>document.title='pwned';window.__pwned=1</script></textarea>"
        "<img src=x onerror=\"document.title='pwned';window.__pwned=2\"><svg onload=\"window.__pwned=3\">")
RLO = "\u202etxt.exe"
"""A right-to-left override that, unisolated, would reverse the text after it (the page's own words too)."""
LONG = "x" * 100_000


def _evil_dialogue() -> Dialogue:
    return Dialogue(id="evil</code><script>window.__pwned=4</script>", target_role="witness",
                    messages=[Message(role="interrogator", content=f"hi <b>there</b> {RLO} {LONG}"),
                              Message(role="witness", content=EVIL + RLO)])


def fill_store(store, shift: float = 1.0) -> list[str]:
    """Two eval runs over the sample dialogues (+ one hostile dialogue, ranked top): ``aligned`` rates tl02
    and the score higher by ``shift``; an align-style before/after table and flags on the second run."""
    ts, ds = sample_trait_set(), [*sample_dialogues(), _evil_dialogue()]
    rng = random.Random(0)
    for k, run in enumerate(("base", "aligned")):
        store.start_run("eval", run, {"model": f"local/smollm2-135m-{run}"}, run_id=run)
        store.add_dialogues(run, ds)
        store.add_ratings(run, [TraitRatings(dialogue_id=d.id, judge="local-reward", trait_set_hash=ts.hash,
                                             ratings={t: rng.gauss(3.0 + shift * k * (t == "tl02"), 0.5)
                                                      for t in ts.ids}) for d in ds])
        scores = {d.id: rng.gauss(shift * k, 0.5) for d in ds}
        scores[ds[-1].id] = 99.0
        store.put_artifact(run, SCORES_ARTIFACT, {"scorer": "local-reward", "scores": scores})
        store.finish_run(run)
    ci = lambda m: {"mean": m, "lo": m - 0.2, "hi": m + 0.2, "n": 20}  # noqa: E731
    store.put_artifact("aligned", "before_after", {
        "steps": 40, "n_prompts": 20, "weights_source": EVIL,
        "score": {"before": ci(0.1), "after": ci(0.9), "delta": ci(0.8)},
        "traits": {"tl02": {"weight": 0.7, "before": ci(2.0), "after": ci(3.1), "delta": ci(1.1), "share": 0.8},
                   "tl12": {"weight": -0.4, "before": ci(2.0), "after": ci(2.1), "delta": ci(0.1), "share": 0.0}}})
    store.put_artifact("aligned", "flags", [{"step": 40, "kind": "against_sign", "trait": "tl12",
                                             "message": f"tl12 rose: {EVIL}"}])
    return ["base", "aligned"]


def fill_align(store) -> str:
    """An alignment run in the shapes of docs/CONTRACTS.md (before_after, monitor_log, flags, samples,
    train_log), on the sample trait set, plus a failed reward audit in the older key names."""
    ts = sample_trait_set()
    store.start_run("align", "dpo:local:smollm2-135m", {"kind": "dpo", "model": "local:smollm2-135m",
                                                      "trl": {"api_key": "sk-should-not-show"}}, run_id="align-1")
    store.put_artifact("align-1", "reward_trait_set", {**ts.model_dump(mode="json"), "hash": ts.hash})
    ci = lambda m, h=0.15: {"mean": m, "lo": m - h, "hi": m + h, "n": 8}  # noqa: E731
    moves = {t: 0.05 * (i % 3 - 1) for i, t in enumerate(ts.ids)} | {"tl01": 1.2, "tl08": -0.6, "tl04": -0.5}
    weights = {t: 0.3 if t not in ("tl04", "tl12", "tl11") else -0.3 for t in ts.ids}
    total = sum(weights[t] * d for t, d in moves.items())
    store.put_artifact("align-1", "before_after", {
        "level": 0.95, "steps": 8, "n_prompts": 8, "weights_source": "aggregator",
        "score": {"before": ci(0.2), "after": ci(0.8), "delta": ci(0.6, 0.3)},
        "traits": {t: {"weight": weights[t], "before": ci(3.0), "after": ci(3.0 + d), "delta": ci(d, 0.2),
                       "contribution": weights[t] * d, "share": weights[t] * d / total} for t, d in moves.items()},
        "parse_rate": {"before": 0.9, "after": 1.0}, "mean_chars": {"before": 210.0, "after": 95.0},
        "perplexity": {"before": 20.1, "after": 20.9}})
    store.put_artifact("align-1", "monitor_log", [
        {"step": s, "score": 0.2 + 0.075 * s, "traits": {t: 3.0 + d * s / 8 for t, d in moves.items()},
         "parse_rate": 1.0, "mean_chars": 200.0 - 13 * s, "perplexity": 20.0, "n_prompts": 8} for s in (0, 4, 8)])
    store.put_artifact("align-1", "flags", [
        {"step": 8, "kind": "dominant_trait", "trait": "tl01", "share": 0.7, "message": "tl01 explains 70% of it"},
        {"step": 8, "kind": "against_sign", "trait": "tl08", "message": f"tl08 fell {RLO}"}])
    store.put_artifact("align-1", "samples", [
        {"id": f"p{i}", "prompt": f"D: how are you feeling today? {i}",
         "before": {"completion": f"P: I have been feeling somewhat unwell, doctor, for {i} days. {RLO}",
                    "score": 0.1 * i, "traits": {"tl01": 2.0 + 0.1 * i, "tl08": 3.0}},
         "after": {"completion": f"P: meh. {i} days" + (f" {EVIL}" if i == 2 else ""), "score": 0.3 + 0.2 * i,
                   "traits": {"tl01": 3.0 + 0.2 * i, "tl08": 2.5 - 0.1 * i}}} for i in range(5)])
    store.put_artifact("align-1", "train_log", [{"step": s, "loss": 0.69 - 0.05 * s} for s in range(1, 9)])
    store.finish_run("align-1", summary={"kind": "dpo", "steps": 8})
    store.start_run("audit", "reward audit", {}, run_id="audit-1")
    store.put_artifact("audit-1", "reward_audit", {
        "passed": False, "threshold": 0.2, "reward": "default",
        "rows": [{"operator": "lowercase", "mean_shift_sd": 0.9, "share_above_median_positive": 0.45,
                  "mean_score": 1.1, "passed": False},
                 {"operator": "typos", "mean_shift_sd": 0.1, "share_above_median_positive": 0.05,
                  "mean_score": -0.5, "passed": True}],
        "best_composites": [{"operators": ["lowercase", "shorten"], "mean_shift_sd": 1.4,
                             "share_above_median_positive": 0.61, "mean_score": 1.6, "passed": False}]})
    store.finish_run("audit-1")
    return "align-1"


def test_builder_escapes_text_and_attributes():
    assert el("p", EVIL) == f"<p>{esc(EVIL)}</p>"
    assert "<script>" not in el("p", EVIL, title=EVIL)
    with pytest.raises(ValueError, match="bad tag"):
        el("p onclick=x")
    with pytest.raises(ValueError, match="bad attribute"):
        el("p", **{"on click": 1})


def test_comparison_finds_the_planted_shift(store):
    base, other = fill_store(store, shift=1.5)
    c = compare_runs(store, base, other)
    by = {(r.judge, r.trait_id): r for r in c.rows}
    assert by["local-reward", "tl02"].significant and by["local-reward", "tl02"].lo > 0
    assert by["local-reward (scalar)", "score"].diff > 1.0
    # 13 null traits: BH keeps (nearly) all of them insignificant
    assert sum(r.significant for r in c.rows if r.trait_id not in {"tl02", "score"}) <= 1
    assert all(r.q >= r.p for r in c.rows)


def test_report_files_and_escaping(store, tmp_path):
    paths = build_report(store, fill_store(store), tmp_path / "r" / "report.html")
    page = paths.html.read_text()
    assert not re.search(r"<(script|img|textarea)\b", page, re.IGNORECASE)
    assert not re.search(r"<[^>]*\son\w+\s*=", page), "an event-handler attribute made it into a tag"
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;" in page
    assert page.count("<svg") >= 7
    assert "after − before" in page and "against_sign" in page
    assert "Calibration on the labelled dialogues" in page  # the sample dialogues carry human/ai labels
    data = json.loads(paths.json_.read_text())
    assert [r["run_id"] for r in data["runs"]] == ["base", "aligned"]
    assert data["runs"][1]["high"][0]["dialogue_id"].startswith("evil")
    md = paths.md.read_text()
    assert "`aligned` − `base`" in md and re.search(r"\| local-reward \| Writes the way people type.* `tl02` \| \+", md)
    # the headline: the scalar's change with its CI, then the planted trait first among the movers
    h = next(h for h in data["headlines"] if h["kind"] == "runs")
    assert h["diff"] > 0 and h["lo"] < h["diff"] < h["hi"] and h["movers"][0]["trait_id"] == "tl02"
    assert 3 <= len(h["movers"]) <= 5 and "Writes the way people type" in h["summary"]
    assert page.index('class="headline"') < page.index("<svg")   # nothing is drawn before the headline
    # long lines are cut in the page (the JSON keeps them) and direction overrides are isolated
    assert LONG not in page and "more characters" in page
    assert all(page.rfind("<bdi>", 0, i) > page.rfind("</bdi>", 0, i) for i in _find_all(page, "\u202e"))


def _find_all(text: str, sub: str) -> list[int]:
    return [m.start() for m in re.finditer(re.escape(sub), text)]


def test_alignment_report_and_audit(store, tmp_path):
    run = fill_align(store)
    paths = build_report(store, [run], tmp_path / "align.html", title="alignment report")
    page = paths.html.read_text()
    data = json.loads(paths.json_.read_text())
    h = data["headlines"][0]
    assert h["kind"] == "align" and h["diff"] == 0.6 and h["movers"][0]["trait_id"] == "tl01"
    assert {f["kind"] for f in h["flags"]} == {"dominant_trait", "against_sign", "reward_audit"}
    assert "Monitors over training" in page and "Sample completions before and after" in page
    assert "Reward audit" in page and "lowercase+shorten" in page and "FAILED" in page
    assert "sk-should-not-show" not in page
    ev = next(e for e in data["evidence"] if e["trait_id"] == "tl01")
    assert [s["high"]["value"] for s in ev["sides"]] == [2.4, 3.8]   # highest before, highest after
    assert paths.kinds == {"align": 1} and paths.audit


def test_report_shows_a_held_out_audit_with_its_intervals(store, tmp_path):
    from traitlab.judges.audit import audit_folds
    from traitlab.types import RewardScore, Trait, TraitSet

    class Brevity:  # shorter judged turns score higher: truncation lifts the negatives
        trait_set = TraitSet(name="b", traits=[Trait(id="b", text="brevity")])

        def score(self, dialogues):
            return [RewardScore(id=d.id, score=-len(" ".join(d.target_turns)), traits={"b": 0.0}) for d in dialogues]

        def trait_weights(self):
            return None

    def dialogue(i: int, label: str) -> Dialogue:
        reply = "ok sure" if label == "best" else f"Certainly, I would be glad to help you with request {i} today."
        return Dialogue(id=f"{label}{i}", target_role="agent", label=label,
                        messages=[Message(role="user", content="hi"), Message(role="agent", content=reply)])

    folds = [(Brevity(), [dialogue(i, lab) for i in range(k, k + 10) for lab in ("best", "average")]) for k in (0, 10)]
    rep = audit_folds(folds, ("best", "average"), operators=["truncate", "lowercase"], max_depth=2, beam=1)
    run = fill_align(store)  # its store also holds a newer audit of another reward (audit-1)
    store.put_artifact(run, "reward_audit", rep.model_dump(mode="json"))  # as an align run stores its reward's
    page = build_report(store, [run], tmp_path / "a.html").html.read_text()
    lo, hi = (f"{v:.0%}" for v in rep.worst.share_interval)
    assert "Reward audit <code>align-1" in page and "audit-1" not in page
    assert "20 negatives over 2 folds" in page and f"[{lo}, {hi}]" in page


def _driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
              "--window-size=1100,1200"):
        opts.add_argument(a)
    return opts, Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")


def _open(path: Path, user_data: Path):
    from selenium import webdriver

    opts, service = _driver()
    opts.add_argument(f"--user-data-dir={user_data}")
    drv = webdriver.Chrome(options=opts, service=service)
    drv.get(path.as_uri())
    return drv


SVG_SIZES = ("return [...document.querySelectorAll('svg.plot')].map(s => {const r = s.getBoundingClientRect();"
             " return [r.width, r.height, s.querySelectorAll('circle,rect,line,polyline').length];})")


TRAIT_LABELS = """return [...document.querySelectorAll('[data-trait]')].map(e => [e.getAttribute('data-trait'),
  e.textContent, e.closest('svg') ? 'svg' : 'html'])"""
BARE_IDS = """const ids = new Set(arguments[0]); const bad = [];
const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
while (w.nextNode()) { const n = w.currentNode;
  for (const m of n.textContent.matchAll(/\\b[A-Za-z]+\\d+\\b/g)) {
    if (ids.has(m[0]) && !n.parentElement.closest('[data-trait], .free, title, code')) bad.push(n.textContent); } }
return bad;"""
FIRST = """const h = document.querySelector('.headline').getBoundingClientRect().top;
return [...document.querySelectorAll('svg.plot, table, .dialogue')].filter(e => !e.closest('.headline'))
  .every(e => e.getBoundingClientRect().top > h);"""


def _check_labels(drv, traits: dict) -> None:
    """Every trait label on the page shows its text (and its id as a tag); no id stands alone outside one."""
    labels = drv.execute_script(TRAIT_LABELS)
    assert len(labels) > 20
    for tid, text, where in labels:
        words = " ".join(traits[tid]["text"].split())[:18]
        assert words in text and tid in text, (tid, text, where)
    assert drv.execute_script(BARE_IDS, list(traits)) == []


def _screenshot(drv, name: str, height: int | None = None) -> Path:
    full = drv.execute_script("return document.documentElement.scrollHeight")
    drv.set_window_size(1100, min(height or full + 100, 16000))
    out = REPO / "test-artifacts"
    out.mkdir(exist_ok=True)
    assert drv.get_screenshot_as_file(str(out / name))
    return out / name


def test_report_in_headless_chromium(store, tmp_path):
    paths = build_report(store, fill_store(store), tmp_path / "report.html", title="two-run report")
    traits = json.loads(paths.json_.read_text())["traits"]
    # the same page without its Content-Security-Policy: escaping alone must keep the hostile text inert
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", paths.html.read_text()))
    for page in (paths.html, bare):
        drv = _open(page, tmp_path / f"profile-{page.stem}")
        try:
            assert drv.title == "two-run report"
            assert drv.execute_script("return window.__pwned === undefined")
            assert drv.execute_script("return document.querySelectorAll('script, img, textarea, [onload]').length") == 0
            assert EVIL in drv.execute_script("return document.body.innerText")
            sizes = drv.execute_script(SVG_SIZES)
            assert len(sizes) >= 4 and all(w > 100 and h > 40 and n > 3 for w, h, n in sizes), sizes
            assert drv.execute_script(FIRST), "something is drawn above the headline"
            _check_labels(drv, traits)
            # a 100,000-character line wraps: nothing is wider than the window
            assert drv.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
            # the override is inside a <bdi>: the words after it keep their order
            assert drv.execute_script("return [...document.querySelectorAll('bdi')].some(b => "
                                      "b.textContent.includes('\\u202e'))")
            if page == paths.html:
                _screenshot(drv, "report.png")
        finally:
            drv.quit()


def test_alignment_report_in_headless_chromium(store, tmp_path):
    paths = build_report(store, [fill_align(store)], tmp_path / "align.html", title="alignment report")
    traits = json.loads(paths.json_.read_text())["traits"]
    drv = _open(paths.html, tmp_path / "profile")
    try:
        assert drv.execute_script("return window.__pwned === undefined")
        assert drv.execute_script("return document.querySelectorAll('script, img, textarea, [onload]').length") == 0
        assert drv.execute_script(FIRST)
        _check_labels(drv, traits)
        sizes = drv.execute_script(SVG_SIZES)
        assert len(sizes) >= 5 and all(w > 100 and h > 40 and n > 3 for w, h, n in sizes), sizes
        _screenshot(drv, "report-align.png")
    finally:
        drv.quit()


def test_report_command_says_what_it_wrote_and_covers(tmp_path):
    from typer.testing import CliRunner

    from traitlab.cli import app
    from traitlab.store import Store

    with Store(tmp_path / "s.duckdb") as st:
        runs = [*fill_store(st), fill_align(st)]
    out = tmp_path / "rep" / "r.html"
    res = CliRunner().invoke(app, ["report", *runs, "--out", str(out), "--store", str(tmp_path / "s.duckdb")])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert f"wrote {out} (+ report.json, report.md)" in text
    assert ("covers 3 run(s) (2 eval, 1 align): base, aligned, align-1; 26 dialogues; 2 comparison(s); "
            "the reward audit") in text


def test_headline_share_of_change_and_derived_flags(store, tmp_path):
    """With the scalar's weights known, a trait's share is w*Δ over the sum, and a significant move against its
    weight's sign, or one trait carrying most of the change, is flagged as the alignment monitors would."""
    from traitlab.evals.report import AggregatorView, collect

    runs = fill_store(store, shift=1.5)
    weights = {t: 0.1 for t in sample_trait_set().ids} | {"tl02": -1.0}
    data = collect(store, runs, aggregator=AggregatorView(source="test", weights=weights))
    h = next(h for h in data.headlines if h.kind == "runs")
    assert h.basis == "weights" and h.movers[0].trait_id == "tl02"
    top = h.movers[0]
    total = sum(weights[r.trait_id] * r.diff for r in data.comparisons[0].rows if r.judge == "local-reward")
    assert abs(top.share - weights["tl02"] * top.diff / total) < 1e-9
    assert ("against_sign", "tl02") in {(f.kind, f.trait) for f in h.flags}
