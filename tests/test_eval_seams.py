"""A user's scorer, scenario and reward in a module of their own, found through a suite's ``plugins:``, through
``$TRAITLAB_PLUGINS`` and through a real entry point, and run by ``evaluate`` with no edit to traitlab; the
built-in scenarios and the concurrent, exactly-resumable generation."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import traitlab.registry as registry
from traitlab.data import DataError
from traitlab.evals.generate import evaluate, plan
from traitlab.evals.suite import load_suite
from traitlab.registry import ChatModel, ScenarioContext, as_reward, rewards, scenarios, scorers

# What a user writes: three decorated factories, the scenario written against the Protocol alone.
PLUGIN = '''
from traitlab.registry import ScoreResult, reward, scenario, scorer
from traitlab.types import Dialogue, Message, RewardScore, Trait, TraitRatings, TraitSet

BREVITY = TraitSet(name="brevity", traits=[Trait(id="chars", text="How many characters the agent wrote")])


class Shorter:
    trait_set = BREVITY

    def __init__(self, scale):
        self.scale = scale

    def score(self, dialogues):
        return [RewardScore(id=d.id, score=-self.scale * len("".join(d.target_turns)),
                            traits={"chars": float(len("".join(d.target_turns)))}) for d in dialogues]

    def trait_weights(self):
        return {"chars": -self.scale}


@reward("PREFIX-shorter")
def shorter(scale: float = 1.0):
    return Shorter(scale)


class Exclaims:
    name = "PREFIX-exclaims"

    def score(self, dialogues, ctx):
        return ScoreResult(ratings=[TraitRatings(dialogue_id=d.id, judge=self.name,
                                                 ratings={"bangs": float("".join(d.target_turns).count("!"))})
                                    for d in dialogues])


@scorer("PREFIX-exclaims")
def exclaims():
    return Exclaims()


class Desk:
    roles = ("customer", "agent")

    def __init__(self, openers):
        self.openers = openers

    def plan(self, n, ctx):
        from traitlab.registry import Conversation

        return [Conversation(id=f"{ctx.name}-{i}", index=i, lines=[self.openers[i % len(self.openers)]])
                for i in range(n)]

    async def converse(self, conversation, ctx):
        history = []
        for turn in range(ctx.turns):
            history.append(Message(role="customer", content=conversation.lines[0] if turn == 0 else "and then?"))
            history.append(Message(role="agent", content=await ctx.reply(conversation, history, "agent", turn)))
        return Dialogue(id=conversation.id, messages=history, target_role="agent")


@scenario("PREFIX-desk")
def desk(openers: list):
    return Desk(openers)
'''

SUITE = """\
name: support
scenario:
  PREFIX-desk: {openers: ["my router is dead", "refund please"]}
conversations: 3
turns: 2
model: openai/gpt-4o-mini
system_prompt: you are a support agent
params: {mock_response: "Happy to help!"}
scorers:
  - reward: {reward: PREFIX-shorter, name: brevity, params: {scale: 2}}
  - PREFIX-exclaims
"""


def _write_plugin(folder: Path, prefix: str, module: str) -> Path:
    path = folder / f"{module}.py"
    path.write_text(PLUGIN.replace("PREFIX", prefix))
    return path


def _run_and_check(store, suite_path: Path, prefix: str) -> None:
    suite = load_suite(suite_path)
    assert suite.roles == ("customer", "agent")
    r = evaluate(suite, None, store, run_id=prefix)
    assert (r.generated, r.n_dialogues, r.failed) == (3, 3, [])
    ds = {d.id: d for d in store.dialogues(prefix)}
    assert [m.role for m in ds["support-0"].messages] == ["customer", "agent"] * 2
    assert ds["support-1"].messages[0].content == "refund please"
    assert ds["support-0"].target_turns == ["Happy to help!"] * 2
    # the user's reward through the built-in reward scorer: its scalars, its traits, its trait set
    assert store.artifact(prefix, "scores") == {"scorer": "brevity", "scores": {i: -56.0 for i in ds}}
    assert store.artifact(prefix, "reward_trait_set")["name"] == "brevity"
    assert {r.ratings["chars"] for r in store.ratings(prefix, judge="brevity")} == {28.0}
    # the user's own scorer, stored under its name
    assert {r.ratings["bangs"] for r in store.ratings(prefix, judge=f"{prefix}-exclaims")} == {2.0}
    assert r.scorers["brevity"].mean == -56.0 and r.scorers[f"{prefix}-exclaims"].scored == 3
    again = evaluate(suite, None, store, run_id=prefix)  # resumed: nothing generated or scored twice
    assert (again.generated, again.resumed) == (0, 3)
    assert len(store.ratings(prefix, judge=f"{prefix}-exclaims")) == 3


def test_plugin_from_a_suite_file(store, tmp_path):
    (tmp_path / "project").mkdir()
    _write_plugin(tmp_path / "project", "filep", "my_scorers")
    suite = tmp_path / "project" / "support.yaml"
    suite.write_text(SUITE.replace("PREFIX", "filep") + "plugins: [my_scorers.py]\n")  # relative to the suite
    _run_and_check(store, suite, "filep")
    assert isinstance(rewards.create("filep-shorter"), registry.Reward)


def test_plugin_from_the_environment(store, tmp_path, monkeypatch):
    path = _write_plugin(tmp_path, "envp", "env_scorers")
    suite = tmp_path / "support.yaml"
    suite.write_text(SUITE.replace("PREFIX", "envp"))
    with pytest.raises(DataError, match="no scenario named 'envp-desk'"):
        load_suite(suite)
    monkeypatch.setenv("TRAITLAB_PLUGINS", str(path))
    _run_and_check(store, suite, "envp")


def test_plugin_from_an_entry_point(store, tmp_path, monkeypatch):
    """A real installed distribution: a dist-info with an entry point in the traitlab.plugins group."""
    _write_plugin(tmp_path, "epp", "tl_user_plugin")
    info = tmp_path / "tl_user_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tl-user-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[traitlab.plugins]\nsupport = tl_user_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)  # entry points are read once per process
    suite = tmp_path / "support.yaml"
    suite.write_text(SUITE.replace("PREFIX", "epp"))
    assert "epp-desk" in scenarios and "epp-exclaims" in scorers
    _run_and_check(store, suite, "epp")


def test_a_reward_that_breaks_the_protocol_is_named():
    class Half:
        trait_set = None

        def score(self, dialogues):
            return []

    with pytest.raises(TypeError, match=r"Half does not satisfy the Reward protocol \(missing: trait_weights\)"):
        as_reward(Half())


# built-in scenarios ---------------------------------------------------------------------------------------
def _suite(tmp_path: Path, scenario: str, extra: str = "") -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(f"name: s\nscenario:\n  {scenario}\nconversations: 4\nturns: 3\nmodel: openai/gpt-4o-mini\n"
                    f"system_prompt: 'you are $persona'\nparams: {{mock_response: ok}}\nscorers: []\n{extra}")
    return path


def test_scripted_scenario_crosses_scripts_and_personas(store, tmp_path):
    suite = load_suite(_suite(tmp_path, 'scripted: {scripts: [["a1", "a2"], ["b1"]], personas: [Ann, Bo, Cy], '
                                        "interlocutor_role: agent, target_role: customer}"))
    convs = plan(suite)
    assert [(c.lines, c.vars["persona"]) for c in convs] == [(["a1", "a2"], "Ann"), (["b1"], "Bo"),
                                                              (["a1", "a2"], "Cy"), (["b1"], "Ann")]
    evaluate(suite, None, store, run_id="sc")
    d = next(d for d in store.dialogues("sc") if d.id == "s-0001")
    assert [m.role for m in d.messages] == ["agent", "customer"]  # one line: the conversation ends with it
    sent = " ".join(str(r[0]) for r in store.sql("SELECT request FROM calls WHERE run_id = 'sc'"))
    assert all(f"you are {p}" in sent for p in ("Ann", "Bo", "Cy"))


def test_llm_interlocutor_and_replay(store, tmp_path, shared_data):
    suite = load_suite(_suite(tmp_path, "llm: {model: openai/gpt-4o-mini, opening: [hello], "
                                        "params: {mock_response: 'why so?'}}"))
    evaluate(suite, None, store, run_id="llm")
    d = store.dialogues("llm")[0]
    assert [m.content for m in d.messages] == ["hello", "ok", "why so?", "ok", "why so?", "ok"]
    replay = load_suite(_suite(tmp_path, f"replay: {{dialogues: {shared_data}/hal_turing/dialogues.jsonl, "
                                         "interlocutor_role: interrogator, target_role: witness, group: game_id}"))
    convs = plan(replay, 3)
    assert len({c.meta["source"] for c in convs}) == 3 and all(c.lines for c in convs)


# concurrency and exact resume ----------------------------------------------------------------------------
class _Slow:
    """A ChatModel that takes ``delay`` per call and counts how many calls overlap."""

    name = "slow"

    def __init__(self, delay: float, fail_after: int | None = None):
        self.delay, self.fail_after, self.calls, self.inflight, self.peak = delay, fail_after, 0, 0, 0

    async def chat(self, messages, params=None) -> str:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt  # as if the process were killed mid-run
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        await asyncio.sleep(self.delay)
        self.inflight -= 1
        return f"reply {len(messages)}"


def test_generation_keeps_every_conversation_in_flight(tmp_path):
    from traitlab.evals.generate import generate

    suite = load_suite(_suite(tmp_path, 'scripted: {lines: ["1", "2", "3"]}'))
    model: ChatModel = _Slow(0.05)
    ctx = ScenarioContext(model=model, name="s", turns=3, system_prompt="x")
    scenario = suite.build_scenario()
    convs = scenario.plan(20, ctx)
    started = time.perf_counter()
    done, failed = asyncio.run(generate(scenario, convs, ctx, concurrency=20, progress=False))
    wall = time.perf_counter() - started
    assert len(done) == 20 and not failed and model.peak == 20
    assert wall < 3 * 0.05 * 4  # three turns one after another, not 20 x 3 calls in a row
    capped: ChatModel = _Slow(0.01)
    asyncio.run(generate(scenario, convs, ScenarioContext(model=capped, name="s", turns=3), concurrency=4,
                         progress=False))
    assert capped.peak == 4


def test_conversations_finishing_during_a_write_go_in_the_next_one(tmp_path):
    from traitlab.evals.generate import generate

    suite = load_suite(_suite(tmp_path, 'scripted: {lines: ["1", "2"]}'))
    ctx = ScenarioContext(model=_Slow(0.02), name="s", turns=2, system_prompt="x")
    scenario = suite.build_scenario()
    convs = scenario.plan(20, ctx)
    batches: list[list[str]] = []

    def write(batch: list) -> None:
        batches.append([d.id for d in batch])
        time.sleep(0.05)  # a store transaction

    done, _ = asyncio.run(generate(scenario, convs, ctx, concurrency=20, on_done=write, progress=False))
    assert sorted(i for b in batches for i in b) == sorted(d.id for d in done) == sorted(c.id for c in convs)
    assert len(batches) <= 4  # 20 conversations ending together: a few writes, not 20

    def full(batch: list) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):  # a failed write ends the run, it is not swallowed
        asyncio.run(generate(scenario, convs, ctx, concurrency=20, on_done=full, progress=False))


def test_a_kill_mid_run_loses_nothing_finished_and_repeats_nothing(store, tmp_path, monkeypatch):
    from traitlab.evals import generate as gen

    suite = load_suite(_suite(tmp_path, 'scripted: {lines: ["1", "2", "3"]}'))
    killer = _Slow(0.01, fail_after=3 * 5 + 1)  # five conversations finish, then the process "dies"
    monkeypatch.setattr(gen, "ClientChat", lambda client: killer)
    with pytest.raises(KeyboardInterrupt):
        evaluate(suite, None, store, n=12, run_id="kill", concurrency=1)
    stored = [d.id for d in store.dialogues("kill")]
    assert stored == [f"s-{i:04d}" for i in range(5)]
    fresh = _Slow(0.01)
    monkeypatch.setattr(gen, "ClientChat", lambda client: fresh)
    r = evaluate(suite, None, store, n=12, run_id="kill", concurrency=4)
    assert (r.generated, r.resumed, r.n_dialogues) == (7, 5, 12) and fresh.calls == 7 * 3
    assert sorted(d.id for d in store.dialogues("kill")) == [f"s-{i:04d}" for i in range(12)]


def test_evaluate_from_inside_an_event_loop(store, tmp_path):
    """A notebook already runs a loop: evaluate still runs its own, in a thread."""
    suite = load_suite(_suite(tmp_path, 'scripted: {lines: ["1"]}'))

    async def notebook():
        return evaluate(suite, None, store, n=2, run_id="nb")

    assert asyncio.run(notebook()).generated == 2 and len(store.dialogues("nb")) == 2


def test_unknown_scenario_param_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"s.yaml:2 \[scenario\].*unexpected keyword argument 'line'"):
        load_suite(_suite(tmp_path, 'scripted: {line: ["1"]}'))


# a local model folder or LoRA adapter as the model under test -------------------------------------------
@pytest.mark.slow
def test_eval_a_lora_adapter_folder(tmp_path):
    """An adapter saved on the offline model (as align saves one) evaluated by path, its base found offline."""
    import copy
    import json

    import torch
    from peft import LoraConfig, get_peft_model
    from typer.testing import CliRunner

    from traitlab.cli import app
    from traitlab.judges.local import generate_chat, load_local_model
    from traitlab.store import Store

    base, _ = load_local_model("smollm2-135m")
    torch.manual_seed(0)
    peft = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                          init_lora_weights=False))  # not a no-op adapter
    adapter = tmp_path / "runs" / "a1" / "adapter"
    peft.save_pretrained(adapter)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"].endswith("models/smollm2-135m")  # the converted cache folder
    hub = tmp_path / "hub-adapter"  # the same adapter naming its base by hub id: still resolves offline
    peft.save_pretrained(hub)
    (hub / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path":
                                                          "HuggingFaceTB/SmolLM2-135M-Instruct"}))
    prompt = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    said = {name: generate_chat(prompt, name=name, max_tokens=6, temperature=0).text.strip()
            for name in ("smollm2-135m", str(adapter.resolve()), str(hub.resolve()))}
    assert said[str(adapter.resolve())] == said[str(hub.resolve())] != said["smollm2-135m"]
    assert not any("lora" in n for n, _ in base.named_parameters())  # the shared offline model stays unadapted
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nscenario: {scripted: {lines: [hello there]}}\nconversations: 1\nturns: 1\n"
                     "system_prompt: be brief\nparams: {max_tokens: 6, temperature: 0}\nscorers: []\n")
    db = tmp_path / "t.duckdb"
    res = CliRunner().invoke(app, ["eval", str(suite), "--model", str(adapter), "--store", str(db), "--run-id", "a1"])
    assert res.exit_code == 0, res.output
    with Store(db) as st:
        d = st.dialogues("a1")
        assert len(d) == 1 and d[0].target_turns[0] == said[str(adapter.resolve())]
        models = {r[0] for r in st.sql("SELECT DISTINCT model FROM calls WHERE run_id = 'a1'")}
        assert models == {f"local/{adapter.resolve()}"}
        params = st.sql("SELECT params FROM calls WHERE run_id = 'a1' LIMIT 1")[0][0]
        assert "local_fingerprint" in str(params)
