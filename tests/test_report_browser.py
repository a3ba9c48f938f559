"""The HTML report: built from a store of sample + synthetic data (no model call), checked as text and in
headless Chromium (plots drawn with a size, dialogue text inert). Needs the Debian packages ``chromium`` and
``chromium-driver`` and the pip package ``selenium``; the screenshot lands in test-artifacts/report.png."""

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


def _evil_dialogue() -> Dialogue:
    return Dialogue(id="evil</code><script>window.__pwned=4</script>", target_role="witness",
                    messages=[Message(role="interrogator", content="hi <b>there</b>"),
                              Message(role="witness", content=EVIL)])


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
    assert "`aligned` − `base`" in md and re.search(r"\| local-reward \| tl02 \| \+", md)


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


def test_report_in_headless_chromium(store, tmp_path):
    paths = build_report(store, fill_store(store), tmp_path / "report.html", title="two-run report")
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
            if page == paths.html:
                height = drv.execute_script("return document.documentElement.scrollHeight")
                drv.set_window_size(1100, min(height + 100, 16000))
                out = REPO / "test-artifacts"
                out.mkdir(exist_ok=True)
                assert drv.get_screenshot_as_file(str(out / "report.png"))
        finally:
            drv.quit()
