"""Export for inference: export, load_learner and predict, custom models, malformed export files."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from minilearn import DataLoaders, Learner, load_learner
from synthetic import class_data, class_learner


def test_export_and_load_learner(tmp_path):
    learn = class_learner(tmp_path)
    with learn.no_logging():
        learn.fit(1)
    x = learn.dls.valid_ds[0]
    path = learn.export("model.pth")
    inf = load_learner(path)
    assert torch.allclose(inf.predict(x), learn.predict(x))
    assert inf.predict(x[0]).shape == (3,) and learn.predict(x[:5]).shape == (5, 3)
    with pytest.raises(ValueError, match="x"):
        inf.predict(x[None])


def test_export_of_a_custom_model_needs_its_class(tmp_path):
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            return self.lin(x) * 2

    x, y, vx, vy = class_data()
    torch.manual_seed(0)
    learn = Learner(DataLoaders.from_tensors(x, y, vx, vy), Custom(), nn.CrossEntropyLoss(), path=tmp_path)
    path = learn.export()
    with pytest.raises(ValueError, match="model=YourModel"):
        load_learner(path)
    inf = load_learner(path, model=Custom())
    assert torch.allclose(inf.predict(vx), learn.predict(vx))
    with pytest.raises(ValueError, match="not a minilearn export"):
        load_learner(learn.save("ckpt"))


def test_malformed_export_files_get_a_clear_error(tmp_path):
    from minilearn.checkpoint import load_checkpoint, save_checkpoint

    learn = class_learner(tmp_path)
    path = learn.export("m.pth")
    ckpt = load_checkpoint(path)
    assert set(ckpt) == {"format", "version", "state_dict", "architecture", "item_ndim"}
    for broken in ({**ckpt, "version": 99}, {k: v for k, v in ckpt.items() if k != "state_dict"},
                   {k: v for k, v in ckpt.items() if k != "item_ndim"}):
        save_checkpoint(broken, tmp_path / "bad.pth")
        with pytest.raises(ValueError, match="unknown version or incomplete"):
            load_learner(tmp_path / "bad.pth")
    wrong = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.0), nn.Linear(16, 2))
    with pytest.raises(ValueError, match="shapes differ"):
        load_learner(path, model=wrong)
