"""Corpus BLEU: nltk's numbers (where it is installed) and fastai's, counts summed over the corpus."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minilearn import CorpusBLEUMetric


class FakeLearn:
    training = False

    def __init__(self, pred_tokens, targ_tokens, vocab=20):
        self.pred = F.one_hot(torch.tensor(pred_tokens), vocab).float()  # scores whose argmax is the tokens
        self.yb = (torch.tensor(targ_tokens),)
        self.y = self.yb[0]


def bleu_of(batches):
    m = CorpusBLEUMetric()
    for pred, targ in batches:
        m.accumulate(FakeLearn(pred, targ))
    return m


def test_one_sentence_is_nltks_bleu_with_its_geometric_smoothing():
    nltk_bleu = pytest.importorskip("nltk.translate.bleu_score")
    targ, pred = [1, 2, 3, 4, 5, 6, 1, 7, 8], [1, 9, 3, 4, 5, 6, 1, 10, 8]
    expected = nltk_bleu.corpus_bleu([[targ]], [pred], smoothing_function=nltk_bleu.SmoothingFunction().method3)
    assert bleu_of([([pred], [targ])]).value == pytest.approx(expected, rel=1e-12)


def test_a_corpus_is_nltks_corpus_bleu_summed_over_sentences_and_batches():
    nltk_bleu = pytest.importorskip("nltk.translate.bleu_score")
    g = torch.Generator().manual_seed(0)
    targs = torch.randint(0, 6, (12, 10), generator=g)
    preds = torch.where(torch.rand(12, 10, generator=g) < 0.9, targs, torch.randint(0, 6, (12, 10), generator=g))
    expected = nltk_bleu.corpus_bleu([[t] for t in targs.tolist()], preds.tolist())
    m = bleu_of([(preds.tolist(), targs.tolist())])
    # enough overlap that no sentence needs smoothing (whole counts), so corpus BLEU means the same in both
    assert all(float(c).is_integer() for c in m.corrects)
    whole = m.value
    batched = bleu_of([(preds[i:i + 5].tolist(), targs[i:i + 5].tolist()) for i in (0, 5, 10)]).value
    assert whole == pytest.approx(expected, rel=1e-9) and batched == pytest.approx(whole, rel=1e-12)


def test_smoothing_halves_for_each_order_without_a_match_and_edge_cases():
    # no 3- or 4-gram matches: the 3-gram count gets 1/2, the 4-gram one 1/4
    m = bleu_of([([[1, 2, 9, 3, 4, 8]], [[1, 2, 7, 3, 4, 6]])])
    assert m.corrects == [4, 2, 0.5, 0.25] and m.counts == [6, 5, 4, 3]
    assert m.value == pytest.approx((4 / 6 * 2 / 5 * 0.5 / 4 * 0.25 / 3) ** 0.25)
    short = bleu_of([([[1, 2, 3]], [[1, 2, 3, 4, 5, 6]])])  # brevity penalty, and no 4-gram at all
    assert short.value == 0.0
    assert CorpusBLEUMetric().value is None and CorpusBLEUMetric().name == "corpus_bleu"
    m = CorpusBLEUMetric()
    learn = FakeLearn([[1, 2, 3, 4]], [[1, 2, 3, 4]])
    learn.training = True
    m.accumulate(learn)  # training batches are not counted
    assert m.value is None


def test_same_value_as_fastai():
    fastai_metrics = pytest.importorskip("fastai.metrics")
    g = torch.Generator().manual_seed(1)
    targs = torch.randint(0, 8, (6, 12), generator=g)
    preds = torch.where(torch.rand(6, 12, generator=g) < 0.5, targs, torch.randint(0, 8, (6, 12), generator=g))
    ours, theirs = CorpusBLEUMetric(), fastai_metrics.CorpusBLEUMetric()
    theirs.reset()
    for i in (0, 3):
        learn = FakeLearn(preds[i:i + 3].tolist(), targs[i:i + 3].tolist(), vocab=8)
        ours.accumulate(learn)
        theirs.accumulate(learn)
    assert ours.value == pytest.approx(theirs.value, rel=1e-12)
