"""`loss_weighting: sample`: every sample's answer weighs alike, packed or padded, however the step is split."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from test_recipes import SHORT_RUN, assets, run_script, trained_weights, write_config  # noqa: F401 (fixture)
from tiny import prompts, series_batch, tiny_opentslm, tiny_processor

from recipes.collator import encode_with_answers
from recipes.losses import count_samples, sample_ids, sample_mean_loss

pytestmark = pytest.mark.usefixtures("one_thread")

# Answers of very different lengths: per token the long one dominates, per sample they weigh alike.
ANSWERS = ["Up.", "A flat line with noise around its mean, then a slow rise to the end", "(b)"]


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


def encoded(processor, indices=(0, 1, 2), padding_free=False):
    batch = [series_batch()[i] for i in indices]
    texts = [prompts(processor, series_batch())[i] for i in indices]
    answers = [ANSWERS[i] for i in indices]
    return encode_with_answers(processor, texts, answers, batch, padding_free=padding_free)


def test_sample_ids_and_counts(processor):
    padded, packed = encoded(processor), encoded(processor, padding_free=True)
    assert packed["input_ids"].shape[0] == 1
    assert count_samples(padded) == count_samples(packed) == 3
    ids = sample_ids(packed)[0]
    assert ids.unique().numel() == 3 and (ids.diff() >= 0).all()
    assert (ids.diff() != 0).sum() == 2 and (packed["position_ids"][0][1:][ids.diff() != 0] == 0).all()


@pytest.mark.parametrize("padding_free", [False, True])
def test_loss_is_the_mean_of_each_samples_mean_token_loss(processor, padding_free):
    model = tiny_opentslm(processor).float()
    loss, _ = sample_mean_loss(model, encoded(processor, padding_free=padding_free))
    alone = [model(**encoded(processor, (i,))).loss for i in range(3)]  # the model's own per-token mean, one sample
    torch.testing.assert_close(loss, torch.stack(alone).mean(), atol=1e-5, rtol=1e-5)
    token_mean = model(**encoded(processor)).loss
    assert abs(loss.item() - token_mean.item()) > 1e-3  # the answers' lengths differ, so the two weightings do


def test_packed_and_padded_give_the_same_loss_and_gradients(processor):
    model = tiny_opentslm(processor).float()
    results = []
    for padding_free in (False, True):
        model.zero_grad(set_to_none=True)
        loss, _ = sample_mean_loss(model, encoded(processor, padding_free=padding_free))
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (padded_loss, padded_grads), (packed_loss, packed_grads) = results
    torch.testing.assert_close(packed_loss, padded_loss, atol=1e-5, rtol=1e-5)
    assert packed_grads.keys() == padded_grads.keys() and len(packed_grads) > 10
    for name, grad in packed_grads.items():
        torch.testing.assert_close(grad, padded_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_split_batches_sum_to_the_whole(processor):
    """Divided by the step's sample count, the micro-batches' losses add up to the whole batch's loss."""
    model = tiny_opentslm(processor).float()
    whole, _ = sample_mean_loss(model, encoded(processor))
    parts = [sample_mean_loss(model, encoded(processor, part), num_samples=3)[0] for part in ((0, 2), (1,))]
    torch.testing.assert_close(sum(parts), whole, atol=1e-5, rtol=1e-5)


def test_a_batch_without_labels_is_an_error(processor):
    inputs = encoded(processor)
    inputs["labels"][:] = -100
    with pytest.raises(ValueError, match="no labels"):
        sample_mean_loss(tiny_opentslm(processor), inputs)


def test_recipe_trains_with_sample_weighting_however_the_step_is_split(tmp_path, assets):  # noqa: F811
    """Batch 4 in one micro-batch or in two of 2 (gradient accumulation): the same weights after training, a loss on
    the scale of the per-token loss (a mean over samples, not a sum divided by tokens), and other weights than
    per-token weighting or a loss emphasis give."""
    runs, losses = {}, {}
    for name, overrides in (
        ("whole", dict(loss_weighting="sample", per_device_train_batch_size=4)),
        ("accumulated", dict(loss_weighting="sample", per_device_train_batch_size=2, gradient_accumulation_steps=2)),
        ("token", dict(loss_weighting="token", per_device_train_batch_size=4)),
        (
            "emphasis",
            dict(
                loss_weighting="sample",
                per_device_train_batch_size=4,
                loss_emphasis="rises|falls",
                loss_emphasis_weight=5.0,
            ),
        ),
    ):
        config = write_config(tmp_path / name, assets, **{**SHORT_RUN, "max_steps": 3, **overrides}, padding_free=True)
        run_script([sys.executable, "recipes/stage2.py", "--config", str(config)])
        runs[name] = trained_weights(tmp_path / name / "out")
        losses[name] = json.loads((tmp_path / name / "out" / "stage_metrics.json").read_text())["train"]["train_loss"]
    assert runs["whole"].keys() == runs["accumulated"].keys() == runs["token"].keys()
    for key, value in runs["whole"].items():
        torch.testing.assert_close(runs["accumulated"][key], value, atol=2e-5, rtol=1e-4, msg=key)
    assert losses["whole"] == pytest.approx(losses["accumulated"], rel=1e-4)
    assert 0.7 < losses["whole"] / losses["token"] < 1.4, losses
    assert max((runs["whole"][k] - runs["token"][k]).abs().max().item() for k in runs["token"]) > 1e-4
    # weighing the word that tells rising from falling more trains other weights
    assert max((runs["whole"][k] - runs["emphasis"][k]).abs().max().item() for k in runs["token"]) > 1e-4


def test_weighted_loss_is_the_same_without_the_logit_free_path(processor, monkeypatch):
    from modeling_opentslm import OpenTSLMForCausalLM

    model = tiny_opentslm(processor).float()
    inputs = encoded(processor, padding_free=True)
    results = []
    for logit_free in (True, False):
        monkeypatch.setattr(OpenTSLMForCausalLM, "_loss_without_logits", lambda self, keep=logit_free: keep)
        model.zero_grad(set_to_none=True)
        loss, _ = sample_mean_loss(model, inputs)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss, grads), (reference_loss, reference_grads) = results
    torch.testing.assert_close(loss, reference_loss, atol=1e-6, rtol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, reference_grads[name], atol=1e-6, rtol=1e-5, msg=name)


def test_label_weights_need_skip_logits(processor):
    inputs = encoded(processor)
    with pytest.raises(ValueError, match="label_weights needs skip_logits"):
        tiny_opentslm(processor)(**inputs, label_weights=torch.ones_like(inputs["labels"], dtype=torch.float))


def test_loss_weights_weigh_tokens_within_each_sample(processor):
    """`loss_weights` (`LossEmphasis`): within a sample, the loss is the weighted mean of its token losses; each sample
    still counts once; all-ones weights change nothing; packed and padded agree."""
    model = tiny_opentslm(processor).float()
    inputs = encoded(processor, (1,))
    labelled = inputs["labels"] != -100
    labelled[..., 0] = False
    positions = labelled[0].nonzero().flatten().tolist()
    token_losses = []
    for position in positions:  # each token's own loss: all the weight on it
        one_hot = torch.zeros_like(inputs["labels"], dtype=torch.float)
        one_hot[0, position] = 1.0
        token_losses.append(sample_mean_loss(model, {**inputs, "loss_weights": one_hot})[0])
    token_losses = torch.stack(token_losses)
    torch.testing.assert_close(token_losses.mean(), sample_mean_loss(model, inputs)[0], atol=1e-5, rtol=1e-5)
    weights = torch.ones(len(positions))
    weights[-3:] = 6.0  # the last answer tokens and EOS
    emphasis = torch.zeros_like(inputs["labels"], dtype=torch.float)
    emphasis[0, positions] = weights
    loss, _ = sample_mean_loss(model, {**inputs, "loss_weights": emphasis})
    torch.testing.assert_close(loss, (weights * token_losses).sum() / weights.sum(), atol=1e-5, rtol=1e-5)

    def with_weights(padding_free):
        batch = encoded(processor, padding_free=padding_free)
        weights = torch.where(batch["labels"] != -100, 1.0, 0.0)
        weights[-1, -2:] = 4.0  # the last sample's final tokens: the end of the last row, padded or packed
        return {**batch, "loss_weights": weights}

    padded, packed = with_weights(False), with_weights(True)
    ones = {**padded, "loss_weights": torch.where(padded["labels"] != -100, 1.0, 0.0)}
    plain = sample_mean_loss(model, encoded(processor))[0]
    torch.testing.assert_close(sample_mean_loss(model, ones)[0], plain, atol=1e-6, rtol=1e-6)
    weighted = sample_mean_loss(model, padded)[0]
    torch.testing.assert_close(sample_mean_loss(model, packed)[0], weighted, atol=1e-5, rtol=1e-5)
    assert abs(weighted.item() - plain.item()) > 1e-4
    with pytest.raises(ValueError, match="loss_weights has shape"):
        sample_mean_loss(model, {**padded, "loss_weights": padded["loss_weights"][:, 1:]})


@pytest.mark.parametrize(("loss_weighting", "training"), [("sample", False), ("token", True), ("token", False)])
def test_loss_weights_never_reach_the_trainers_own_loss(monkeypatch, loss_weighting, training):
    """Evaluation (and per-token training) go through `Trainer.compute_loss`, which calls the model with every key of
    the batch: the trainer drops `loss_weights` before, so evaluation losses stay unweighted."""
    from types import SimpleNamespace

    from transformers import Trainer

    from recipes.sft import OpenTSLMTrainer

    seen = []
    monkeypatch.setattr(Trainer, "compute_loss", lambda self, model, inputs, *args, **kwargs: seen.append(inputs))
    trainer = SimpleNamespace(loss_weighting=loss_weighting, label_smoother=None)
    batch = {"input_ids": torch.ones(1, 3, dtype=torch.long), "labels": torch.ones(1, 3, dtype=torch.long)}
    OpenTSLMTrainer.compute_loss(
        trainer, SimpleNamespace(training=training), {**batch, "loss_weights": torch.ones(1, 3)}
    )
    assert len(seen) == 1 and "loss_weights" not in seen[0] and seen[0]["input_ids"] is batch["input_ids"]
