"""minilearn: fastai's Learner ergonomics over plain PyTorch — small, readable, fast.

Everything a user needs is importable from here, under fastai's names.
"""

from minilearn.callback import (
    CancelBackwardException, CancelBatchException, CancelEpochException, CancelFitException,
    CancelStepException, CancelTrainException, CancelValidException, Callback, GatherPredsCallback,
    TrainEvalCallback,
)
from minilearn.callbacks.progress import ProgressCallback
from minilearn.callbacks.recorder import Recorder
from minilearn.data import DataLoader, DataLoaders
from minilearn.learner import Learner
from minilearn.metrics import (
    AccumMetric, AvgLoss, AvgMetric, AvgSmoothLoss, Metric, StatefulMetric, accuracy, accuracy_multi,
    batch_accuracy, error_rate, mae, mnist_loss, mse,
)
from minilearn.optim import SGD, Optimizer
from minilearn import datasets

__version__ = "0.1.0"

__all__ = [
    "AccumMetric", "AvgLoss", "AvgMetric", "AvgSmoothLoss", "Callback", "CancelBackwardException",
    "CancelBatchException", "CancelEpochException", "CancelFitException", "CancelStepException",
    "CancelTrainException", "CancelValidException", "DataLoader", "DataLoaders", "GatherPredsCallback",
    "Learner", "Metric", "Optimizer", "ProgressCallback", "Recorder", "SGD", "StatefulMetric",
    "TrainEvalCallback", "accuracy", "accuracy_multi", "batch_accuracy", "datasets", "error_rate",
    "mae", "mnist_loss", "mse",
]
