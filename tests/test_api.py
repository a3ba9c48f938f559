"""The public library surface, the preset registry, and that what ships loads without the hub."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import textwrap
import threading

import pytest

import traitlab
from traitlab import api


def _run(code: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_import_traitlab_is_light_and_stage_functions_resolve_lazily():
    out = _run("""
        import sys, traitlab
        heavy = [m for m in ("torch", "sklearn", "litellm", "transformers", "duckdb") if m in sys.modules]
        print(heavy, callable(traitlab.fit), "torch" in sys.modules)
    """)
    assert out.split() == ["[]", "True", "False"]  # fit's module needs sklearn, not torch


def test_scoring_with_the_shipped_reward_stays_light():
    # a policy's reward process starts often: loading and scoring need neither torch nor the audit's statistics
    out = _run("""
        import sys
        from traitlab.judges.reward import load_reward
        from traitlab.types import Dialogue, Message
        r = load_reward()
        r.score([Dialogue(id="a", target_role="w", messages=[Message(role="q", content="hi"),
                                                          Message(role="w", content="hey lol")])])
        print([m for m in ("torch", "scipy.stats", "traitlab.judges.audit") if m in sys.modules])
        print(r.audit.folds > 1, "traitlab.judges.audit" in sys.modules)
    """)
    assert out.split("\n")[:2] == ["[]", "True True"]


def test_every_public_name_resolves_to_its_stage_object():
    for name in api.EXPORTS:
        assert getattr(traitlab, name) is api.resolve(name), name
    from traitlab.discovery.discover import discover
    from traitlab.judges.aggregate import fit

    assert traitlab.discover is discover and traitlab.fit is fit and "discover" in dir(traitlab)
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        _ = traitlab.nonsense


def test_hal_is_a_registered_preset_through_the_entry_point():
    from importlib.metadata import entry_points

    from traitlab.presets import contrast_for_labels, get_preset

    assert "traitlab.presets.hal" in {ep.value for ep in entry_points(group="traitlab.plugins")}
    hal = get_preset("hal")
    assert (hal.contrast.positive, hal.contrast.negative, hal.contrast.target_role, hal.contrast.group) == (
        "human", "ai", "witness", "game_id")
    assert hal.path("traits", "/d").as_posix() == "/d/hal_turing/traits_hal32.json"
    assert callable(hal.extra["distill"]) and set(hal.extra["align"]["configs"]) == {"dpo", "grpo"}
    with pytest.raises(KeyError, match="no 'nope' file"):
        hal.path("nope", "/d")
    assert contrast_for_labels({"human", "ai"}) is hal.contrast and contrast_for_labels({"best"}) is None
    with pytest.raises(KeyError, match="no preset named 'other'"):
        get_preset("other")


class _Hub(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []  # noqa: RUF012

    def do_GET(self):
        _Hub.seen.append(self.path)
        self.send_response(404)
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_shipped_models_load_without_the_hub_and_the_hub_is_not_switched_off():
    """issue 11.9: importing traitlab must not set HF_HUB_OFFLINE; the MiniLM encoder and the GGUF judge load
    with the hub reachable (a loopback stand-in that records every request) and never ask it anything."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        out = _run("""
            import os, traitlab
            print("offline" if "HF_HUB_OFFLINE" in os.environ else "online")
            from traitlab.embed import load_encoder
            from traitlab.judges.local import load_local_model
            load_encoder(False)
            load_local_model()
            print("loaded")
        """, env)
    finally:
        server.shutdown()
    assert out.split() == ["online", "loaded"]
    assert _Hub.seen == []
