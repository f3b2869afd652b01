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


def _export_file(tmp_path, architecture, state_dict, name="crafted.pth"):
    from minilearn.checkpoint import save_checkpoint
    from minilearn.export import FORMAT, VERSION

    return save_checkpoint({"format": FORMAT, "version": VERSION, "state_dict": state_dict,
                            "architecture": architecture, "item_ndim": 1}, tmp_path / name)


def test_load_learner_trusts_nothing_the_file_says_about_the_model(tmp_path, monkeypatch):
    """A crafted description cannot make load_learner build a huge model, pass other arguments
    (a dtype) or nest without end: the model is checked on the meta device, against the weights,
    before any memory is taken."""
    from minilearn import export

    linear = {"type": "Linear", "args": {"in_features": 20000, "out_features": 20000, "bias": True}}
    made = []
    real_empty = nn.Module.to_empty
    monkeypatch.setattr(nn.Module, "to_empty", lambda self, **kw: made.append(1) or real_empty(self, **kw))
    path = _export_file(tmp_path, [linear], {"0.weight": torch.zeros(2, 2), "0.bias": torch.zeros(2)})
    with pytest.raises(ValueError, match="shapes differ"):
        load_learner(path)
    assert made == []  # refused before the 1.6 GB Linear got any memory
    cases = [
        ([{"type": "Linear", "args": {"in_features": 2, "out_features": 2, "dtype": "float16"}}], "takes"),
        ([{"type": "Linear", "args": {"in_features": [2], "out_features": 2}}], "plain numbers"),
        ([{"type": "Conv2d", "args": {}}], "unknown layer type"),
        ([{"type": "ReLU", "args": {}, "code": "x"}], "a layer must be"),
    ]
    nested = []
    for _ in range(export.MAX_DEPTH + 2):
        nested = [{"type": "Sequential", "args": {"layers": nested}}]
    cases.append((nested, "deeper than"))
    cases.append(([{"type": "ReLU", "args": {}}] * (export.MAX_MODULES + 1), "more than"))
    for i, (architecture, message) in enumerate(cases):
        with pytest.raises(ValueError, match=message):
            load_learner(_export_file(tmp_path, architecture, {}, f"case{i}.pth"))


def test_a_file_that_would_inflate_is_refused_before_it_is_read(tmp_path):
    import zipfile

    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data/0", b"\0" * (20 << 20))  # 20 MB of zeros in a few kB
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(ValueError, match="would inflate to 20,971,520 bytes"):
        load_learner(bomb)
