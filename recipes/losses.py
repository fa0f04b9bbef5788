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
    samples of this batch, which gives their mean). Each label weighs 1 / (its sample's labels x `num_samples`), and
    the model computes the weighted loss on the labelled positions only (`skip_logits`, `label_weights`). With
    `loss_weights` in `inputs` (`recipes.collator.LossEmphasis`) a sample's mean is weighted by them: a label weighs
    its loss weight / (the sum of its sample's loss weights x `num_samples`). Returns the loss and the model's
    outputs."""
    inputs = dict(inputs)
    loss_weights = inputs.pop("loss_weights", None)
    labels = inputs["labels"]
    labelled = labels != IGNORE_INDEX
    labelled[..., 0] = False  # the first label of a row predicts nothing, as the model's own shift drops it
    if not labelled.any():
        raise ValueError("sample_mean_loss: the batch has no labels.")
    # sample_ids are those of the predicting positions: the label at t + 1 belongs to the sample of position t
    ids = nn.functional.pad(sample_ids(inputs), (1, 0))[..., :-1][labelled]
    _, sample_of_label = ids.unique(return_inverse=True)
    if loss_weights is None:
        token_weights = torch.ones(sample_of_label.shape, dtype=torch.float32, device=labels.device)
    else:
        if loss_weights.shape != labels.shape:
            raise ValueError(f"loss_weights has shape {tuple(loss_weights.shape)}; labels {tuple(labels.shape)}.")
        token_weights = loss_weights.to(device=labels.device, dtype=torch.float32)[labelled]
    # index_add_ rather than a weighted bincount, which CUDA refuses under torch.use_deterministic_algorithms
    weight_per_sample = torch.zeros(int(sample_of_label.max()) + 1, device=labels.device).index_add_(
        0, sample_of_label, token_weights
    )
    if num_samples is None:
        num_samples = weight_per_sample.numel()
    weights = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
    weights[labelled] = token_weights / (weight_per_sample[sample_of_label] * num_samples)
    outputs = model(**inputs, skip_logits=True, label_weights=weights)
    return outputs.loss, outputs
