"""Tests for minilearn.data_files: image folders, CSVs and lists as DataLoaders, splitters,
transforms, workers, bad data, show_batch / show_results; and datasets.mnist_sample."""

from __future__ import annotations

import io
import multiprocessing
import os
import tarfile
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from minilearn import (
    Affine, CrossEntropyLossFlat, DataLoaders, FileDataLoader, Flip, GrandparentSplitter, ImageDataLoaders, ImageFileError, IndexSplitter,
    Learner, Normalize, RandomSplitter, Resize, aug_transforms, datasets, get_image_files, mnist_stats, show_results,
)
from minilearn.data import DataLoader
from minilearn.data_files import default_num_workers, load_image


# -- helpers: tiny PNG folders whose pixels tell which file an item came from


def write_png(path, value: int, size=(6, 5), mode: str = "L") -> None:
    """A PNG of `size` (w, h) filled with `value` (RGB: value, value // 2, 255 - value)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    if mode == "L":
        arr = np.full((h, w), value, dtype=np.uint8)
    else:
        arr = np.stack([np.full((h, w), v, dtype=np.uint8) for v in (value, value // 2, 255 - value)], -1)
    Image.fromarray(arr, mode).save(path)


def make_folder(root, layout: dict, size=(6, 5), mode: str = "L") -> dict:
    """`root/<split>/<label>/<k>.png` for `layout = {split: {label: n}}`; each file gets its own
    pixel value (1, 2, 3, ... in writing order); returns {path: value}."""
    values, v = {}, 1
    for split, classes in layout.items():
        for label, n in classes.items():
            for k in range(n):
                p = root / split / label / f"{k}.png"
                write_png(p, v, size, mode)
                values[p] = v
                v += 1
    return values


def item_values(x: torch.Tensor) -> list[int]:
    """The pixel value (0..255) each image of batch `x` was filled with."""
    return [round(float(v) * 255) for v in x[:, 0, 0, 0]]


@pytest.fixture
def no_stray_workers():
    """Fail a test that leaves worker processes running after closing its loaders."""
    before = set(multiprocessing.active_children())
    yield
    left = set(multiprocessing.active_children()) - before
    assert not left, f"worker processes left running: {left}"


@pytest.fixture
def folder(tmp_path):
    values = make_folder(tmp_path, {"train": {"cat": 5, "dog": 4}, "valid": {"cat": 2, "dog": 3}})
    return tmp_path, values


# -- finding files, vocab, targets


def test_from_folder_labels_from_parent_folder_and_values_as_files(folder):
    path, values = folder
    dls = ImageDataLoaders.from_folder(path, bs=4, shuffle=False, num_workers=0)
    assert dls.vocab == ["cat", "dog"] and dls.c == 2
    assert dls.train.n == 9 and dls.valid.n == 5
    xs, ys = zip(*list(dls.train))
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (9, 1, 5, 6) and x.dtype == torch.float32 and y.dtype == torch.int64
    files = dls.train.dataset.files
    assert item_values(x) == [values[f] for f in files]
    assert y.tolist() == [0] * 5 + [1] * 4
    assert torch.equal(x[0, 0], torch.full((5, 6), values[files[0]] / 255))  # float / 255, as datasets.mnist
    assert dls.n_inp == 1 and dls.path == path and dls.skipped == []


def test_vocab_is_sorted_as_fastai_sorts_it(tmp_path):
    make_folder(tmp_path, {"train": {"b": 1, "10": 1, "2": 1, "A": 1}, "valid": {"2": 1}})
    dls = DataLoaders.from_folder(tmp_path, num_workers=0)
    assert dls.vocab == sorted(["b", "10", "2", "A"]) == ["10", "2", "A", "b"]
    assert dls.valid.dataset.targets.tolist() == [1]


def test_given_vocab_sets_the_indices_and_unknown_labels_are_named(folder):
    path, _ = folder
    dls = DataLoaders.from_folder(path, vocab=["dog", "cat"], shuffle=False, num_workers=0)
    assert dls.train.dataset.targets.tolist() == [1] * 5 + [0] * 4
    with pytest.raises(ValueError, match=r"vocab: .*cat.*has label 'cat'"):
        DataLoaders.from_folder(path, vocab=["dog"], num_workers=0)


def test_valid_label_not_in_training_set_is_an_error(tmp_path):
    make_folder(tmp_path, {"train": {"a": 2}, "valid": {"a": 1, "b": 1}})
    with pytest.raises(ValueError, match=r"vocab: .*valid/b/0.png has label 'b'"):
        DataLoaders.from_folder(tmp_path, num_workers=0)


def test_get_image_files_sorted_skips_hidden_and_other_files(tmp_path):
    make_folder(tmp_path, {"x": {"a": 2}})
    (tmp_path / "x" / "a" / "notes.txt").write_text("hi")
    write_png(tmp_path / ".hidden" / "a" / "0.png", 1)
    write_png(tmp_path / "x" / "a" / "UPPER.PNG", 1)
    files = get_image_files(tmp_path)
    assert [f.name for f in files] == ["0.png", "1.png", "UPPER.PNG"]
    assert get_image_files(tmp_path, folders=["nope"]) == []


def test_pos_label_gives_fastbook_binary_targets(folder):
    path, _ = folder
    dls = DataLoaders.from_folder(path, pos_label="cat", shuffle=False, num_workers=0)
    assert dls.vocab == ["dog", "cat"]  # target 1.0 is vocab[1]
    _, y = dls.train.one_batch()
    assert y.dtype == torch.float32 and y.shape == (9, 1)
    assert y[:, 0].tolist() == [1.0] * 5 + [0.0] * 4
    with pytest.raises(ValueError, match="pos_label: expected one of exactly two classes"):
        DataLoaders.from_folder(path, pos_label="bird", num_workers=0)


# -- splitting


def test_random_splitter_matches_fastai_semantics_without_touching_global_rng():
    items = list(range(50))
    torch.manual_seed(0)
    before = torch.get_rng_state()
    train, valid = RandomSplitter(0.2, seed=7)(items)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(7)  # fastai seeds the global RNG, then draws a permutation
    perm = torch.randperm(50).tolist()
    assert valid == perm[:10] and train == perm[10:]
    assert RandomSplitter(0.2, seed=7)(items) == (train, valid)
    assert len(RandomSplitter(0.25)(list(range(10)))[1]) == 2  # int(0.25 * 10), rounded down
    with pytest.raises(ValueError, match="valid_pct"):
        RandomSplitter(1.5)


def test_grandparent_and_index_splitters(tmp_path):
    items = [tmp_path / "train" / "a" / "1.png", tmp_path / "valid" / "a" / "2.png", tmp_path / "test" / "a" / "3.png",
             tmp_path / "train" / "b" / "4.png"]
    assert GrandparentSplitter()(items) == ([0, 3], [1])
    assert GrandparentSplitter(train_name=["train", "test"], valid_name="valid")(items) == ([0, 2, 3], [1])
    assert IndexSplitter([1, 3])(items) == ([0, 2], [1, 3])
    with pytest.raises(IndexError, match="valid_idx: index 9"):
        IndexSplitter([9])(items)


def test_from_folder_valid_pct_splits_every_image_at_random(tmp_path):
    make_folder(tmp_path, {"imgs": {"a": 10, "b": 10}})
    dls = DataLoaders.from_folder(tmp_path, valid_pct=0.25, seed=3, num_workers=0)
    again = DataLoaders.from_folder(tmp_path, valid_pct=0.25, seed=3, num_workers=0)
    assert dls.train.n == 15 and dls.valid.n == 5
    assert dls.valid.dataset.files == again.valid.dataset.files
    assert set(dls.train.dataset.files).isdisjoint(dls.valid.dataset.files)
    files = get_image_files(tmp_path)
    _, valid_idx = RandomSplitter(0.25, seed=3)(files)
    assert dls.valid.dataset.files == [files[i] for i in valid_idx]


def test_custom_splitter_is_checked(folder):
    path, _ = folder
    dls = DataLoaders.from_folder(path, splitter=IndexSplitter([0, 1]), num_workers=0)
    assert dls.valid.n == 2 and dls.train.n == 12
    with pytest.raises(ValueError, match="splitter: 1 items are in both"):
        DataLoaders.from_folder(path, splitter=lambda items: ([0, 1], [1]), num_workers=0)
    with pytest.raises(TypeError, match="splitter: expected it to return"):
        DataLoaders.from_folder(path, splitter=lambda items: 3, num_workers=0)


# -- order and workers


@pytest.mark.parametrize("num_workers", [0, 2])
def test_every_item_once_in_the_order_of_a_minilearn_loader(tmp_path, num_workers, no_stray_workers):
    make_folder(tmp_path, {"train": {"a": 30, "b": 21}, "valid": {"a": 3}})
    dls = DataLoaders.from_folder(tmp_path, bs=8, seed=5, num_workers=num_workers)
    try:
        files = dls.train.dataset.files
        value_of = {round(float(dls.train.dataset[i][0][0, 0, 0]) * 255): i for i in range(len(files))}
        ref = DataLoader(list(range(51)), bs=8, shuffle=True, seed=5)
        assert dls.train.num_workers == num_workers and len(dls.train) == len(ref) == 7
        for _ in range(2):  # two epochs: each a new permutation, the same as the reference's
            order = [value_of[v] for xb, _ in dls.train for v in item_values(xb)]
            expected = torch.cat([b[0] for b in ref]).tolist()
            assert order == expected and sorted(order) == list(range(51))
        assert [len(b[0]) for b in dls.valid] == [3]
    finally:
        dls.close()


def test_drop_last_one_batch_and_new_keep_files_and_transforms(folder, no_stray_workers):
    path, _ = folder
    dls = DataLoaders.from_folder(path, bs=4, seed=1, num_workers=2, batch_tfms=Normalize(0.5, 0.25))
    try:
        state = dls.train.generator.get_state()
        xb, yb = dls.train.one_batch()
        assert torch.equal(dls.train.generator.get_state(), state)  # peeking leaves the order alone
        assert len(xb) == 4 and float(xb.min()) < 0  # normalised
        dl = dls.train.new(shuffle=False, drop_last=True)
        assert isinstance(dl, FileDataLoader) and len(dl) == 2 and dl.num_workers == 2
        batches = list(dl)
        assert sum(len(b[0]) for b in batches) == 8
        assert torch.equal(batches[0][0], dl.fetch(torch.arange(4))[0])  # fetch decodes here, same batch
        dl.close()
    finally:
        dls.close()


def test_default_num_workers():
    assert default_num_workers(100) == 0
    big = default_num_workers(10_000)
    assert 0 <= big <= 4
    if multiprocessing.get_start_method() == "fork":
        import os

        assert big == min(len(os.sched_getaffinity(0)), 4)


def test_learner_trains_from_folder_with_workers(folder, no_stray_workers):
    path, _ = folder
    dls = DataLoaders.from_folder(path, bs=4, seed=0, num_workers=2)
    try:
        torch.manual_seed(0)
        learn = Learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(30, 2)), nn.CrossEntropyLoss())
        learn.fit(2, 0.1)
        assert len(learn.recorder.values) == 2
        preds, targs = learn.get_preds()
        assert preds.shape == (5, 2) and targs.tolist() == dls.valid.dataset.targets.tolist()
    finally:
        dls.close()


# -- colour, sizes, transforms


def test_rgb_files_give_three_channels_and_mixed_files_are_promoted(tmp_path):
    make_folder(tmp_path, {"train": {"a": 2}, "valid": {"a": 1}}, mode="RGB")
    dls = DataLoaders.from_folder(tmp_path, shuffle=False, num_workers=0)
    x, _ = dls.train.one_batch()
    assert x.shape == (2, 3, 5, 6)
    assert [round(float(v) * 255) for v in x[0, :, 0, 0]] == [1, 0, 254]
    write_png(tmp_path / "train" / "a" / "grey.png", 9)
    x, _ = DataLoaders.from_folder(tmp_path, shuffle=False, num_workers=0).train.one_batch()
    assert x.shape == (3, 3, 5, 6)  # one greyscale file among RGB ones: every image has three channels
    grey = x[2]  # grey.png sorts last
    assert torch.equal(grey[0], grey[1]) and round(float(grey[0, 0, 0]) * 255) == 9


def test_mixed_sizes_without_resize_name_two_files(tmp_path):
    make_folder(tmp_path, {"train": {"a": 2}, "valid": {"a": 1}})
    write_png(tmp_path / "train" / "a" / "big.png", 3, size=(10, 7))
    with pytest.raises(ValueError, match=r"item_tfms: the images differ in size \(.*0.png is 6x5, .*big.png is 10x7\)"):
        DataLoaders.from_folder(tmp_path, num_workers=0)
    dls = DataLoaders.from_folder(tmp_path, item_tfms=Resize(4), num_workers=0)
    assert dls.train.one_batch()[0].shape == (3, 1, 4, 4)
    with pytest.raises(ValueError, match="item_tfms: the item transforms leave images of different shapes"):
        DataLoaders.from_folder(tmp_path, item_tfms=lambda x: x[:, :3], num_workers=0)


def test_resize_methods():
    x = torch.arange(2 * 8 * 4, dtype=torch.uint8).view(2, 8, 4)
    assert Resize(4)(x).shape == (2, 4, 4)
    assert Resize((3, 5), method="squish")(x).shape == (2, 3, 5)
    padded = Resize(8, method="pad")(x)
    assert padded.shape == (2, 8, 8) and torch.equal(padded[:, :, :2], torch.zeros(2, 8, 2, dtype=torch.uint8))
    assert torch.equal(Resize((8, 4))(x), x)
    with pytest.raises(ValueError, match="method"):
        Resize(4, method="stretch")


def test_normalize_from_stats_decodes_and_checks_channels():
    x = torch.rand(4, 3, 2, 2)
    norm = Normalize.from_stats([0.1, 0.2, 0.3], [0.5, 0.5, 0.25])
    y = norm(x)
    assert torch.allclose(y[:, 2], (x[:, 2] - 0.3) / 0.25)
    assert torch.allclose(norm.decode(y), x, atol=1e-6)
    with pytest.raises(ValueError, match="Normalize: 3 channel statistics"):
        norm(torch.rand(4, 1, 2, 2))
    with pytest.raises(ValueError, match="std: expected positive"):
        Normalize(0.0, 0.0)
    assert torch.allclose(Normalize(*mnist_stats)(torch.zeros(1, 1, 2, 2)), torch.full((1, 1, 2, 2), -0.131 / 0.308))


def test_batch_tfms_run_after_the_move_and_augmentations_only_in_training(folder):
    path, _ = folder
    seen = []

    def spy(x):
        seen.append(x.device)
        return x * 0 + 1

    spy.split_idx = 1  # a transform for the validation set only
    dls = DataLoaders.from_folder(path, batch_tfms=[Flip(p=1.0), spy], shuffle=False, num_workers=0, device="cpu")
    x_train, _ = dls.train.one_batch()
    raw, _ = dls.train.raw_batch()
    assert torch.equal(x_train, raw.flip(-1)) and not seen  # Flip (training only) ran, spy did not
    x_valid, _ = dls.valid.one_batch()
    assert torch.equal(x_valid, torch.ones_like(x_valid)) and seen == [torch.device("cpu")]


def test_affine_keeps_shape_and_p0_is_identity():
    x = torch.rand(5, 3, 8, 8)
    assert torch.allclose(Affine(p=0.0)(x), x, atol=1e-5)
    torch.manual_seed(0)
    y = Affine(max_rotate=30, max_zoom=1.5, p=1.0)(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    tfms = aug_transforms()
    assert [type(t) for t in tfms] == [Flip, Affine] and all(t.split_idx == 0 for t in tfms)


# -- bad data


def test_empty_folder_and_class_folder_without_images(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "valid").mkdir()
    with pytest.raises(ValueError, match="path: no image files under"):
        DataLoaders.from_folder(tmp_path)
    make_folder(tmp_path, {"train": {"a": 2}, "valid": {"a": 1}})
    (tmp_path / "train" / "b").mkdir()
    with pytest.raises(ValueError, match=r"train: the class folder .*train/b holds no image files"):
        DataLoaders.from_folder(tmp_path)


def test_missing_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="path: .*is not a folder"):
        DataLoaders.from_folder(tmp_path / "nope")
    make_folder(tmp_path, {"train": {"a": 2}})
    with pytest.raises(FileNotFoundError, match="valid: there is no folder .*pass valid_pct"):
        DataLoaders.from_folder(tmp_path)


def test_truncated_image_is_named_or_skipped(folder):
    path, _ = folder
    bad = path / "train" / "cat" / "0.png"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    (path / "valid" / "dog" / "empty.png").write_bytes(b"")
    with pytest.raises(ImageFileError, match=r"train/cat/0.png: cannot read the image .*and 1 more bad files.*skip_bad=True"):
        DataLoaders.from_folder(path, num_workers=0)
    dls = DataLoaders.from_folder(path, skip_bad=True, num_workers=0)
    assert sorted(p.name for p in dls.skipped) == ["0.png", "empty.png"]
    assert dls.train.n == 8 and dls.valid.n == 5 and bad not in dls.train.dataset.files


def test_load_image_names_an_unreadable_file(tmp_path):
    p = tmp_path / "x.png"
    p.write_bytes(b"not an image")
    with pytest.raises(ImageFileError, match=r"x.png: cannot read the image"):
        load_image(p)


# -- CSV and lists


def write_csv(path, rows, header="name,label,is_valid"):
    path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")


def test_from_csv_labels_and_valid_col(folder):
    path, values = folder
    rows = [(f.relative_to(path).as_posix(), f.parent.name, f.parent.parent.name == "valid") for f in values]
    write_csv(path / "labels.csv", rows)
    dls = DataLoaders.from_csv(path, valid_col="is_valid", shuffle=False, num_workers=0)
    assert dls.vocab == ["cat", "dog"] and dls.train.n == 9 and dls.valid.n == 5
    x, y = dls.valid.one_batch()
    assert item_values(x) == [values[f] for f in dls.valid.dataset.files] and y.tolist() == [0, 0, 1, 1, 1]
    by_name = DataLoaders.from_csv(path, fn_col="name", label_col="label", valid_pct=0.2, seed=0, num_workers=0)
    assert by_name.train.n + by_name.valid.n == 14 and by_name.valid.n == 2
    with pytest.raises(KeyError, match="label_col: no column 'nope'"):
        DataLoaders.from_csv(path, label_col="nope")
    with pytest.raises(FileNotFoundError, match="csv_fname: there is no file"):
        DataLoaders.from_csv(path, csv_fname="other.csv")


def test_from_csv_int_labels_folder_and_suffix(tmp_path):
    for k in range(6):
        write_png(tmp_path / "imgs" / f"{k}.png", k + 1)
    write_csv(tmp_path / "labels.csv", [(k, k % 2) for k in range(6)], header="id,label")
    dls = DataLoaders.from_csv(tmp_path, folder="imgs", suff=".png", valid_pct=0.5, seed=1, num_workers=0)
    assert dls.vocab == [0, 1] and dls.train.n == 3


def test_from_csv_naming_a_missing_file(folder):
    path, values = folder
    rows = [(f.relative_to(path).as_posix(), f.parent.name, False) for f in values] + [("train/cat/gone.png", "cat", False)]
    write_csv(path / "labels.csv", rows)
    with pytest.raises(FileNotFoundError, match=r"csv_fname: row 14 of .*labels.csv names 'train/cat/gone.png'"):
        DataLoaders.from_csv(path, num_workers=0)
    dls = DataLoaders.from_csv(path, skip_bad=True, num_workers=0)
    assert [p.name for p in dls.skipped] == ["gone.png"] and dls.train.n + dls.valid.n == 14


def test_from_lists(folder):
    path, values = folder
    fnames = [f.relative_to(path) for f in values]
    labels = [f.parent.name for f in values]
    dls = DataLoaders.from_lists(path, fnames, labels, valid_pct=0.5, seed=2, num_workers=0)
    assert dls.train.n == 7 and dls.valid.n == 7 and dls.vocab == ["cat", "dog"]
    x, y = dls.valid.one_batch()
    expected = [values[f] for f in dls.valid.dataset.files]
    assert item_values(x) == expected
    with pytest.raises(ValueError, match="fnames, labels: expected one label per file"):
        DataLoaders.from_lists(path, fnames, labels[:-1])


# -- test_dl, show_batch, show_results


def test_test_dl_takes_file_paths_and_uses_valid_transforms(folder):
    path, values = folder
    dls = DataLoaders.from_folder(path, bs=3, num_workers=0, batch_tfms=[Normalize(0.5, 0.5), Flip(p=1.0)])
    files = [str(f) for f in list(values)[:4]]
    tdl = dls.test_dl(files)
    batches = list(tdl)
    assert [len(b) for b in batches] == [1, 1] and tdl.bs == 3  # (images,) only
    x = torch.cat([b[0] for b in batches])
    assert [round((float(v) * 0.5 + 0.5) * 255) for v in x[:, 0, 0, 0]] == [values[p] for p in values][:4]
    assert len(dls.test_dl(path / "valid")) == 2  # a folder: its images
    tensors = dls.test_dl(torch.zeros(5, 1, 5, 6))  # tensors still work
    assert tensors.n == 5


def test_show_batch_titles_with_vocab_names(folder):
    path, _ = folder
    dls = DataLoaders.from_folder(path, shuffle=False, num_workers=0, batch_tfms=Normalize(0.5, 0.5))
    fig = dls.show_batch(max_n=4)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(fig.axes) == 4 and titles == ["cat"] * 4
    img = fig.axes[0].images[0].get_array()
    assert abs(float(img.max()) - 1 / 255) < 1e-6  # shown decoded (un-normalised)
    fig = dls.show_batch(max_n=9, nrows=2)
    assert len(fig.axes) == 10 and sum(bool(ax.images) for ax in fig.axes) == 9


def test_show_results_titles_target_and_prediction(folder):
    path, _ = folder
    dls = DataLoaders.from_folder(path, shuffle=False, num_workers=0)

    class AlwaysDog(nn.Module):
        def forward(self, x):
            return torch.tensor([[0.0, 1.0]]).repeat(len(x), 1)

    learn = Learner(dls, AlwaysDog(), nn.CrossEntropyLoss())
    fig = learn.show_results(max_n=5)  # the method calls data_files.show_results
    assert [ax.get_title() for ax in show_results(learn, max_n=5).axes] == [ax.get_title() for ax in fig.axes]
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles == ["cat\ndog"] * 2 + ["dog\ndog"] * 3
    colors = [ax.title.get_color() for ax in fig.axes if ax.images]
    assert colors == ["red"] * 2 + ["green"] * 3


# -- datasets.mnist_sample


def make_sample_tgz(root, extra: tarfile.TarInfo | None = None) -> None:
    src = root / "src"
    make_folder(src / "mnist_sample", {"train": {"3": 1, "7": 1}, "valid": {"3": 1}})
    (src / "mnist_sample" / "labels.csv").write_text("name,label\ntrain/3/0.png,0\n")
    with tarfile.open(root / "mnist_sample.tgz", "w:gz") as tar:
        tar.add(src / "mnist_sample", arcname="mnist_sample")
        if extra is not None:
            tar.addfile(extra, io.BytesIO(b"x"))


def test_mnist_sample_extracts_once_into_the_cache(tmp_path, monkeypatch):
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    make_sample_tgz(data)
    monkeypatch.setenv("MINILEARN_CACHE", str(cache))
    p = datasets.mnist_sample(root=data)
    assert p == cache / "mnist_sample" and (p / "train" / "3" / "0.png").is_file() and (p / "labels.csv").is_file()
    assert [q.name for q in cache.iterdir()] == ["mnist_sample"]  # no temporary folder left
    (data / "mnist_sample.tgz").unlink()  # the extraction is re-used
    assert datasets.mnist_sample(root=data) == p
    assert DataLoaders.from_folder(p, num_workers=0).vocab == ["3", "7"]


def test_mnist_sample_refuses_members_escaping_the_folder(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    evil = tarfile.TarInfo("mnist_sample/../../evil.txt")
    evil.size = 1
    make_sample_tgz(data, extra=evil)
    monkeypatch.setenv("MINILEARN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="outside mnist_sample/; refusing"):
        datasets.mnist_sample(root=data)
    assert not (tmp_path / "evil.txt").exists() and list((tmp_path / "cache").iterdir()) == []


def test_mnist_sample_missing_archive_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILEARN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="MNIST_SAMPLE not found.*Set MINILEARN_DATA"):
        datasets.mnist_sample(root=tmp_path)


def test_mnist_sample_prefers_an_extracted_folder_in_the_data_folder(tmp_path, monkeypatch):
    make_folder(tmp_path / "mnist_sample", {"train": {"3": 1}, "valid": {"3": 1}})
    (tmp_path / "mnist_sample" / "labels.csv").write_text("name,label\n")
    monkeypatch.setenv("MINILEARN_CACHE", str(tmp_path / "cache"))
    assert datasets.mnist_sample(root=tmp_path) == tmp_path / "mnist_sample"


# -- real MNIST


@pytest.mark.mnist
def test_from_folder_gives_exactly_the_tensors_of_mnist_3v7(mnist_root, no_stray_workers):
    if not (mnist_root / "mnist_sample.tgz").is_file() and not (mnist_root / "mnist_sample").is_dir():
        pytest.skip("MINILEARN_DATA has no mnist_sample.tgz")
    dls = DataLoaders.from_folder(datasets.mnist_sample(mnist_root), pos_label="3", bs=512, num_workers=2)
    try:
        train_x, train_y, valid_x, valid_y = datasets.mnist_3v7(root=mnist_root)
        assert dls.vocab == ["7", "3"] and (dls.train.n, dls.valid.n) == (len(train_x), len(valid_x)) == (12396, 2038)
        for dl, x_ref, y_ref in ((dls.train, train_x, train_y), (dls.valid, valid_x, valid_y)):
            ds = dl.dataset
            # mnist_3v7's order: the 3s, then the 7s, each in MNIST's file order (the PNG's number)
            order = sorted(range(ds.__len__()), key=lambda i: (ds.files[i].parent.name, int(ds.files[i].stem)))
            xb, yb = dl.new(shuffle=False).fetch(torch.tensor(order))
            assert xb.shape[1:] == (1, 28, 28)
            assert torch.equal(xb.flatten(1), x_ref) and torch.equal(yb, y_ref)  # flatten: nn.Flatten in the model
        seen = torch.cat([yb for _, yb in dls.train])
        assert len(seen) == 12396 and int(seen.sum()) == 6131
    finally:
        dls.close()


def test_predict_takes_an_image_file_as_fastai_does(folder):
    path, values = folder
    dls = DataLoaders.from_folder(path, num_workers=0)
    torch.manual_seed(0)
    learn = Learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(30, 2)), CrossEntropyLossFlat())
    file = path / "valid" / "dog" / "0.png"
    decoded, idx, probs = learn.predict(file)
    x = dls.test_dl([file]).one_batch()[0]  # the same image, as a batch of one
    expected = torch.softmax(learn.model(x), 1)[0].detach()
    assert torch.allclose(probs, expected) and decoded == dls.vocab[int(idx)] and int(idx) == int(expected.argmax())
    assert learn.predict(str(file))[1] == idx
    tensors = Learner(DataLoaders.from_tensors(torch.randn(8, 30), torch.zeros(8, dtype=torch.long)),
                      nn.Linear(30, 2), CrossEntropyLossFlat())
    with pytest.raises(TypeError, match="x: a file .* needs DataLoaders built from files"):
        tensors.predict(file)


# -- found in review: a second pass at once, links, names as given, 16 bits, workers' lifetime


def test_a_second_pass_during_one_with_workers_leaves_the_first_whole(folder, no_stray_workers):
    path, values = folder
    dls = DataLoaders.from_folder(path, bs=2, seed=1, num_workers=2)
    it = iter(dls.train)
    first = next(it)
    dls.train.one_batch()  # a callback looking at a batch mid-epoch
    seen = torch.cat([first[0]] + [b[0] for b in it]).flatten(1)[:, 0]
    alone = torch.cat([b[0] for b in DataLoaders.from_folder(path, bs=2, seed=1, num_workers=0).train]).flatten(1)[:, 0]
    assert torch.equal(seen, alone) and len(set(seen.tolist())) == dls.train.n  # the same order, every item once
    assert [len(a[0]) for a, _ in zip(dls.valid, dls.valid)] == [2, 2, 1]
    dls.close()


def test_dropped_loaders_and_new_ones_leave_no_worker_running(folder, no_stray_workers):
    path, _ = folder
    before = set(multiprocessing.active_children())
    for _ in range(3):  # a notebook cell run again and again
        dls = DataLoaders.from_folder(path, bs=2, num_workers=2)
        for _ in dls.train:
            pass
        for _ in dls.train.new(shuffle=False):  # as get_preds(ds_idx=0) makes one
            pass
    del dls
    import gc
    gc.collect()
    time.sleep(0.5)
    assert not set(multiprocessing.active_children()) - before


def test_symlinked_class_folders_are_followed_as_fastai_does(tmp_path):
    make_folder(tmp_path / "elsewhere", {"x": {"b": 2}})
    make_folder(tmp_path / "data", {"train": {"a": 2}, "valid": {"a": 1, "b": 1}})
    os.symlink(tmp_path / "elsewhere" / "x" / "b", tmp_path / "data" / "train" / "b")
    dls = DataLoaders.from_folder(tmp_path / "data", num_workers=0)
    assert dls.vocab == ["a", "b"] and dls.train.n == 4


def test_from_lists_takes_the_names_get_image_files_gives(tmp_path, monkeypatch):
    make_folder(tmp_path / "f", {"train": {"a": 2, "b": 2}})
    monkeypatch.chdir(tmp_path)
    fnames = get_image_files("f")  # relative names, under the path already
    dls = DataLoaders.from_lists("f", fnames, [p.parent.name for p in fnames], valid_pct=0.5, seed=0,
                                 vocab=["a", "b"], num_workers=0)
    assert dls.train.n + dls.valid.n == 4
    assert DataLoaders.from_lists("f", [p.relative_to("f") for p in fnames], ["a"] * 4, num_workers=0).train.n >= 1


def test_16_bit_greyscale_keeps_its_levels(tmp_path):
    arr = (np.arange(30, dtype=np.uint16).reshape(5, 6) * 2000)
    for split in ("train", "valid"):
        p = tmp_path / split / "a" / "0.png"
        p.parent.mkdir(parents=True)
        Image.fromarray(arr).save(p)  # mode I;16
    x = DataLoaders.from_folder(tmp_path, num_workers=0).train.one_batch()[0]
    assert torch.allclose(x[0, 0], torch.from_numpy(arr.astype(np.float32)) / 65535)


def test_labels_and_arguments_that_would_mislead_get_clear_errors(tmp_path):
    import pandas as pd

    make_folder(tmp_path, {"train": {"a": 2, "b": 2}})
    fnames = get_image_files(tmp_path)
    dls = DataLoaders.from_lists(tmp_path, fnames, [torch.tensor(i % 2) for i in range(4)], valid_pct=0.25, seed=0,
                                 num_workers=0)
    assert dls.vocab == [0, 1]  # tensor labels by value, not one class per tensor object
    with pytest.raises(ValueError, match="labels: .* has several labels"):
        DataLoaders.from_lists(tmp_path, fnames, [["a", "b"]] * 4, num_workers=0)
    with pytest.raises(ValueError, match=r"labels: .* has no label \(NaN\)"):
        DataLoaders.from_lists(tmp_path, fnames, ["a", float("nan"), "b", "a"], num_workers=0)
    pd.DataFrame({"name": [str(f.relative_to(tmp_path)) for f in fnames], "label": list("abab"),
                  "is_valid": ["no", "yes", "no", "no"]}).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(ValueError, match="valid_col: expected booleans"):
        DataLoaders.from_csv(tmp_path, valid_col="is_valid", num_workers=0)
    with pytest.raises((TypeError, ValueError), match="size"):
        Resize((224,))
    assert IndexSplitter([0, 0, 1])(list(range(4))) == ([2, 3], [0, 1])


def test_show_batch_shows_the_training_set_shuffled_and_leaves_its_order_alone(folder):
    path, _ = folder
    dls = DataLoaders.from_folder(path, bs=9, seed=0, num_workers=0)
    state = dls.train.generator.get_state()
    titles = [ax.get_title() for ax in dls.show_batch(max_n=9).axes if ax.images]
    assert sorted(titles) == ["cat"] * 5 + ["dog"] * 4 and titles != sorted(titles)  # not in file order
    assert torch.equal(dls.train.generator.get_state(), state)
