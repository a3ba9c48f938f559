"""traitlab: make soft, qualitative behaviour of language models measurable, explainable and trainable."""

import os as _os

# LiteLLM fetches its model cost map from the network on first use unless told to use its bundled copy;
# traitlab never touches the network unless the user asks for it, so this must be set before any import
# of litellm, anywhere.
_os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
_os.environ.setdefault("HF_HUB_OFFLINE", "1")
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
