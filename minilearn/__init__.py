"""minilearn: fastai's Learner ergonomics over plain PyTorch — small, readable, fast.

Everything a user needs is importable from here, under fastai's names.
"""

from minilearn.callback import (
    CancelBackwardException, CancelBatchException, CancelEpochException, CancelFitException,
    CancelStepException, CancelTrainException, CancelValidException, Callback,
    TrainEvalCallback, before_batch_cb, event,
)
from minilearn.callbacks.progress import ProgressCallback, ShowGraphCallback
from minilearn.callbacks.recorder import Recorder
from minilearn.callbacks.schedule import (
    ParamScheduler, SchedCos, SchedExp, SchedLin, SchedNo, SchedPoly, combine_scheds, combined_cos,
)
from minilearn.callbacks.lr_find import LRFinder, minimum, slide, steep, valley
from minilearn.callbacks.distributed import DistributedTrainer, distrib_ctx
from minilearn.distributed import (
    DistributedDL, distrib_barrier, is_rank0, num_distrib, rank_distrib, setup_distrib, teardown_distrib,
)
from minilearn.callbacks.backup import BackupCallback
from minilearn.callbacks.logger import CSVLogger
from minilearn.callbacks.tracker import (
    EarlyStoppingCallback, ReduceLROnPlateau, SaveModelCallback, TerminateOnNaNCallback, TrackerCallback,
)
from minilearn.callbacks.training import (
    BnFreeze, ChannelsLast, GradientAccumulation, GradientClip, MixedPrecision, ModelResetter, ShortEpochCallback,
    bn_types, set_bn_eval,
)
from minilearn.callbacks.preds import CollectDataCallback, FetchPredsCallback, GatherPredsCallback, MCDropoutCallback
from minilearn.export import InferenceLearner, load_learner
from minilearn.interpret import ClassificationInterpretation, Interpretation
from minilearn.callbacks.hooks import (
    ActivationStats, Hook, HookCallback, Hooks, dummy_eval, flatten_model, has_params, hook_output, hook_outputs,
    in_channels, layer_info, model_sizes, num_features_model, total_params,
)
from minilearn.init import GeneralRelu, init_weights, lsuv_init
from minilearn.layers import ConvLayer
from minilearn.callbacks.tensorboard import TensorBoardCallback
from minilearn.data import DataLoader, DataLoaders, TfmdDL, TorchLoader
from minilearn.data_files import (
    Affine, FileDataLoader, Flip, GrandparentSplitter, ImageDataLoaders, ImageFileDataset, ImageFileError,
    IndexSplitter, Normalize, RandomSplitter, Resize, aug_transforms, get_image_files, imagenet_stats, mnist_stats,
    parent_label, show_results,
)
from minilearn.learner import Learner
from minilearn.losses import (
    BaseLoss, BCELossFlat, BCEWithLogitsLossFlat, CrossEntropyLossFlat, DiceLoss, FocalLoss, FocalLossFlat, L1LossFlat,
    LabelSmoothingCrossEntropy, LabelSmoothingCrossEntropyFlat, MSELossFlat,
)
from minilearn.torch_basics import (
    L, Module, TensorBase, TensorImage, TensorMask, cast, default_device, find_bs, find_device, first, kept_modes,
    no_random, replacing_yield, set_seed, tensor, to_cpu, to_detach, to_device, to_np,
)
from minilearn.metrics_segmentation import Dice, DiceMulti, JaccardCoeff, foreground_acc
from minilearn.metrics_text import CorpusBLEUMetric
from minilearn.metrics import (
    AccumMetric, ActivationType, AvgLoss, AvgMetric, AvgSmoothLoss, LossMetric, LossMetrics, Metric, Perplexity,
    StatefulMetric, ValueMetric, accuracy, accuracy_multi, batch_accuracy, error_rate, exp_rmspe, flatten_check,
    mae, mnist_loss, mse, msle, perplexity, rmse, skm_to_fastai, top_k_accuracy,
)
from minilearn.metrics_sklearn import (
    APScoreBinary, APScoreMulti, BalancedAccuracy, BrierScore, BrierScoreMulti, CohenKappa, ExplainedVariance,
    F1Score, F1ScoreMulti, FBeta, FBetaMulti, HammingLoss, HammingLossMulti, Jaccard, JaccardMulti,
    MatthewsCorrCoef, MatthewsCorrCoefMulti, PearsonCorrCoef, Precision, PrecisionMulti, R2Score, Recall,
    RecallMulti, RocAuc, RocAucBinary, RocAucMulti, SpearmanCorrCoef,
)
from minilearn.optim import (
    SGD, Adam, BaseOptimizer, Lamb, Larc, Lookahead, Optimizer, QHAdam, RAdam, RMSProp, adam_step, average_grad,
    average_sqr_grad, debias, even_mults, l2_reg, lamb_step, larc_layer_lr, larc_step, momentum_step,
    norm_bias_params, qhadam_step, radam_step, ranger, rms_prop_step, sgd_step, step_stat, weight_decay,
)
from minilearn.optim_torch import OptimWrapper, make_opt_func, params_for_torch
from minilearn import datasets, scratch
from minilearn.scratch import ScratchBackward

__version__ = "0.1.0"

__all__ = [
    "BaseLoss", "BCELossFlat", "BCEWithLogitsLossFlat", "CrossEntropyLossFlat", "DiceLoss", "FocalLoss", "FocalLossFlat",
    "L1LossFlat", "LabelSmoothingCrossEntropy", "LabelSmoothingCrossEntropyFlat", "MSELossFlat",
    "L", "Module", "default_device", "find_bs", "find_device", "first", "kept_modes", "no_random", "replacing_yield", "set_seed", "tensor", "to_cpu",
    "to_detach", "to_device", "to_np",
    "BackupCallback", "EarlyStoppingCallback", "SaveModelCallback", "TrackerCallback", "CSVLogger", "ReduceLROnPlateau",
    "TerminateOnNaNCallback", "GradientAccumulation", "GradientClip", "MixedPrecision", "BnFreeze", "ChannelsLast",
    "ModelResetter", "ShortEpochCallback", "bn_types", "set_bn_eval", "CollectDataCallback", "FetchPredsCallback", "MCDropoutCallback", "InferenceLearner",
    "load_learner", "DistributedDL", "DistributedTrainer", "distrib_barrier", "distrib_ctx", "is_rank0",
    "num_distrib", "rank_distrib", "setup_distrib", "teardown_distrib", "scratch", "ScratchBackward",
    "Adam", "BaseOptimizer", "LRFinder", "Lamb", "Lookahead", "OptimWrapper", "ParamScheduler", "RAdam",
    "RMSProp", "SchedCos", "SchedExp", "SchedLin", "SchedNo", "SchedPoly", "combine_scheds", "combined_cos",
    "even_mults", "make_opt_func", "minimum", "norm_bias_params", "params_for_torch", "ranger", "slide",
    "steep", "valley",
    "AccumMetric", "AvgLoss", "AvgMetric", "AvgSmoothLoss", "ValueMetric", "Callback", "CancelBackwardException",
    "CancelBatchException", "CancelEpochException", "CancelFitException", "CancelStepException",
    "CancelTrainException", "CancelValidException", "DataLoader", "DataLoaders", "TfmdDL", "GatherPredsCallback",
    "Learner", "Metric", "Optimizer", "ProgressCallback", "ShowGraphCallback", "show_image", "show_images", "TorchLoader", "Recorder", "SGD", "StatefulMetric",
    "TrainEvalCallback", "before_batch_cb", "event", "accuracy", "accuracy_multi", "batch_accuracy", "datasets", "error_rate",
    "mae", "mnist_loss", "mse",
    "ActivationType", "LossMetric", "LossMetrics", "Perplexity", "exp_rmspe", "flatten_check", "msle", "perplexity",
    "rmse", "skm_to_fastai", "top_k_accuracy",
    "APScoreBinary", "APScoreMulti", "BalancedAccuracy", "BrierScore", "BrierScoreMulti", "CohenKappa",
    "ExplainedVariance", "F1Score", "F1ScoreMulti", "FBeta", "FBetaMulti", "HammingLoss", "HammingLossMulti",
    "Jaccard", "JaccardMulti", "MatthewsCorrCoef", "MatthewsCorrCoefMulti", "PearsonCorrCoef", "Precision",
    "PrecisionMulti", "R2Score", "Recall", "RecallMulti", "RocAuc", "RocAucBinary", "RocAucMulti",
    "SpearmanCorrCoef", "Dice", "DiceMulti", "JaccardCoeff", "foreground_acc", "CorpusBLEUMetric",
    "TensorBase", "TensorImage", "TensorMask", "cast",
    "Larc", "QHAdam", "adam_step", "average_grad", "average_sqr_grad", "debias", "l2_reg", "lamb_step",
    "larc_layer_lr", "larc_step", "momentum_step", "qhadam_step", "radam_step", "rms_prop_step", "sgd_step",
    "step_stat", "weight_decay", "ClassificationInterpretation", "Interpretation",
    "ActivationStats", "Hook", "HookCallback", "Hooks", "dummy_eval", "flatten_model", "has_params", "hook_output",
    "hook_outputs", "in_channels", "layer_info", "model_sizes", "num_features_model", "total_params",
    "GeneralRelu", "init_weights", "lsuv_init", "ConvLayer", "TensorBoardCallback",
    "Affine", "FileDataLoader", "Flip", "GrandparentSplitter", "ImageDataLoaders", "ImageFileDataset", "ImageFileError",
    "IndexSplitter", "Normalize", "RandomSplitter", "Resize", "aug_transforms", "get_image_files", "imagenet_stats",
    "mnist_stats", "parent_label", "show_results",
]


def __getattr__(name: str):
    """`show_image` / `show_images` come from `minilearn.plotting`, imported when first asked for,
    so that `import minilearn` does not load matplotlib (about half a second)."""
    if name in ("show_image", "show_images"):
        from minilearn import plotting

        return getattr(plotting, name)
    raise AttributeError(f"module 'minilearn' has no attribute {name!r}")
