"""Corpus BLEU from sacreBLEU (0–100), with one or several references per prediction."""

import datasets
import evaluate
import sacrebleu

_DESCRIPTION = "sacreBLEU corpus BLEU with its default 13a tokenisation and exponential smoothing."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): generated texts.
    references (`list` of `str`, or `list` of `list` of `str`): the reference(s) of each prediction; every
        prediction needs the same number of references.
    lowercase (`bool`, defaults to `False`).
Returns:
    bleu (`float`, 0–100), precisions (`list` of 4 `float`), brevity_penalty, length_ratio, translation_length,
    reference_length.
Examples:
    >>> metric = evaluate.load("recipes/metrics/bleu")
    >>> metric.compute(predictions=["the series rises then falls"], references=["the series rises then falls"])["bleu"]
    100.00000000000004
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Bleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Post, 2018: A Call for Clarity in Reporting BLEU Scores.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Sequence(datasets.Value("string")),
                    }
                ),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
        )

    def _compute(self, predictions, references, lowercase=False):
        references = [[reference] if isinstance(reference, str) else list(reference) for reference in references]
        counts = {len(reference) for reference in references}
        if len(counts) > 1:
            raise ValueError(
                f"Predictions have different numbers of references ({sorted(counts)}); sacreBLEU needs the same "
                "number for every prediction."
            )
        if not predictions:
            return {
                "bleu": 0.0,
                "precisions": [0.0] * 4,
                "brevity_penalty": 0.0,
                "length_ratio": 0.0,
                "translation_length": 0,
                "reference_length": 0,
            }
        streams = [list(stream) for stream in zip(*references)]
        score = sacrebleu.corpus_bleu(predictions, streams, lowercase=lowercase)
        return {
            "bleu": score.score,
            "precisions": list(score.precisions),
            "brevity_penalty": score.bp,
            "length_ratio": score.sys_len / score.ref_len if score.ref_len else 0.0,
            "translation_length": score.sys_len,
            "reference_length": score.ref_len,
        }
