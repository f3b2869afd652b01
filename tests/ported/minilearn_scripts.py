"""Callbacks and short training scripts written the fastai way. fastai_scripts.py is this file with only its imports changed."""
from functools import partial
import torch
from torch import nn
from minilearn import Callback, FetchPredsCallback, event
from minilearn import Learner, Recorder
from minilearn import L, Module, find_bs, first, set_seed, tensor, to_detach, to_np
from minilearn import BCEWithLogitsLossFlat, CrossEntropyLossFlat, LabelSmoothingCrossEntropyFlat, MSELossFlat
from minilearn import accuracy, accuracy_multi, mse
from minilearn import SGD
from minilearn import BnFreeze, ShortEpochCallback
from minilearn import MCDropoutCallback
from minilearn import CollectDataCallback
from minilearn import ModelResetter


# ---------------------------------------------------------------- models (fastai's Module: no super().__init__())
class TinyNet(Module):
    "Two linear layers; the callbacks below reach `fc1` / `fc2` through the learner."
    def __init__(self, n_in, n_hidden, n_out, p=0.0):
        self.fc1 = nn.Linear(n_in, n_hidden)
        self.drop = nn.Dropout(p)
        self.fc2 = nn.Linear(n_hidden, n_out)
    def forward(self, x): return self.fc2(self.drop(torch.relu(self.fc1(x))))


class BodyHead(Module):
    "A body with BatchNorm and a head: the two parameter groups of `body_head_splitter`."
    def __init__(self, n_in, n_out):
        self.body = nn.Sequential(nn.Linear(n_in, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.head = nn.Linear(8, n_out)
    def forward(self, x): return self.head(self.body(x))


def body_head_splitter(m): return [list(m.body.parameters()), list(m.head.parameters())]


class Stateful(Module):
    "Keeps a state between batches, as an RNN keeps its hidden state; `reset()` clears it."
    def __init__(self, n_in, n_out):
        self.lin = nn.Linear(n_in, n_out)
        self.h, self.resets = None, 0
    def reset(self): self.h, self.resets = None, self.resets + 1
    def forward(self, x):
        out = self.lin(x)
        if self.h is not None: out = out + 0.5 * self.h
        self.h = out.detach().mean(0)
        return out


def shapes_of(dls):
    "Inputs and outputs of the model, read from the first batch."
    xb, yb = first(dls.train)
    return xb.shape[1], (yb.shape[1] if yb.ndim == 2 else int(yb.max()) + 1)


# ---------------------------------------------------------------- callbacks that read the learner's state
class TrackSmoothLoss(Callback):
    "Reads another callback by name: the Recorder's smoothed loss, after the Recorder has run."
    order, run_after = Recorder.order + 1, Recorder
    def before_fit(self): self.smooth, self.n_recorded = [], []
    def after_batch(self):
        if not self.training: return
        self.smooth.append((float(self.recorder.losses[-1]), self.smooth_loss.item()))
        self.n_recorded.append(len(self.recorder.losses))


class CountRecorded(Callback):
    "Relies on `run_after` alone (default order) to see the Recorder's entry for this batch."
    run_after = Recorder
    def before_fit(self): self.n_recorded = []
    def after_batch(self):
        if self.training: self.n_recorded.append(len(self.recorder.losses))


class PublishPredMean(Callback):
    "Sets an attribute on the learner for other callbacks to read."
    def after_pred(self): self.learn.pred_mean = self.pred.detach().mean().item()


class ReadPredMean(Callback):
    "Reads what another callback set with `self.learn.pred_mean = ...` as `self.pred_mean`."
    order = PublishPredMean.order + 1
    def before_fit(self): self.seen = []
    def after_loss(self): self.seen.append(self.pred_mean)


class WatchModel(Callback):
    "Reads the model's layers through the learner (`self.fc1` is `self.learn.model.fc1`)."
    def before_fit(self): self.norms = []
    def after_step(self): self.norms.append((self.fc1.weight.norm().item(), self.learn.fc2.bias.sum().item()))


class L2Penalty(Callback):
    "fastbook ch. 16's regulariser: a penalty on the loss that is differentiated, not on the one logged."
    def __init__(self, wd, inplace=False): self.wd, self.inplace = wd, inplace
    def after_loss(self):
        if not self.training: return
        penalty = self.wd * sum((p ** 2).sum() for p in self.model.parameters())
        if self.inplace: self.learn.loss_grad += penalty  # as fastai's RNNRegularizer writes it
        else: self.learn.loss_grad = self.loss_grad + penalty


class LoggedLossCheck(Callback):
    "Checks that the logged loss is still the loss function's value on this batch."
    order = L2Penalty.order + 1
    def before_fit(self): self.diffs = []
    def after_loss(self):
        if self.training: self.diffs.append(abs(float(self.loss.detach()) - float(self.loss_func(self.pred.detach(), *self.yb))))


class CountBatches(Callback):
    "Counts the batches it sees; a user can drive it by hand: cb('before_fit'), cb(event.after_batch)."
    def before_fit(self): self.count = 0
    def after_batch(self): self.count += 1


class CountTrainBatches(CountBatches):
    run_valid = False


# ---------------------------------------------------------------- callbacks that use fastai's helpers
class BatchBook(Callback):
    "Keeps batch sizes (find_bs) and detached validation predictions (to_detach, to_np) in an L."
    def before_fit(self): self.sizes = L()
    def before_batch(self):
        if self.training: self.sizes.append(find_bs(self.yb))
    def before_validate(self): self.preds = L()
    def after_pred(self):
        if not self.training: self.preds.append(to_detach(self.pred))
    def after_validate(self): self.np_preds = to_np(torch.cat(list(self.preds)))


# ---------------------------------------------------------------- scripts
def fit_with_loss(dls, kind, epochs=2, lr=0.1):
    "A flat loss and its metric, fit, then predictions with their decoding and per-item losses."
    loss_func, metric = dict(ce=(CrossEntropyLossFlat(), accuracy), bce=(BCEWithLogitsLossFlat(), accuracy_multi),
                             mse=(MSELossFlat(), mse), ls=(LabelSmoothingCrossEntropyFlat(), accuracy))[kind]
    n_in, n_out = shapes_of(dls)
    set_seed(0)
    learn = Learner(dls, TinyNet(n_in, 8, n_out), loss_func=loss_func, opt_func=SGD, metrics=metric)
    learn.fit(epochs, lr)
    values = [list(row) for row in learn.recorder.values]
    preds, targs, decoded, losses = learn.get_preds(with_decoded=True, with_loss=True)
    train_preds, train_targs = learn.get_preds(ds_idx=0)
    return learn, dict(values=values, preds=preds, targs=targs, decoded=decoded, losses=losses, train_preds=train_preds,
                       train_targs=train_targs, valid=learn.validate(), train=learn.validate(ds_idx=0))


def fit_reading_state(dls, cbs, epochs=2, lr=0.1):
    "A Learner whose callbacks read other callbacks, the model and each other's attributes."
    n_in, n_out = shapes_of(dls)
    set_seed(0)
    learn = Learner(dls, TinyNet(n_in, 8, n_out), loss_func=CrossEntropyLossFlat(), opt_func=SGD, metrics=accuracy)
    learn.fit(epochs, lr, cbs=cbs)
    return learn


def events_by_hand(dls):
    "Calling a callback's events by hand, before and after a fit."
    n_in, n_out = shapes_of(dls)
    set_seed(0)
    learn = Learner(dls, TinyNet(n_in, 8, n_out), loss_func=CrossEntropyLossFlat(), opt_func=SGD)
    counts = []
    for when in ("before any fit", "after a fit"):
        if when == "after a fit": learn.fit(1, 0.1)
        for cb in (CountBatches(), CountTrainBatches()):
            learn.add_cb(cb)
            cb('before_fit')
            cb(event.after_batch)
            cb('after_batch')
            counts.append(cb.count)
            learn.remove_cb(cb)
    return counts


def helpers():
    "fastai's small helpers on their own."
    set_seed(3)
    a = torch.randn(2)
    t = tensor([1, 2, 3])
    batch = (tensor([[1., 2.], [3., 4.], [5., 6.]]), tensor([0, 1, 0]))
    return dict(a=a, t=t, t_dtype=t.dtype, f_dtype=tensor(1.5).dtype, several=tensor(1, 2, 3),
                first=first(L(5, 6, 7)), first_none=first(L()), mapped=list(L(1, 2, 3).map(lambda x: x * 2)),
                bs=find_bs(batch), np=to_np(batch[0]), detached=to_detach(batch[0].requires_grad_()).requires_grad)


def fine_tune_two_groups(dls):
    "Transfer learning on a body and a head (two parameter groups), with fastai's default Adam."
    n_in, n_out = shapes_of(dls)
    set_seed(0)
    learn = Learner(dls, BodyHead(n_in, n_out), loss_func=CrossEntropyLossFlat(), splitter=body_head_splitter,
                    metrics=accuracy)
    frozen = []
    learn.fine_tune(1, freeze_epochs=1, cbs=FrozenLog(frozen))
    return learn, frozen


class FrozenLog(Callback):
    "Notes at each fit which parameters train, and where each group's learning rate ended."
    def __init__(self, store): self.store = store
    def before_fit(self): self.store.append([p.requires_grad for p in self.model.parameters()])
    def after_fit(self): self.store.append([h['lr'] for h in self.opt.hypers])


def partial_lr_fp32(dls, epochs=2):
    "The learning rate bound in opt_func, mixed precision switched off again, per-item losses by hand."
    n_in, n_out = shapes_of(dls)
    set_seed(0)
    learn = Learner(dls, TinyNet(n_in, 8, n_out), loss_func=CrossEntropyLossFlat(),
                    opt_func=partial(SGD, lr=0.05, mom=0.9), metrics=accuracy)
    learn.to_fp16()
    learn = learn.to_fp32()
    learn.fit(epochs)
    values = [list(row) for row in learn.recorder.values]
    preds, targs = learn.get_preds(act=lambda x: x)
    with learn.loss_not_reduced():
        per_item = learn.loss_func(preds, targs)
    return learn, dict(values=values, lr=learn.lr, per_item=per_item, mean=learn.loss_func(preds, targs))


def short_epochs(dls, pct=0.3):
    "A smoke test of a fit: each phase cut short."
    n_in, n_out = shapes_of(dls)
    set_seed(0)
    learn = Learner(dls, TinyNet(n_in, 8, n_out), loss_func=CrossEntropyLossFlat(), opt_func=SGD, metrics=accuracy)
    learn.fit(2, 0.1, cbs=ShortEpochCallback(pct=pct))
    return learn


def fetch_preds(dls):
    "Predictions fetched after each validation, in the middle of training."
    n_in, n_out = shapes_of(dls)
    set_seed(0)
    learn = Learner(dls, TinyNet(n_in, 8, n_out), loss_func=CrossEntropyLossFlat(), opt_func=SGD, metrics=accuracy)
    fetch, book = FetchPredsCallback(), CountBatches()
    learn.fit(2, 0.1, cbs=[fetch, book])
    return learn, fetch.preds, book.count


def mc_dropout(dls, n_samples=3):
    "Monte-Carlo dropout: several get_preds with dropout on, beside the deterministic one."
    n_in, n_out = shapes_of(dls)
    set_seed(0)
    learn = Learner(dls, TinyNet(n_in, 16, n_out, p=0.5), loss_func=CrossEntropyLossFlat(), opt_func=SGD)
    learn.fit(1, 0.1)
    plain = [learn.get_preds()[0] for _ in range(2)]
    samples = torch.stack([learn.get_preds(cbs=MCDropoutCallback())[0] for _ in range(n_samples)])
    modes = [m.training for m in learn.model.modules()]
    return learn, plain, samples, modes


def collect_data(dls):
    "Everything the loop saw, batch by batch."
    n_in, n_out = shapes_of(dls)
    set_seed(0)
    learn = Learner(dls, TinyNet(n_in, 8, n_out), loss_func=CrossEntropyLossFlat(), opt_func=SGD)
    cb = CollectDataCallback()
    learn.fit(1, 0.1, cbs=cb)
    return learn, cb.data


def reset_stateful(dls):
    "A model that keeps state between batches, reset at each phase."
    n_in, n_out = shapes_of(dls)
    set_seed(0)
    learn = Learner(dls, Stateful(n_in, n_out), loss_func=CrossEntropyLossFlat(), opt_func=SGD, metrics=accuracy,
                    cbs=ModelResetter())
    learn.fit(2, 0.1)
    return learn


def refit_stateful(dls):
    "Two fits in a row of a model that keeps state, without ModelResetter."
    n_in, n_out = shapes_of(dls)
    set_seed(0)
    learn = Learner(dls, Stateful(n_in, n_out), loss_func=CrossEntropyLossFlat(), opt_func=SGD, metrics=accuracy)
    learn.fit(1, 0.1)
    learn.fit(1, 0.1)
    return learn


def frozen_batchnorm(dls):
    "A frozen body whose BatchNorm statistics stay put while the head trains."
    n_in, n_out = shapes_of(dls)
    set_seed(0)
    learn = Learner(dls, BodyHead(n_in, n_out), loss_func=CrossEntropyLossFlat(), opt_func=SGD,
                    splitter=body_head_splitter, train_bn=False, cbs=BnFreeze(), metrics=accuracy)
    learn.freeze()
    bn = learn.model.body[1]
    before = (bn.running_mean.clone(), bn.running_var.clone(), bn.weight.detach().clone())
    learn.fit(2, 0.1)
    return learn, before, (bn.running_mean.clone(), bn.running_var.clone(), bn.weight.detach().clone())
