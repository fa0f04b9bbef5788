"""Per-sample loss weighting for the recipes' trainer.

The causal-LM loss that transformers computes (and the original OpenTSLM trains with) averages over answer tokens: a
166-token caption weighs 26 times a six-token multiple-choice answer. When a stage mixes the two, for example
replaying stage 1's questions beside stage 2's captions, the short answers barely move the model. With
`loss_weighting: sample` every sample's answer counts as much as every other's: the loss is the mean over samples of
each sample's mean token loss, over the whole optimiser step (all gradient-accumulation micro-batches and, with
`average_tokens_across_devices`, all processes), so it does not depend on how the step is split.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from recipes.collator import IGNORE_INDEX

LOSS_WEIGHTINGS = ("token", "sample")


def shifted_labels(labels: torch.Tensor) -> torch.Tensor:
    """The label each position predicts (the next token's), -100 at the end of every row."""
    return nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]


def sample_ids(inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """An id per position, the same for all positions of one sample: one sample per row of a padded batch, several in
    a packed row (`position_ids` restart at 0 with each sample)."""
    labels = inputs["labels"]
    rows, length = labels.shape
    position_ids = inputs.get("position_ids")
    if position_ids is None:
        starts = torch.zeros_like(labels, dtype=torch.long)
        starts[:, 0] = 1
    else:
        starts = (position_ids == 0).long()
    row_offset = torch.arange(rows, device=labels.device)[:, None] * (length + 1)
    return starts.cumsum(-1) + row_offset


def count_samples(inputs: Mapping[str, torch.Tensor]) -> int:
    """Samples of a batch that have at least one label."""
    labelled = shifted_labels(inputs["labels"]) != IGNORE_INDEX
    return int(sample_ids(inputs)[labelled].unique().numel())


def sample_mean_loss(
    model: nn.Module, inputs: Mapping[str, torch.Tensor], num_samples: int | torch.Tensor | None = None
):
    """The sum over this batch's samples of each sample's mean token loss, divided by `num_samples` (default: the
    samples of this batch, which gives their mean). The LM head runs only on positions that predict a label. Returns
    the loss and the model's outputs."""
    labels = inputs["labels"]
    targets = shifted_labels(labels)
    labelled = targets != IGNORE_INDEX
    if not labelled.any():
        raise ValueError("sample_mean_loss: the batch has no labels.")
    keep = labelled.any(0).nonzero().squeeze(-1)  # positions with a label in any row
    model_inputs = {name: value for name, value in inputs.items() if name != "labels"}
    outputs = model(**model_inputs, logits_to_keep=keep)
    logits = outputs.logits.float()
    targets, ids, labelled = targets[:, keep], sample_ids(inputs)[:, keep], labelled[:, keep]
    token_loss = nn.functional.cross_entropy(
        logits[labelled], targets[labelled], reduction="none", ignore_index=IGNORE_INDEX
    )
    _, sample_of_token = ids[labelled].unique(return_inverse=True)
    tokens_per_sample = torch.bincount(sample_of_token).to(token_loss.dtype)
    per_sample = torch.zeros_like(tokens_per_sample).index_add_(0, sample_of_token, token_loss) / tokens_per_sample
    if num_samples is None:
        num_samples = per_sample.numel()
    return per_sample.sum() / num_samples, outputs
