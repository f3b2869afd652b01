"""Callbacks written the fastai way. fastai_callbacks.py is this file with only its imports changed."""
from minilearn import Callback, CancelBatchException, CancelFitException
import torch


class GradNormLogger(Callback):
    "Records the total gradient norm after every backward pass."
    def before_fit(self): self.norms = []
    def after_backward(self):
        norms = [p.grad.norm() for p in self.model.parameters() if p.grad is not None]
        self.norms.append(torch.stack(norms).norm().item())


class SkipOddBatches(Callback):
    "Skips every other training batch."
    def before_fit(self): self.skipped = 0
    def before_batch(self):
        if self.training and self.iter % 2 == 1:
            self.skipped += 1
            raise CancelBatchException()


class StopAfterNBatches(Callback):
    "A debugging aid: stops the fit after n training batches."
    def __init__(self, n): self.n = n
    def before_fit(self): self.seen = 0
    def after_batch(self):
        if not self.training: return
        self.seen += 1
        if self.seen >= self.n: raise CancelFitException()


class HalveInputs(Callback):
    "Changes the batch before the model sees it."
    def before_batch(self): self.learn.xb = (self.xb[0] * 0.5,)


class ScaleLoss(Callback):
    "Scales the loss that is differentiated (not the one that is reported)."
    def __init__(self, scale): self.scale = scale
    def after_loss(self):
        if self.training: self.learn.loss_grad = self.loss_grad * self.scale


class EpochLog(Callback):
    "Reads the loop's counters and the optimiser at the end of each epoch."
    def before_fit(self): self.rows = []
    def after_epoch(self):
        self.rows.append((self.epoch, self.n_epoch, round(self.pct_train, 6), self.opt.hypers[-1]['lr'], self.n_iter))


class PredStats(Callback):
    "Looks at predictions and targets of validation batches."
    def before_validate(self): self.means = []
    def after_pred(self):
        if not self.training: self.means.append((self.pred.mean().item(), self.yb[0].float().mean().item()))
