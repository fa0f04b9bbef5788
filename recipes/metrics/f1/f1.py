"""F1 over an explicit label set (scikit-learn), with out-of-vocabulary predictions handled as upstream OpenTSLM.

With ``labels`` given, scikit-learn scores only those classes: a prediction outside the set is a false negative of
its true class and a false positive of no class, so it cannot add a new class to the macro average. A class of the
set that is neither present nor predicted scores 0 (``zero_division=0``), as upstream's hand-written F1 does.
"""

import datasets
import evaluate
from sklearn.metrics import f1_score

_DESCRIPTION = "F1 score over string labels with an explicit label set; macro average by default."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): predicted labels (may fall outside `labels`).
    references (`list` of `str`): gold labels.
    labels (`list` of `str`, *optional*): the label set; defaults to the sorted distinct references.
    average (`str` or `None`, defaults to `"macro"`): `"macro"`, `"micro"`, `"weighted"`, or `None` for one F1 per
        label (in the order of `labels`).
Returns:
    f1 (`float`, or `list` of `float` when `average=None`): in [0, 1].
Examples:
    >>> metric = evaluate.load("recipes/metrics/f1")
    >>> metric.compute(predictions=["a", "x", "b", "a"], references=["a", "a", "b", "b"], labels=["a", "b"])
    {'f1': 0.5833333333333333}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, labels=None, average="macro"):
        labels = sorted(set(references)) if labels is None else list(labels)
        if not labels or not predictions:
            return {"f1": [] if average is None else 0.0}
        score = f1_score(references, predictions, labels=labels, average=average, zero_division=0)
        return {"f1": [float(value) for value in score] if average is None else float(score)}
