"""The loaders of traitlab.data on the real HAL files (../shared/data) and on bad input.

Every bad-input case checks that the error names the file, the line and (where there is one) the field,
and that the loader raised instead of returning a partial list.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from traitlab.data import (
    MAX_MESSAGE_CHARS,
    DataError,
    load_dialogues,
    load_proposals,
    load_ratings,
    load_trait_set,
    pair_dialogues,
)

# ---------------------------------------------------------------- the real files


def test_turing_dialogues_and_pairs(shared_data: Path):
    dialogues = load_dialogues(shared_data / "hal_turing/dialogues.jsonl")
    assert len(dialogues) == 856
    assert Counter(d.label for d in dialogues) == {"human": 428, "ai": 428}
    assert {d.target_role for d in dialogues} == {"witness"}
    assert Counter(d.meta["witness"] for d in dialogues)["gpt-4.5_quinn"] == 109
    pairs = pair_dialogues(dialogues)
    assert len(pairs) == 428 and all({p.a.label, p.b.label} == {"human", "ai"} for p in pairs)


def test_judge_ratings(shared_data: Path):
    ratings = load_ratings(shared_data / "hal_turing/judge_ratings.jsonl")
    assert len(ratings) == 5136
    per_judge = Counter(r.judge for r in ratings)
    assert per_judge == dict.fromkeys(["gpt-5", "gpt-5-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-oss-120b",
                                       "gpt-oss-20b"], 856)
    gpt5 = load_ratings(shared_data / "hal_turing/judge_ratings.jsonl", judge="gpt-5")
    assert len(gpt5) == 856 and {len(r.ratings) for r in gpt5} == {32}
    traits = load_trait_set(shared_data / "hal_turing/traits_hal32.json")
    assert traits.ids == sorted(gpt5[0].ratings)


def test_proposals(shared_data: Path):
    props = load_proposals(shared_data / "hal_turing/proposals.jsonl")
    assert len(props) == 428
    assert sum(len(p["statements"]) for p in props) == 2100
    assert Counter(p["verdict_correct"] for p in props) == {True: 282, False: 146}


def test_doctor_generations_have_28_degenerate_records(shared_data: Path):
    path = shared_data / "hal_doctor/generations_scored.jsonl"
    with pytest.raises(DataError) as e:
        load_dialogues(path)
    check(e.value, path, 205, "messages", "the judged speaker 'patient' never speaks")
    skipped: list[DataError] = []
    dialogues = load_dialogues(path, skipped=skipped)
    assert len(dialogues) == 2100 - 28 and len(skipped) == 28
    assert all(err.path == str(path) and err.line and err.field for err in skipped)
    assert Counter(err.field for err in skipped) == {"messages": 18, "dialogue": 10}  # no P: line / no tag at all
    assert {d.target_role for d in dialogues} == {"patient"}
    ratings = load_ratings(path)
    assert len(ratings) == 2100 and {r.judge for r in ratings} == {"gpt-5"}
    assert {len(r.ratings) for r in ratings} == {16}


def test_synthlabs_dialogues(shared_data: Path):
    path = shared_data / "hal_doctor/dialogues_test.jsonl"
    with pytest.raises(DataError) as e:  # the patient speaks as 'G:' (his initial), never as 'P:'
        load_dialogues(path)
    check(e.value, path, 174, "messages", "the judged speaker 'patient' never speaks")
    skipped: list[DataError] = []
    test = load_dialogues(path, skipped=skipped)
    assert len(test) + len(skipped) == 800 and len(skipped) == 9
    assert test[0].meta["generator_model"] == "gpt-4.1-mini"
    train = load_ratings(shared_data / "hal_doctor/train_scored_gpt5mini.jsonl")
    assert len(train) == 100 and {r.judge for r in train} == {"gpt-5-mini"}


# ---------------------------------------------------------------- bad input


def turing(id_: str, *messages: tuple[str, str], **extra) -> dict:
    return {"id": id_, "messages": [{"role": r, "content": c} for r, c in messages], **extra}


GOOD = turing("g1", ("interrogator", "hi"), ("witness", "hey"))


def write_jsonl(path: Path, *records: dict | str | bytes) -> Path:
    out = b""
    for r in records:
        out += (r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode()) + b"\n"
    path.write_bytes(out)
    return path


def check(err: DataError, path: Path, line: int, field: str | None, problem: str) -> None:
    assert (err.path, err.line, err.field) == (str(path), line, field)
    assert problem in err.problem
    assert str(err).startswith(f"{path}:{line}" + (f" [{field}]" if field else ""))


@pytest.mark.parametrize(("record", "field", "problem"), [
    ('{"id": "x", "messages": [', None, "broken JSON"),
    ("[1, 2]", None, "expected a JSON object"),
    ({"id": "x"}, "messages", "missing"),
    ({"id": "x", "messages": [{"role": "witness"}]}, "messages[0]", "needs 'role' and 'content'"),
    ({"id": "x", "messages": [{"role": "witness", "content": 7}]}, "messages[0].content", "must be a string"),
    (turing("x", ("interrogator", "hi"), ("robot", "beep")), "messages",
     "roles ['interrogator', 'robot'] match no known shape; pass target_role"),
    (turing("x", ("interrogator", "hi"), ("assistant", "hello")), "messages", "match no known shape"),
    ({"id": "x", "messages": []}, "messages", "empty dialogue"),
    (turing("x", ("interrogator", "only the interrogator")), "messages", "'witness' never speaks"),
    ({**GOOD, "id": "x", "label": 7}, "label", "must be a non-empty string or absent"),
    ({**GOOD, "id": "x", "label": " "}, "label", "must be a non-empty string or absent"),
    ({"id": "x", "dialogue": "no tags at all"}, "dialogue", "no tagged line (known tags: 'I:', 'W:', 'P:', 'D:')"),
    ({"id": "x", "dialogue": ["P: hi"]}, "dialogue", "must be a string"),
])
def test_bad_record_names_file_line_field(tmp_path, record, field, problem):
    path = write_jsonl(tmp_path / "d.jsonl", GOOD, record, {**GOOD, "id": "g3"})
    with pytest.raises(DataError) as e:
        load_dialogues(path)
    check(e.value, path, 2, field, problem)


def test_non_utf8_bytes_name_the_field(tmp_path):
    bad = json.dumps(turing("x", ("interrogator", "hi"), ("witness", "caf@"))).encode().replace(b"@", b"\xe9")
    path = write_jsonl(tmp_path / "d.jsonl", GOOD, bad)
    with pytest.raises(DataError) as e:
        load_dialogues(path)
    check(e.value, path, 2, "messages[1].content", "not UTF-8")


def test_a_10_mb_message_is_refused(tmp_path):
    big = "x" * 10_000_000
    assert len(big) > MAX_MESSAGE_CHARS
    path = write_jsonl(tmp_path / "d.jsonl", GOOD, GOOD | {"id": "g2"},
                       turing("big", ("interrogator", "hi"), ("witness", big)))
    with pytest.raises(DataError) as e:
        load_dialogues(path)
    check(e.value, path, 3, "messages[1].content", "10,000,000 characters (limit 1,000,000)")


def test_duplicate_id(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", GOOD, GOOD)
    with pytest.raises(DataError) as e:
        load_dialogues(path)
    check(e.value, path, 2, "id", "duplicate id 'g1' (first on line 1)")


def test_skipped_collects_bad_records_but_keeps_strict_elsewhere(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", GOOD, {"id": "e", "messages": []}, "", GOOD | {"id": "g4"})
    skipped: list[DataError] = []
    assert [d.id for d in load_dialogues(path, skipped=skipped)] == ["g1", "g4"]
    assert [(s.line, s.field) for s in skipped] == [(2, "messages")]
    with pytest.raises(DataError, match="no dialogues in file"):
        load_dialogues(write_jsonl(tmp_path / "e.jsonl", ""))


def test_openai_messages_judge_the_assistant(tmp_path):
    rec = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                        {"role": "assistant", "content": "hello"}]}
    (d,) = load_dialogues(write_jsonl(tmp_path / "chat.jsonl", rec))
    assert d.id == "chat-1" and d.target_role == "assistant" and d.target_turns == ["hello"]
    (u,) = load_dialogues(tmp_path / "chat.jsonl", target_role="user")
    assert u.target_turns == ["hi"]


def test_csv_with_transcript_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('id,label,transcript\n'
                    'g1,human,"I: hi\nW: hey there\nhow are you"\n'
                    'd1,,"P: my knee hurts\n2. D: since when?\nP: a week"\n', encoding="utf-8")
    g1, d1 = load_dialogues(path)
    assert g1.target_role == "witness" and g1.label == "human"
    assert [m.content for m in g1.messages] == ["hi", "hey there\nhow are you"]
    assert d1.target_role == "patient" and [m.role for m in d1.messages] == ["patient", "doctor", "patient"]
    assert d1.label is None


@pytest.mark.parametrize(("text", "line", "field", "problem"), [
    ('id,text\ng1,"I: hi"\n', 1, "transcript", "missing column"),
    ('id,transcript\ng1,"I: hi\nW: yo"\ng2,just words\n', 4, "transcript", "no tagged line"),
    ('id,transcript\ng1,"I: hi\nW: yo",extra\n', 2, None, "3 fields where the header has 2"),
    ('id,label,transcript\ng1,"I: hi\nW: yo"\n', 2, None, "2 fields where the header has 3"),
    ('id,transcript\ng1,"I: hi\nW: yo"\ng1,"I: a\nW: b"\n', 4, "id", "duplicate id 'g1' (first on line 2)"),
])
def test_bad_csv_names_file_line_field(tmp_path, text, line, field, problem):
    path = tmp_path / "t.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_dialogues(path)
    check(e.value, path, line, field, problem)


def test_non_utf8_csv_names_the_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b'id,transcript\ng1,"I: hi\nW: yo"\ng2,"I: hi\nW: caf\xe9"\n')
    with pytest.raises(DataError) as e:
        load_dialogues(path)
    check(e.value, path, 5, None, "not UTF-8")


@pytest.mark.parametrize(("record", "kwargs", "field", "problem"), [
    ({"id": "a", "judge": "j", "ratings": {}}, {}, "ratings", "missing or empty"),
    ({"id": "a", "judge": "j", "ratings": {"t01": "5"}}, {}, "ratings.t01", "not a number"),
    ({"id": "a", "judge": "j", "ratings": {"t01": True}}, {}, "ratings.t01", "not a number"),
    ({"id": "a", "ratings": {"t01": 5}}, {}, "judge", "missing"),
    ({"judge": "j", "ratings": {"t01": 5}}, {"judge": "j"}, "id", "missing"),
])
def test_bad_ratings(tmp_path, record, kwargs, field, problem):
    path = write_jsonl(tmp_path / "r.jsonl", {"id": "ok", "judge": "j", "ratings": {"t01": 1}}, record)
    with pytest.raises(DataError) as e:
        load_ratings(path, **kwargs)
    check(e.value, path, 2, field, problem)


def test_bad_proposals_and_edited_trait_set(tmp_path, shared_data):
    path = write_jsonl(tmp_path / "p.jsonl", {"game_id": "1", "statements": ["a"]},
                       {"game_id": "2", "statements": "a"})
    with pytest.raises(DataError) as e:
        load_proposals(path)
    check(e.value, path, 2, "statements", "must be a list of strings")

    ts = load_trait_set(shared_data / "hal_turing/traits_hal32.json")
    saved = json.loads(ts.model_dump_json()) | {"hash": ts.hash}
    saved["traits"][0]["text"] = "edited"
    (tmp_path / "ts.json").write_text(json.dumps(saved))
    with pytest.raises(DataError) as e:
        load_trait_set(tmp_path / "ts.json")
    assert e.value.field == "hash" and "file edited?" in e.value.problem


def support(i: int, label: str, ticket: str) -> dict:
    return {"id": f"t{i}", "group": ticket, "label": label,
            "messages": [{"role": "customer", "content": "my order is late"}, {"role": "agent", "content": "sorry!"}]}


def test_any_roles_and_labels_with_a_target_role(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", support(1, "best", "k1"), support(2, "average", "k1"),
                       support(3, "best", "k2"))
    with pytest.raises(DataError) as e:  # who is judged cannot be guessed from roles no shape knows
        load_dialogues(path)
    check(e.value, path, 1, "messages", "roles ['agent', 'customer'] match no known shape")
    ds = load_dialogues(path, target_role="agent")
    assert [(d.label, d.target_role, d.meta["group"]) for d in ds] == [
        ("best", "agent", "k1"), ("average", "agent", "k1"), ("best", "agent", "k2")]
    pairs = pair_dialogues(ds)  # paired by the group field; k2 has one side only
    assert [(p.id, p.side("best").id, p.side("average").id) for p in pairs] == [("k1", "t1", "t2")]
    from traitlab.contrast import Contrast

    c = Contrast(positive="best", negative="average", description="best vs average agents")
    assert pair_dialogues(ds, c)[0].id == "k1"
    assert pair_dialogues(ds, c.override(positive="excellent")) == []  # labels must be the contrast's


def test_general_loader_names_no_preset_roles():
    """HAL's roles and tags come from its preset's registered shapes, not from the general loader."""
    import inspect

    import traitlab.data as data

    src = inspect.getsource(data)
    for word in ("witness", "interrogator", "patient", "doctor"):
        assert word not in src, word
