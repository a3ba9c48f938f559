"""The local reward as a Hugging Face model (saved beside an export as its ``auto_map`` modeling file).

Self-contained on purpose (torch and transformers only): ``LocalReward.export_hf`` copies this file next to
the weights so ``AutoModelForSequenceClassification.from_pretrained(dir, trust_remote_code=True)`` works
without traitlab installed. ``logits[:, 0]`` is the bounded calibrated log-odds that the judged speaker is
on the positive side (the LocalReward scalar before its validity gate); ``traits`` holds the predicted trait
ratings in ``config.trait_ids`` order.

The trait heads also read texting-style features computed from the raw text (case, punctuation, emoji),
which token ids of an uncased tokenizer cannot give back: pass them as ``style_features`` (traitlab's
``style_features`` of the judged turns) for the exact LocalReward score; without them the training-set mean
style is assumed, a documented approximation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import BertConfig, BertModel, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput


class TraitHead(torch.nn.Module):
    """Features -> standardised traits (MLP) -> linear scalar over the traits, then calibration and a bound.

    Bounded on purpose, so that no input, however far from the training data, gives an extreme value:
    standardised features are clipped to ``+-bounds[0]`` SDs, traits to the range the judge used
    (``trait_lo``..``trait_hi``), and the calibrated log-odds go through ``bounds[1] * tanh(z / bounds[1])``.
    The scalar is linear in the (clipped) predicted traits, so it is explained trait by trait; the
    standardisation, range and calibration constants are buffers, saved with the weights. GELU is the tanh
    form so that traitlab's numpy inference reproduces it exactly.

    ``members`` > 1 holds an ensemble of independently trained heads side by side (:func:`merge`): the trunk's
    layers are the members' stacked (the second block-diagonal), each member's traits are clipped on their own,
    and the scalar reads all of them with each member's weights divided by ``members``, so it is exactly the
    members' mean logit; the traits given back are the members' mean.
    """

    def __init__(self, n_in: int, hidden: int, n_traits: int, dropout: float = 0.1, members: int = 1):
        super().__init__()
        self.members, self.n_traits = members, n_traits
        self.trunk = torch.nn.Sequential(torch.nn.Linear(n_in, members * hidden), torch.nn.GELU(approximate="tanh"),
                                         torch.nn.Dropout(dropout), torch.nn.Linear(members * hidden,
                                                                                    members * n_traits))
        self.head = torch.nn.Linear(members * n_traits, 1)
        for name, size in (("x_mean", n_in), ("x_scale", n_in), ("trait_mean", n_traits), ("trait_scale", n_traits)):
            self.register_buffer(name, torch.zeros(size) if "mean" in name else torch.ones(size))
        self.register_buffer("trait_lo", torch.full((n_traits,), -1e6))
        self.register_buffer("trait_hi", torch.full((n_traits,), 1e6))
        self.register_buffer("calibration", torch.tensor([1.0, 0.0]))
        self.register_buffer("bounds", torch.tensor([4.0, 8.0]))

    def standardised(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(standardised traits, standardised clipped traits, uncalibrated logit) - what training fits."""
        xs = ((x - self.x_mean) / self.x_scale).clamp(-self.bounds[0], self.bounds[0])
        z = self.trunk(xs).unflatten(-1, (self.members, self.n_traits))
        lo = (self.trait_lo - self.trait_mean) / self.trait_scale
        hi = (self.trait_hi - self.trait_mean) / self.trait_scale
        zc = torch.maximum(torch.minimum(z, hi), lo)
        return z.mean(-2), zc.mean(-2), self.head(zc.flatten(-2)).squeeze(-1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(traits on the rating scale, bounded calibrated log-odds of the positive side)."""
        _, zc, logit = self.standardised(x)
        cal = self.calibration[0] * logit + self.calibration[1]
        return zc * self.trait_scale + self.trait_mean, self.bounds[1] * torch.tanh(cal / self.bounds[1])


def merge(heads: list[TraitHead]) -> TraitHead:
    """One TraitHead scoring the mean logit of independently trained ``heads`` (same shapes and buffers)."""
    first = heads[0]
    (n_hidden, n_in), k = first.trunk[0].weight.shape, len(heads)
    out = TraitHead(n_in, n_hidden, first.n_traits, first.trunk[2].p, members=k)
    with torch.no_grad():
        out.trunk[0].weight.copy_(torch.cat([h.trunk[0].weight for h in heads]))
        out.trunk[0].bias.copy_(torch.cat([h.trunk[0].bias for h in heads]))
        out.trunk[3].weight.copy_(torch.block_diag(*(h.trunk[3].weight for h in heads)))
        out.trunk[3].bias.copy_(torch.cat([h.trunk[3].bias for h in heads]))
        out.head.weight.copy_(torch.cat([h.head.weight for h in heads], dim=1) / k)
        out.head.bias.copy_(torch.stack([h.head.bias for h in heads]).mean(0))
        for name, buf in first.named_buffers():
            getattr(out, name).copy_(buf)
    return out.eval()


class TraitlabRewardConfig(PretrainedConfig):
    model_type = "traitlab_reward"

    def __init__(self, encoder: dict | None = None, hidden: int = 128, dropout: float = 0.1,
                 trait_ids: list[str] | None = None, style_names: list[str] | None = None,
                 style_default: list[float] | None = None, trait_set_hash: str = "", members: int = 1, **kwargs):
        self.encoder = encoder or {}
        self.hidden = hidden
        self.members = members
        self.dropout = dropout
        self.trait_ids = list(trait_ids or [])
        self.style_names = list(style_names or [])
        self.style_default = list(style_default or [0.0] * len(self.style_names))
        self.trait_set_hash = trait_set_hash
        kwargs.setdefault("num_labels", 1)
        super().__init__(**kwargs)


@dataclass
class RewardOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    traits: torch.Tensor | None = None


class TraitlabRewardModel(PreTrainedModel):
    """all-MiniLM-L6-v2 mean pooling + the trait heads; ``logits`` has one column (num_labels=1)."""

    config_class = TraitlabRewardConfig
    base_model_prefix = "traitlab_reward"

    def __init__(self, config: TraitlabRewardConfig):
        super().__init__(config)
        self.bert = BertModel(BertConfig(**config.encoder), add_pooling_layer=False)
        n_style = len(config.style_names)
        self.reward_head = TraitHead(self.bert.config.hidden_size + n_style, config.hidden, len(config.trait_ids),
                                     config.dropout, config.members)
        self.register_buffer("style_default", torch.tensor(config.style_default, dtype=torch.float32))
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        """Weights come from the export; nothing is trained from scratch here."""

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, style_features: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs) -> RewardOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)
        if style_features is None:
            style_features = self.style_default.expand(pooled.shape[0], -1)
        traits, logit = self.reward_head(torch.cat([pooled, style_features.to(pooled.dtype)], dim=-1))
        logits = logit.unsqueeze(-1)
        loss = None
        if labels is not None:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, labels.to(logit.dtype).view(-1))
        return RewardOutput(loss=loss, logits=logits, traits=traits)
