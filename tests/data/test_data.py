"""Shared data modules: UCI loader protocol, digits splits and corruptions, epoch shuffling."""

import pytest
import torch

from probgen.data import DigitsDataModule, UCIRegression, corrupt_digits, load_uci
from probgen.data.base import EpochShuffle


def test_uci_standardised_on_train_split(uci_root):
    # the generated layout: 120 rows a set, 12 of them in each test split
    d = load_uci(uci_root, "boston", split=2)
    assert d["x_train"].shape == (108, 13) and d["y_train"].shape == (108, 1)
    torch.testing.assert_close(d["y_train"].mean(), torch.tensor(0.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(d["x_train"].std(0, unbiased=False), torch.ones(13), atol=1e-4, rtol=0)
    assert len(d["x_train"]) + len(d["x_test"]) == 120
    # the test split is standardised with the training statistics, not its own
    assert d["y_test"].mean().abs() > 1e-3
    dm = UCIRegression(root=str(uci_root), dataset="wine-red", split=0, val_fraction=0.1)
    assert dm.num_train + len(dm.splits["val"][0]) + len(dm.splits["test"][0]) == 120


def _rows(x: torch.Tensor) -> set[tuple[float, ...]]:
    return {tuple(r) for r in x.tolist()}


@pytest.mark.parametrize("dataset", ["boston", "concrete", "energy", "yacht", "wine-red"])
def test_uci_validation_is_held_out_of_training_and_disjoint_from_test(uci_root, dataset):
    dm = UCIRegression(root=str(uci_root), dataset=dataset, split=1)  # default val_fraction
    dm.setup()
    train, val, test = (_rows(dm.splits[s][0]) for s in ("train", "val", "test"))
    assert len(val) > 0
    assert not val & test and not val & train and not train & test
    assert len(train) + len(val) + len(test) == 120


def test_uci_validation_without_rows_raises(uci_root):
    dm = UCIRegression(root=str(uci_root), dataset="yacht", val_fraction=0.0)
    dm.setup()
    assert "val" not in dm.splits
    with pytest.raises(ValueError, match="val_fraction"):
        dm.val_dataloader()
    for bad in (dict(val_fraction=1.0), dict(val_fraction=-0.1), dict(split=-1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            UCIRegression(root=str(uci_root), **bad)


def test_uci_bad_arguments(uci_root, tmp_path):
    with pytest.raises(ValueError, match="split must be in"):
        load_uci(uci_root, "yacht", split=99)
    with pytest.raises(ValueError, match="no data.txt"):
        load_uci(tmp_path, "yacht")


def test_write_uci_layout_matches_the_real_layout(tmp_path):
    from probgen.testing import write_uci_layout

    root = write_uci_layout(tmp_path, datasets=["yacht"], num_rows=50, num_splits=2)
    files = sorted(f.name for f in (root / "yacht").iterdir())
    assert files == ["data.txt", "index_features.txt", "index_target.txt", "index_test_0.txt",
                     "index_test_1.txt", "index_train_0.txt", "index_train_1.txt", "n_splits.txt"]
    d = load_uci(root, "yacht", split=1)
    assert d["x_train"].shape == (45, 6) and d["x_test"].shape == (5, 6)
    with pytest.raises(ValueError, match="datasets"):
        write_uci_layout(tmp_path, datasets=["mnist"])


def test_digits_splits_and_ood():
    dm = DigitsDataModule(task="classification", held_out_classes=[0, 1])
    dm.setup()
    labels = torch.cat([dm.splits[s][1] for s in ("train", "val", "test")])
    assert not torch.isin(labels, torch.tensor([0, 1])).any()
    assert set(dm.splits["ood"][1].tolist()) == {0, 1}
    assert len(labels) + len(dm.splits["ood"][1]) == 1797
    gen = DigitsDataModule(task="generation")
    gen.setup()
    x = gen.splits["train"][0]
    assert x.min() >= 0 and x.max() < 1 and x.shape[1] == 64
    # dequantisation: each pixel lies in its own 1/17 bin
    assert ((x * 17).floor() <= 16).all()


def test_corruptions_change_images_and_stay_in_range():
    x = DigitsDataModule(task="classification").build_splits()["test"][0]
    for kind in ("noise", "blur", "rotation"):
        y = corrupt_digits(x, kind, generator=torch.Generator().manual_seed(0))
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
        assert (y - x).abs().mean() > 0.05
    with pytest.raises(ValueError, match="kind"):
        corrupt_digits(x, "fog")


def test_epoch_shuffle_depends_only_on_seed_and_epoch():
    a, b = EpochShuffle(50, seed=3), EpochShuffle(50, seed=3)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b) and sorted(a) == list(range(50))
    b.set_epoch(5)
    assert list(a) != list(b)
