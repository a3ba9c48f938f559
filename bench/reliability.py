"""The bad-input battery of issue 11: many broken inputs against the real CLI, counted as handled well or not.

Run: python bench/reliability.py [--show-bad] [--only SUBSTRING]

Each case runs one ``traitlab`` command in-process (typer's CliRunner, so the battery takes a minute, not
an hour of interpreter starts) on a broken input made in a temporary folder. A case is handled well when:
the exit code is non-zero, no traceback escaped, exactly one ``error:`` line was printed and it names what
the case expects (file, ``file:line``, ``[field]``, option or path), no model was called (the judge is
``nosuchprovider/x``: a call would fail and be counted), and no run was left ``running`` in the store.
Prints one line per case that was not handled well, then ``handled well: N of M``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "traitlab" / "sample"
DIALOGUES, TRAITS = SAMPLE / "dialogues.jsonl", SAMPLE / "traits_traitlab12.json"
JUDGE = "nosuchprovider/x"
GOOD_LINE = json.loads(DIALOGUES.read_text(encoding="utf-8").splitlines()[0])


@dataclass
class Case:
    name: str
    args: list[str]
    expect: list[str] = field(default_factory=list)
    files: dict[str, str | bytes] = field(default_factory=dict)


def _jsonl(*objs: object) -> str:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs)


def _d(**change: object) -> dict:
    return {**GOOD_LINE, **change}


def cases() -> list[Case]:
    out: list[Case] = []
    score = ["score", "--traits", str(TRAITS), "--judge", JUDGE, "--dialogues"]
    bad_dialogues = {
        "broken JSON line": (_jsonl(GOOD_LINE, '{"id": "x", "messages": [}'), ["d.jsonl:2"]),
        "top-level array": (_jsonl("[1, 2]"), ["d.jsonl:1"]),
        "empty id": (_jsonl(_d(id="")), ["d.jsonl:1", "id"]),
        "missing messages": (_jsonl({"id": "x", "label": "human"}), ["d.jsonl:1"]),
        "messages not a list": (_jsonl(_d(messages="hi")), ["d.jsonl:1", "messages"]),
        "empty messages": (_jsonl(_d(messages=[])), ["d.jsonl:1", "messages"]),
        "message without role": (_jsonl(_d(messages=[{"content": "hi"}])), ["d.jsonl:1", "role"]),
        "message content not text": (_jsonl(_d(messages=[{"role": "witness", "content": 3}])), ["d.jsonl:1"]),
        "unknown role only": (_jsonl(_d(messages=[{"role": "narrator", "content": "hi"}])), ["d.jsonl:1"]),
        "duplicate id": (_jsonl(GOOD_LINE, GOOD_LINE), ["d.jsonl:2", "id"]),
        "non-UTF-8 byte": (json.dumps(GOOD_LINE).encode().replace(b"gym", b"g\xffm") + b"\n", ["d.jsonl:1"]),
        "empty file": ("", ["d.jsonl"]),
        "blank lines only": ("\n\n\n", ["d.jsonl"]),
        "truncated last line": (_jsonl(GOOD_LINE) + json.dumps(GOOD_LINE)[:40], ["d.jsonl:2"]),
        "NaN label": (_jsonl(_d(label=float("nan"))), ["d.jsonl:1"]),
        "label a number": (_jsonl(_d(label=3)), ["d.jsonl:1", "label"]),
    }
    for name, (body, expect) in bad_dialogues.items():
        out.append(Case(f"dialogues: {name}", [*score, "{d.jsonl}"], expect, {"d.jsonl": body}))
    out += [
        Case("dialogues: missing file", [*score, "{tmp}/none.jsonl"], ["none.jsonl"]),
        Case("dialogues: a folder", [*score, "{tmp}"], ["{tmp}"]),
        Case("csv: missing transcript column", [*score, "{d.csv}"], ["d.csv", "transcript"],
             {"d.csv": "id,text\ng1,hi\n"}),
        Case("csv: extra field", [*score, "{d.csv}"], ["d.csv:2"], {"d.csv": 'id,transcript\ng1,"I: hi\nW: yo",x\n'}),
        Case("csv: no speaker tags", [*score, "{d.csv}"], ["d.csv:2", "transcript"],
             {"d.csv": "id,transcript\ng1,just words\n"}),
    ]
    bad_traits = {
        "broken JSON": ("{", ["t.json"]),
        "empty traits": (json.dumps({"name": "x", "traits": []}), ["t.json", "traits"]),
        "duplicate ids": (json.dumps({"name": "x", "traits": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}),
                          ["t.json", "duplicate"]),
        "bad id": (json.dumps({"name": "x", "traits": [{"id": "a b", "text": "x"}]}), ["t.json", "id"]),
        "empty text": (json.dumps({"name": "x", "traits": [{"id": "a", "text": ""}]}), ["t.json", "text"]),
        "a number": ("3", ["t.json"]),
    }
    for name, (body, expect) in bad_traits.items():
        out.append(Case(f"traits: {name}", ["score", "--dialogues", str(DIALOGUES), "--judge", JUDGE, "--traits",
                                            "{t.json}"], expect, {"t.json": body}))
    out.append(Case("traits: missing file", ["score", "--dialogues", str(DIALOGUES), "--judge", JUDGE, "--traits",
                                             "{tmp}/none.json"], ["none.json"]))

    def rating(v: object, **kw: object) -> str:
        return json.dumps({"id": "s01-A", "judge": "j", "ratings": {"tl01": v}, **kw})

    bad_ratings = {
        "out of scale 99": (_jsonl(rating(99)), ["r.jsonl:1", "[ratings.tl01]", "scale"]),
        "out of scale 0": (_jsonl(rating(0)), ["r.jsonl:1", "[ratings.tl01]"]),
        "negative": (_jsonl(rating(-2)), ["r.jsonl:1", "[ratings.tl01]"]),
        "NaN": (_jsonl(rating(float("nan"))), ["r.jsonl:1", "[ratings.tl01]"]),
        "Infinity": (_jsonl(rating(float("inf"))), ["r.jsonl:1", "[ratings.tl01]"]),
        "a string": (_jsonl(rating("4")), ["r.jsonl:1", "[ratings.tl01]"]),
        "a bool": (_jsonl(rating(True)), ["r.jsonl:1", "[ratings.tl01]"]),
        "missing ratings": (_jsonl({"id": "s01-A", "judge": "j"}), ["r.jsonl:1", "[ratings]"]),
        "empty ratings": (_jsonl({"id": "s01-A", "judge": "j", "ratings": {}}), ["r.jsonl:1", "[ratings]"]),
        "missing id": (_jsonl(json.dumps({"judge": "j", "ratings": {"tl01": 3}})), ["r.jsonl:1", "[id]"]),
        "missing judge": (_jsonl(json.dumps({"id": "s01-A", "ratings": {"tl01": 3}})), ["r.jsonl:1", "[judge]"]),
        "duplicate (id, judge)": (_jsonl(rating(3), rating(4)), ["r.jsonl:2", "[id]"]),
        "broken JSON": (_jsonl(rating(3), "{oops"), ["r.jsonl:2"]),
    }
    for name, (body, expect) in bad_ratings.items():
        for cmd in (["validate", "--out", "{tmp}/v.csv"], ["fit", "--out", "{tmp}/a.json"]):
            out.append(Case(f"{cmd[0]} ratings: {name}", [*cmd, "--dialogues", str(DIALOGUES), "--traits", str(TRAITS),
                                                          "--ratings", "{r.jsonl}"], expect, {"r.jsonl": body}))
    rest = ["--dialogues", str(DIALOGUES), "--traits", str(TRAITS), "--ratings", "{r.jsonl}"]
    out += [Case("validate ratings: traits missing", ["validate", "--out", "{tmp}/v.csv", *rest],
                 ["no trait has ratings"], {"r.jsonl": _jsonl(rating(3))}),
            Case("fit ratings: traits missing", ["fit", "--out", "{tmp}/a.json", *rest], ["lack traits", "tl02"],
                 {"r.jsonl": _jsonl(rating(3))})]
    ro = "/sys/traitlab-battery"  # not writable, even for root
    out += [
        Case("score --out read-only", [*score, str(DIALOGUES), "--out", f"{ro}/r.jsonl"], [ro]),
        Case("score --out a folder", [*score, str(DIALOGUES), "--out", "{tmp}"], ["--out", "is a folder"]),
        Case("score --out under a file", [*score, str(DIALOGUES), "--out", "{f.txt}/r.jsonl"], ["is a file"],
             {"f.txt": "x"}),
        Case("score --store read-only", [*score, str(DIALOGUES), "--store", f"{ro}/s.duckdb"], ["--store", ro]),
        Case("score --store a folder", [*score, str(DIALOGUES), "--store", "{tmp}"], ["--store", "is a folder"]),
        Case("discover --out read-only", ["discover", "--pairs", str(DIALOGUES), "--judge", JUDGE, "--out",
                                          f"{ro}/t.json"], [ro]),
        Case("discover --proposals-out read-only", ["discover", "--pairs", str(DIALOGUES), "--judge", JUDGE, "--out",
                                                    "{tmp}/t.json", "--proposals-out", f"{ro}/p.jsonl"], [ro]),
        Case("validate --out read-only", ["validate", "--dialogues", str(DIALOGUES), "--traits", str(TRAITS),
                                          "--ratings", "{r.jsonl}", "--out", f"{ro}/v.csv"], [ro],
             {"r.jsonl": _jsonl(rating(3))}),
        Case("fit --out read-only", ["fit", "--dialogues", str(DIALOGUES), "--traits", str(TRAITS), "--ratings",
                                     "{r.jsonl}", "--out", f"{ro}/a.json"], [ro], {"r.jsonl": _jsonl(rating(3))}),
        Case("fit --report read-only", ["fit", "--dialogues", str(DIALOGUES), "--traits", str(TRAITS), "--ratings",
                                        "{r.jsonl}", "--report", f"{ro}/r.json"], [ro], {"r.jsonl": _jsonl(rating(3))}),
        Case("report --out read-only", ["report", "r1", "--out", f"{ro}/r.html"], [ro]),
        Case("report --out a folder", ["report", "r1", "--out", "{tmp}"], ["is a folder"]),
        Case("report unknown run", ["report", "nope", "--out", "{tmp}/r.html"], ["nope"]),
        Case("reward score --out read-only", ["reward", "score", "--dialogues", str(DIALOGUES), "--out",
                                              f"{ro}/s.jsonl"], [ro]),
        Case("distill --out a file", ["distill", "--out", "{f.txt}"], ["is a file"], {"f.txt": "x"}),
        Case("eval --store read-only", ["eval", "turing-mini", "--store", f"{ro}/s.duckdb"], [ro]),
        Case("validate unknown run", ["validate", "--dialogues", str(DIALOGUES), "--traits", str(TRAITS), "--run",
                                      "nope", "--out", "{tmp}/v.csv"], ["nope"]),
        Case("data verify missing folder", ["data", "verify", "{tmp}/nowhere"], ["nowhere", "no such"]),
        Case("score --max-failures lots", [*score, str(DIALOGUES), "--max-failures", "lots"], ["--max-failures"]),
        Case("score --max-failures 1.5", [*score, str(DIALOGUES), "--max-failures", "1.5"], ["--max-failures"]),
        Case("eval --max-failures -1", ["eval", "turing-mini", "--max-failures", "-1"], ["--max-failures"]),
    ]
    suite = ("name: mini\nscenario: {turing: {source: sample}}\nconversations: 2\nturns: 2\nmodel: openai/x\n"
             "system_prompt: hi\nparams: {mock_response: hi}\nscorers: []\n")
    bad_suites = {
        "turns not a number": (suite.replace("turns: 2", "turns: many"), ["s.yaml:4", "[turns]"]),
        "unknown field": (suite.replace("turns: 2", "turn: 2"), ["s.yaml", "turn"]),
        "broken YAML": (suite + "personas: [a\n", ["s.yaml"]),
        "empty file": ("", ["s.yaml"]),
        "a list": ("- a\n- b\n", ["s.yaml"]),
        "missing reward folder": (suite.replace("scorers: []", "scorers: [{reward: {reward: {tmp}/noreward}}]"),
                                  ["noreward"]),
        "judge trait set missing": (suite.replace("scorers: []", "scorers: [{judge: {model: openai/x, trait_set: "
                                                                 "{tmp}/none.json}}]"), ["none.json"]),
        "unknown scorer": (suite.replace("scorers: []", "scorers: [jugde]"), ["s.yaml", "scorers"]),
        "unknown scenario": (suite.replace("{turing: {source: sample}}", "turnig"), ["s.yaml", "scenario"]),
    }
    for name, (body, expect) in bad_suites.items():
        out.append(Case(f"eval suite: {name}", ["eval", "{s.yaml}"], expect, {"s.yaml": body}))
    out.append(Case("eval suite: missing", ["eval", "{tmp}/none.yaml"], ["none.yaml"]))
    prompts = _jsonl({"id": "a", "prompt": "hi"})
    align = ["align", "dpo", "--prompts", "{p.jsonl}", "--heldout", "{p.jsonl}", "--out", "{tmp}/o", "--config",
             "{c.yaml}"]
    bad_align = {
        "empty YAML": ("", ["c.yaml", "empty"]),
        "trl max_steps lots": ("trl: {max_steps: lots}\n", ["c.yaml", "[trl.max_steps]"]),
        "trl learning_rate text": ("trl: {learning_rate: fast}\n", ["c.yaml", "[trl.learning_rate]"]),
        "trl unknown key": ("trl: {betta: 0.1}\n", ["c.yaml", "[trl.betta]"]),
        "unknown field": ("num_sample: 3\n", ["c.yaml", "num_sample"]),
        "lora r negative": ("lora: {r: -1}\n", ["c.yaml", "[lora.r]"]),
        "broken YAML": ("trl: {max_steps: 3\n", ["c.yaml"]),
        "a list": ("- 1\n", ["c.yaml"]),
        "sampling type": ("sampling: {temperature: hot}\n", ["c.yaml", "[sampling.temperature]"]),
        "missing reward folder": ("reward: {tmp}/noreward\n", ["noreward"]),
    }
    for name, (body, expect) in bad_align.items():
        out.append(Case(f"align: {name}", align, expect, {"c.yaml": body, "p.jsonl": prompts}))
    out += [
        Case("align: training prompts broken", ["align", "dpo", "--prompts", "{t.jsonl}", "--heldout", "{p.jsonl}",
                                                "--out", "{tmp}/o"], ["t.jsonl:2", "[prompt]"],
             {"t.jsonl": _jsonl({"id": "a", "prompt": "hi"}, {"id": "b"}), "p.jsonl": prompts}),
        Case("align: prompts missing", ["align", "grpo", "--prompts", "{tmp}/none.jsonl", "--heldout", "{p.jsonl}",
                                        "--out", "{tmp}/o"], ["none.jsonl"], {"p.jsonl": prompts}),
        Case("align: duplicate prompt ids", ["align", "dpo", "--prompts", "{t.jsonl}", "--heldout", "{p.jsonl}",
                                             "--out", "{tmp}/o"], ["t.jsonl:2", "[id]"],
             {"t.jsonl": _jsonl({"id": "a", "prompt": "hi"}, {"id": "a", "prompt": "yo"}), "p.jsonl": prompts}),
        Case("align: --out read-only", ["align", "dpo", "--prompts", "{p.jsonl}", "--heldout", "{p.jsonl}", "--out",
                                        f"{ro}/o"], [ro], {"p.jsonl": prompts}),
    ]
    return out


def run_case(case: Case, tmp: Path) -> tuple[bool, str]:
    """Run one case in a fresh folder; (handled well, why not)."""
    from typer.testing import CliRunner

    from traitlab.cli import app
    from traitlab.store import Store

    folder = Path(tempfile.mkdtemp(dir=tmp))
    names = {"tmp": str(folder)}
    for name in case.files:
        names[name] = str(folder / name)

    def subst(text: str) -> str:
        for k, v in names.items():
            text = text.replace("{" + k + "}", v)
        return text

    for name, body in case.files.items():
        (folder / name).write_bytes(body if isinstance(body, bytes) else subst(body).encode())
    args = [subst(a) for a in case.args]
    store = folder / "battery.duckdb"
    os.environ["TRAITLAB_STORE"] = str(store)
    res = CliRunner().invoke(app, args)
    output = res.output
    problems = []
    if res.exit_code == 0:
        problems.append("exit 0")
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        problems.append(f"traceback: {type(res.exception).__name__}: {res.exception}")
    errors = [ln for ln in output.splitlines() if ln.startswith("error:")]
    if len(errors) != 1:
        problems.append(f"{len(errors)} error lines")
    flat = " ".join(output.split())
    missing = [subst(e) for e in case.expect if subst(e) not in flat]
    if missing:
        problems.append(f"does not name {missing}")
    if store.exists():
        with Store(store) as st:
            if st.sql("SELECT count(*) FROM calls")[0][0]:
                problems.append("called a model")
            if st.sql("SELECT count(*) FROM runs WHERE status = 'running'")[0][0]:
                problems.append("left a run 'running'")
    return not problems, "; ".join(problems) + (f" | {flat[:300]}" if problems else "")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--show-bad", action="store_true", help="print the output of cases not handled well")
    ap.add_argument("--only", default=None, help="run the cases whose name contains this")
    args = ap.parse_args()
    todo = [c for c in cases() if args.only is None or args.only in c.name]
    good = 0
    with tempfile.TemporaryDirectory() as tmp:
        for case in todo:
            ok, why = run_case(case, Path(tmp))
            good += ok
            if not ok:
                print(f"NOT WELL  {case.name}: {why if args.show_bad else why.split(' | ')[0]}")
    print(f"handled well: {good} of {len(todo)}")
    sys.exit(0 if good == len(todo) else 1)


if __name__ == "__main__":
    main()
