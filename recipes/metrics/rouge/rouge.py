"""ROUGE F-measures from Google's `rouge-score`, averaged over the samples (no bootstrap, so deterministic)."""

import datasets
import evaluate
from rouge_score import rouge_scorer

_DESCRIPTION = "ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum F-measures (rouge-score), mean over the samples."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): generated texts.
    references (`list` of `str`): one reference text per prediction.
    rouge_types (`list` of `str`, defaults to `["rouge1", "rouge2", "rougeL", "rougeLsum"]`).
    use_stemmer (`bool`, defaults to `False`): Porter stemming before matching.
Returns:
    one F-measure in [0, 1] per rouge type (0.0 each for no samples).
Examples:
    >>> metric = evaluate.load("recipes/metrics/rouge")
    >>> metric.compute(predictions=["the series rises"], references=["the series rises"])["rougeL"]
    1.0
"""

DEFAULT_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Lin, 2004: ROUGE: A Package for Automatic Evaluation of Summaries.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
        )

    def _compute(self, predictions, references, rouge_types=DEFAULT_TYPES, use_stemmer=False):
        rouge_types = list(rouge_types)
        if not predictions:
            return {rouge_type: 0.0 for rouge_type in rouge_types}
        scorer = rouge_scorer.RougeScorer(rouge_types, use_stemmer=use_stemmer)
        totals = dict.fromkeys(rouge_types, 0.0)
        for prediction, reference in zip(predictions, references):
            scores = scorer.score(reference, prediction)
            for rouge_type in rouge_types:
                totals[rouge_type] += scores[rouge_type].fmeasure
        return {rouge_type: total / len(predictions) for rouge_type, total in totals.items()}
