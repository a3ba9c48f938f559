"""Shared fixtures. Real data lives beside the repo in ../shared/data (read-only, never copied in)."""

from __future__ import annotations

from pathlib import Path

import pytest

import traitlab  # noqa: F401  (sets LiteLLM's offline knobs before anything imports litellm)

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real HAL data folder; its absence is an error, not a skip."""
    if not (SHARED_DATA / "hal_turing" / "dialogues.jsonl").exists():
        raise FileNotFoundError(f"real data expected at {SHARED_DATA} (see README: tests use ../shared/data)")
    return SHARED_DATA


@pytest.fixture
def store(tmp_path):
    from traitlab.store import Store

    with Store(tmp_path / "t.duckdb") as s:
        yield s


@pytest.fixture(params=["litellm", "auto"])
def transport(request, monkeypatch):
    """Run a judge-client test over both transports: LiteLLM (+ instructor), and ``auto``, which takes the
    openai SDK fast path for the loopback server (``$TRAITLAB_TRANSPORT`` reaches subprocesses too)."""
    monkeypatch.setenv("TRAITLAB_TRANSPORT", request.param)
    return request.param
