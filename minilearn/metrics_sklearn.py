"""fastai's metric set on scikit-learn and scipy: F1, precision, recall, AUC, kappa, R², ...

Each constructor returns an `AccumMetric` (see `minilearn.metrics`), named as fastai names it
(after scikit-learn's function: `F1Score()` is the column `f1_score`): the predictions of the
whole validation set are kept, gathered across processes under torch.distributed, and handed to
scikit-learn's function once, so the value is scikit-learn's on all of them (never a mean of
batch values). Names, arguments and defaults are fastai 2.8's:

- single-label classification (`axis` is the class dimension): the prediction is the argmax,
  or the probabilities where the metric needs scores (`RocAuc`: softmax; `RocAucBinary`,
  `APScoreBinary`: the positive class's softmax probability);
- multi-label (`...Multi`): sigmoid (unless `sigmoid=False`) then `thresh`, or the probabilities
  for the ranking metrics (`RocAucMulti`, `APScoreMulti`; fastai takes their argmax when
  `sigmoid=False`, which scikit-learn refuses); `MatthewsCorrCoefMulti` and `BrierScoreMulti`
  score every (item, label) pair (fastai's 2-d call is refused, or read as one multi-class row
  per item);
- regression: the outputs as they are.

scikit-learn and scipy are optional (`pip install "minilearn[sklearn]"`); they are imported when
a metric is made, and a missing one is a clear ImportError naming the metric.
"""

from __future__ import annotations

import importlib

from minilearn.metrics import AccumMetric, ActivationType, skm_to_fastai

__all__ = [
    "APScoreBinary", "APScoreMulti", "BalancedAccuracy", "BrierScore", "BrierScoreMulti", "CohenKappa",
    "ExplainedVariance", "F1Score", "F1ScoreMulti", "FBeta", "FBetaMulti", "HammingLoss", "HammingLossMulti",
    "Jaccard", "JaccardMulti", "MatthewsCorrCoef", "MatthewsCorrCoefMulti", "PearsonCorrCoef", "Precision",
    "PrecisionMulti", "R2Score", "Recall", "RecallMulti", "RocAuc", "RocAucBinary", "RocAucMulti",
    "SpearmanCorrCoef",
]


def _need(module: str, metric: str):
    """`module` imported, or an ImportError saying which metric needs it and how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        package = "scikit-learn" if module.startswith("sklearn") else module.split(".")[0]
        raise ImportError(f"{metric}: needs {package} (pip install \"minilearn[sklearn]\")") from e


def _skm(metric: str):
    return _need("sklearn.metrics", metric)


def _sigmoid_or_not(sigmoid: bool) -> ActivationType:
    return ActivationType.Sigmoid if sigmoid else ActivationType.No


# ---------------------------------------------------------------- single-label classification
def APScoreBinary(axis=-1, average="macro", pos_label=1, sample_weight=None) -> AccumMetric:
    """Average precision of the positive class's probability (binary)."""
    return skm_to_fastai(_skm("APScoreBinary").average_precision_score, axis=axis,
                         activation=ActivationType.BinarySoftmax, average=average, pos_label=pos_label,
                         sample_weight=sample_weight)


def BalancedAccuracy(axis=-1, sample_weight=None, adjusted=False) -> AccumMetric:
    """Mean of the recall of each class (balanced accuracy)."""
    return skm_to_fastai(_skm("BalancedAccuracy").balanced_accuracy_score, axis=axis, sample_weight=sample_weight,
                         adjusted=adjusted)


def BrierScore(axis=-1, sample_weight=None, pos_label=None) -> AccumMetric:
    """Brier score of the predicted classes against 0/1 targets (fastai's: of the argmax)."""
    return skm_to_fastai(_skm("BrierScore").brier_score_loss, axis=axis, sample_weight=sample_weight,
                         pos_label=pos_label)


def CohenKappa(axis=-1, labels=None, weights=None, sample_weight=None) -> AccumMetric:
    """Cohen's kappa: agreement of predicted and true classes beyond chance."""
    return skm_to_fastai(_skm("CohenKappa").cohen_kappa_score, axis=axis, labels=labels, weights=weights,
                         sample_weight=sample_weight)


def F1Score(axis=-1, labels=None, pos_label=1, average="binary", sample_weight=None) -> AccumMetric:
    """F1 score (binary by default; `average='macro'` etc. for several classes)."""
    return skm_to_fastai(_skm("F1Score").f1_score, axis=axis, labels=labels, pos_label=pos_label, average=average,
                         sample_weight=sample_weight)


def FBeta(beta, axis=-1, labels=None, pos_label=1, average="binary", sample_weight=None) -> AccumMetric:
    """F-beta score: recall weighted `beta` times as much as precision."""
    return skm_to_fastai(_skm("FBeta").fbeta_score, axis=axis, beta=beta, labels=labels, pos_label=pos_label,
                         average=average, sample_weight=sample_weight)


def HammingLoss(axis=-1, sample_weight=None) -> AccumMetric:
    """Fraction of wrong predictions (1 - accuracy for single-label)."""
    return skm_to_fastai(_skm("HammingLoss").hamming_loss, axis=axis, sample_weight=sample_weight)


def Jaccard(axis=-1, labels=None, pos_label=1, average="binary", sample_weight=None) -> AccumMetric:
    """Jaccard index (intersection over union of predicted and true labels)."""
    return skm_to_fastai(_skm("Jaccard").jaccard_score, axis=axis, labels=labels, pos_label=pos_label,
                         average=average, sample_weight=sample_weight)


def MatthewsCorrCoef(sample_weight=None, **kwargs) -> AccumMetric:
    """Matthews correlation coefficient of predicted and true classes."""
    return skm_to_fastai(_skm("MatthewsCorrCoef").matthews_corrcoef, sample_weight=sample_weight, **kwargs)


def Precision(axis=-1, labels=None, pos_label=1, average="binary", sample_weight=None) -> AccumMetric:
    """Precision: the fraction of predicted positives that are positive."""
    return skm_to_fastai(_skm("Precision").precision_score, axis=axis, labels=labels, pos_label=pos_label,
                         average=average, sample_weight=sample_weight)


def Recall(axis=-1, labels=None, pos_label=1, average="binary", sample_weight=None) -> AccumMetric:
    """Recall: the fraction of positives predicted positive."""
    return skm_to_fastai(_skm("Recall").recall_score, axis=axis, labels=labels, pos_label=pos_label,
                         average=average, sample_weight=sample_weight)


def RocAuc(axis=-1, average="macro", sample_weight=None, max_fpr=None, multi_class="ovr") -> AccumMetric:
    """Area under the ROC curve of the softmax probabilities, one class against the rest
    (`multi_class='ovo'`: each pair); the targets are class indices."""
    if multi_class == "raise":
        raise ValueError("multi_class: 'raise' is for binary problems; use RocAucBinary for them")
    return skm_to_fastai(_skm("RocAuc").roc_auc_score, axis=axis, activation=ActivationType.Softmax, flatten=False,
                         average=average, sample_weight=sample_weight, max_fpr=max_fpr, multi_class=multi_class)


def RocAucBinary(axis=-1, average="macro", sample_weight=None, max_fpr=None, multi_class="raise") -> AccumMetric:
    """Area under the ROC curve of the positive class's softmax probability (binary)."""
    return skm_to_fastai(_skm("RocAucBinary").roc_auc_score, axis=axis, activation=ActivationType.BinarySoftmax,
                         average=average, sample_weight=sample_weight, max_fpr=max_fpr, multi_class=multi_class)


# ---------------------------------------------------------------- multi-label classification
def APScoreMulti(sigmoid=True, average="macro", pos_label=1, sample_weight=None) -> AccumMetric:
    """Average precision of each label's probability, averaged over labels (`average`)."""
    return skm_to_fastai(_skm("APScoreMulti").average_precision_score, is_class=False,
                         activation=_sigmoid_or_not(sigmoid), flatten=False, average=average, pos_label=pos_label, sample_weight=sample_weight)


def BrierScoreMulti(thresh=0.5, sigmoid=True, sample_weight=None, pos_label=None) -> AccumMetric:
    """Brier score of the thresholded labels, over every (item, label)."""
    return skm_to_fastai(_skm("BrierScoreMulti").brier_score_loss, thresh=thresh,
                         activation=_sigmoid_or_not(sigmoid), flatten=True, sample_weight=sample_weight,
                         pos_label=pos_label)


def F1ScoreMulti(thresh=0.5, sigmoid=True, labels=None, pos_label=1, average="macro",
                 sample_weight=None) -> AccumMetric:
    """F1 score of the thresholded labels, averaged over labels (`average`)."""
    return skm_to_fastai(_skm("F1ScoreMulti").f1_score, thresh=thresh, activation=_sigmoid_or_not(sigmoid),
                         flatten=False, labels=labels, pos_label=pos_label, average=average,
                         sample_weight=sample_weight)


def FBetaMulti(beta, thresh=0.5, sigmoid=True, labels=None, pos_label=1, average="macro",
               sample_weight=None) -> AccumMetric:
    """F-beta score of the thresholded labels, averaged over labels (`average`)."""
    return skm_to_fastai(_skm("FBetaMulti").fbeta_score, thresh=thresh, activation=_sigmoid_or_not(sigmoid),
                         flatten=False, beta=beta, labels=labels, pos_label=pos_label, average=average,
                         sample_weight=sample_weight)


def HammingLossMulti(thresh=0.5, sigmoid=True, labels=None, sample_weight=None) -> AccumMetric:
    """Fraction of (item, label) pairs predicted wrong."""
    # scikit-learn's hamming_loss takes no `labels` any more; fastai's argument is kept and unused
    return skm_to_fastai(_skm("HammingLossMulti").hamming_loss, thresh=thresh, activation=_sigmoid_or_not(sigmoid),
                         flatten=False, sample_weight=sample_weight)


def JaccardMulti(thresh=0.5, sigmoid=True, labels=None, pos_label=1, average="macro",
                 sample_weight=None) -> AccumMetric:
    """Jaccard index of the thresholded labels, averaged over labels (`average`)."""
    return skm_to_fastai(_skm("JaccardMulti").jaccard_score, thresh=thresh, activation=_sigmoid_or_not(sigmoid),
                         flatten=False, labels=labels, pos_label=pos_label, average=average,
                         sample_weight=sample_weight)


def MatthewsCorrCoefMulti(thresh=0.5, sigmoid=True, sample_weight=None) -> AccumMetric:
    """Matthews correlation coefficient over every (item, label) of the thresholded labels."""
    return skm_to_fastai(_skm("MatthewsCorrCoefMulti").matthews_corrcoef, thresh=thresh,
                         activation=_sigmoid_or_not(sigmoid), flatten=True, sample_weight=sample_weight)


def PrecisionMulti(thresh=0.5, sigmoid=True, labels=None, pos_label=1, average="macro",
                   sample_weight=None) -> AccumMetric:
    """Precision of the thresholded labels, averaged over labels (`average`)."""
    return skm_to_fastai(_skm("PrecisionMulti").precision_score, thresh=thresh, activation=_sigmoid_or_not(sigmoid),
                         flatten=False, labels=labels, pos_label=pos_label, average=average,
                         sample_weight=sample_weight)


def RecallMulti(thresh=0.5, sigmoid=True, labels=None, pos_label=1, average="macro",
                sample_weight=None) -> AccumMetric:
    """Recall of the thresholded labels, averaged over labels (`average`)."""
    return skm_to_fastai(_skm("RecallMulti").recall_score, thresh=thresh, activation=_sigmoid_or_not(sigmoid),
                         flatten=False, labels=labels, pos_label=pos_label, average=average,
                         sample_weight=sample_weight)


def RocAucMulti(sigmoid=True, average="macro", sample_weight=None, max_fpr=None) -> AccumMetric:
    """Area under the ROC curve of each label's probability, averaged over labels (`average`)."""
    return skm_to_fastai(_skm("RocAucMulti").roc_auc_score, is_class=False, activation=_sigmoid_or_not(sigmoid),
                         flatten=False,
                         average=average, sample_weight=sample_weight, max_fpr=max_fpr)


# ---------------------------------------------------------------- regression
def ExplainedVariance(sample_weight=None) -> AccumMetric:
    """Explained variance score of the outputs."""
    return skm_to_fastai(_skm("ExplainedVariance").explained_variance_score, is_class=False,
                         sample_weight=sample_weight)


def R2Score(sample_weight=None) -> AccumMetric:
    """Coefficient of determination R² of the outputs."""
    return skm_to_fastai(_skm("R2Score").r2_score, is_class=False, sample_weight=sample_weight)


def PearsonCorrCoef(dim_argmax=None, activation=ActivationType.No, thresh=None, to_np=False, invert_arg=False,
                    flatten=True) -> AccumMetric:
    """Pearson correlation of the outputs and the targets (scipy's)."""
    stats = _need("scipy.stats", "PearsonCorrCoef")

    def pearsonr(x, y):
        return stats.pearsonr(_np(x), _np(y))[0]

    return AccumMetric(pearsonr, dim_argmax=dim_argmax, activation=activation, thresh=thresh, to_np=to_np,
                       invert_arg=invert_arg, flatten=flatten)


def SpearmanCorrCoef(dim_argmax=None, axis=0, nan_policy="propagate", activation=ActivationType.No, thresh=None,
                     to_np=False, invert_arg=False, flatten=True) -> AccumMetric:
    """Spearman rank correlation of the outputs and the targets (scipy's)."""
    stats = _need("scipy.stats", "SpearmanCorrCoef")

    def spearmanr(x, y, **kwargs):
        return stats.spearmanr(_np(x), _np(y), **kwargs)[0]

    return AccumMetric(spearmanr, dim_argmax=dim_argmax, activation=activation, thresh=thresh, to_np=to_np,
                       invert_arg=invert_arg, flatten=flatten, axis=axis, nan_policy=nan_policy)


def _np(x):
    """A tensor as a CPU numpy array (scipy takes arrays); anything else as it is."""
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x
