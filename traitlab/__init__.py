"""traitlab: make soft, qualitative behaviour of language models measurable, explainable and trainable.

The stage functions (``traitlab.discover``, ``score``, ``validate``, ``fit``, ``distill``, ...) and the nouns
they take are exposed lazily from :mod:`traitlab.api`: importing traitlab loads none of the heavy stacks.
"""

import os as _os

# LiteLLM fetches its model cost map from the network on first use unless told to use its bundled copy;
# traitlab never touches the network unless the user asks for it, so this must be set before any import
# of litellm, anywhere. The Hugging Face hub is left alone: what traitlab ships (the MiniLM encoder, the
# GGUF judge) is loaded from local paths with local_files_only, and a user's own model may need the hub.
_os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"


def _api():
    import importlib

    return importlib.import_module("traitlab.api")  # not ``from traitlab import api``: that asks __getattr__


def __getattr__(name: str):
    api = _api()
    if name in api.EXPORTS:
        value = api.resolve(name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'traitlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_api().EXPORTS})
