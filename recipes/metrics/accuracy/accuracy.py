"""Exact-match accuracy over strings (labels after parsing and canonicalisation)."""

import datasets
import evaluate

_DESCRIPTION = "Accuracy: the fraction of predictions equal to their reference (exact string match)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): predicted labels.
    references (`list` of `str`): gold labels.
Returns:
    accuracy (`float`): correct / total, in [0, 1]; 0.0 for no samples.
Examples:
    >>> metric = evaluate.load("recipes/metrics/accuracy")
    >>> metric.compute(predictions=["walking", "lying"], references=["walking", "sitting"])
    {'accuracy': 0.5}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        if not predictions:
            return {"accuracy": 0.0}
        correct = sum(prediction == reference for prediction, reference in zip(predictions, references))
        return {"accuracy": correct / len(predictions)}
