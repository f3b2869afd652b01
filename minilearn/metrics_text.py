"""Metrics for sequences of tokens: corpus BLEU (fastai's `CorpusBLEUMetric`).

Perplexity, the other language-model metric, is a function of the loss: `minilearn.metrics.perplexity`.
"""

from __future__ import annotations

import math
from collections import Counter

from minilearn.distributed import all_reduce_sum
from minilearn.metrics import Metric

__all__ = ["CorpusBLEUMetric"]


def _ngrams(tokens: list, n: int) -> list[tuple]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def _clipped_matches(pred: list, targ: list, n: int) -> tuple[int, int]:
    """How many of `pred`'s n-grams occur in `targ` (each counted at most as often as it occurs
    there), and how many n-grams `pred` has."""
    pred_counts, targ_counts = Counter(_ngrams(pred, n)), Counter(_ngrams(targ, n))
    return sum(min(c, targ_counts[g]) for g, c in pred_counts.items()), max(len(pred) - n + 1, 0)


class CorpusBLEUMetric(Metric):
    """BLEU over the whole validation corpus: the geometric mean of the 1- to 4-gram precisions of
    the predicted tokens (argmax along `axis`) against the target tokens, times the brevity
    penalty, with the counts summed over every sentence before dividing (corpus BLEU, not a mean
    of sentence scores). A sentence with no matching n-gram of some order counts 1/2, then 1/4,
    ... for it ("exponential" smoothing, as fastai's). `vocab_sz` is fastai's argument and is not
    needed here (n-grams are compared as tuples)."""

    def __init__(self, vocab_sz: int = 5000, axis: int = -1):
        self.vocab_sz, self.axis = vocab_sz, axis
        self.reset()

    def reset(self) -> None:
        self.pred_len, self.targ_len = 0, 0
        self.corrects, self.counts = [0.0] * 4, [0] * 4

    def accumulate(self, learn) -> None:
        if learn.training:
            return
        preds = learn.pred.detach().argmax(dim=self.axis).cpu().tolist()
        for pred, targ in zip(preds, learn.yb[0].detach().cpu().tolist()):
            self.pred_len += len(pred)
            self.targ_len += len(targ)
            smooth = 1
            for n in range(1, 5):
                matches, total = _clipped_matches(pred, targ, n)
                if matches == 0:
                    smooth *= 2
                    matches = 1 / smooth
                self.corrects[n - 1] += matches
                self.counts[n - 1] += total

    def sync(self) -> None:
        """Every process's counts added up, so each holds the whole corpus's."""
        sums = all_reduce_sum(self.pred_len, self.targ_len, *self.corrects, *self.counts)
        self.pred_len, self.targ_len = int(round(sums[0])), int(round(sums[1]))
        self.corrects, self.counts = list(sums[2:6]), [int(round(c)) for c in sums[6:]]

    @property
    def value(self):
        if not any(self.counts):
            return None
        if max(self.corrects) == 0 or min(self.counts) == 0:  # (no 4-gram at all: sentences under 4 tokens)
            return 0.0
        precisions = [c / t for c, t in zip(self.corrects, self.counts)]
        brevity = math.exp(1 - self.targ_len / self.pred_len) if self.pred_len < self.targ_len else 1.0
        return brevity * math.prod(precisions) ** 0.25

    @property
    def name(self) -> str:
        return "corpus_bleu"
