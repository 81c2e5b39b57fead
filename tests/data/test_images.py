"""ImageDataModule on image folders and tensor files written by the test."""

import pytest
import torch

from probgen.data import ImageDataModule, load_image_folder


def write_folder(root, sizes=((6, 5),) * 6, mode="L"):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    pixels = []
    for i, (h, w) in enumerate(sizes):
        cls = root / ("cat" if i % 2 else "ant")
        cls.mkdir(parents=True, exist_ok=True)
        c = 1 if mode == "L" else 3
        arr = torch.randint(0, 256, (h, w, c), generator=g, dtype=torch.uint8)
        Image.fromarray(arr.squeeze(-1).numpy() if c == 1 else arr.numpy(), mode=mode).save(cls / f"{i:02d}.png")
        pixels.append((i % 2, arr.permute(2, 0, 1)))
    return pixels


def test_image_folder_reads_pixels_and_labels_exactly(tmp_path):
    written = write_folder(tmp_path)
    images, labels, classes = load_image_folder(tmp_path)
    assert classes == ["ant", "cat"] and images.shape == (6, 1, 6, 5) and images.dtype == torch.uint8
    # files are read class by class in sorted order: ant = even indices, cat = odd
    expected = [p for k, p in written if k == 0] + [p for k, p in written if k == 1]
    torch.testing.assert_close(images, torch.stack(expected))
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_image_folder_rgb_resize_and_mixed_sizes(tmp_path):
    write_folder(tmp_path / "a", sizes=((6, 5), (4, 4)), mode="RGB")
    with pytest.raises(ValueError, match="image_size"):
        load_image_folder(tmp_path / "a")
    images, _, _ = load_image_folder(tmp_path / "a", image_size=8)
    assert images.shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="no image files"):
        (tmp_path / "empty").mkdir()
        load_image_folder(tmp_path / "empty")


def test_datamodule_from_folder_dequantises_and_centres(tmp_path):
    write_folder(tmp_path)
    dm = ImageDataModule(str(tmp_path), val_fraction=0.0, test_fraction=0.0, batch_size=3)
    dm.setup()
    x, y = dm.splits["train"]
    assert dm.image_shape == (1, 6, 5) and dm.num_classes == 2
    assert x.shape == (6, 30) and y.shape == (6,)
    assert (x > -1).all() and (x < 1).all()
    # (pixel + u) / 256 mapped to [-1, 1]: undoing the map recovers the integer pixels by flooring
    images, _, _ = load_image_folder(tmp_path)
    recovered = torch.floor((x + 1) / 2 * 256).to(torch.uint8)  # the split is shuffled: compare as sets of rows
    assert sorted(map(tuple, recovered.tolist())) == sorted(map(tuple, images.reshape(6, -1).tolist()))
    batch = next(iter(dm.train_dataloader()))
    assert len(batch) == 2 and batch[0].shape == (3, 30)


def test_datamodule_from_tensor_file(tmp_path):
    imgs = torch.randint(0, 17, (20, 8, 8), dtype=torch.uint8)
    labels = torch.arange(20) % 4
    torch.save({"images": imgs, "labels": labels}, tmp_path / "d.pt")
    dm = ImageDataModule(str(tmp_path / "d.pt"), levels=17, dequantize=False, centered=False, val_fraction=0.25, test_fraction=0.25)
    dm.setup()
    assert {k: len(v[0]) for k, v in dm.splits.items()} == {"train": 10, "val": 5, "test": 5}
    x = torch.cat([v[0] for v in dm.splits.values()])
    assert torch.allclose(torch.sort(x.flatten()).values, torch.sort(imgs.flatten().float() / 16).values)
    torch.save(torch.rand(5, 1, 4, 4) * 2, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ImageDataModule(str(tmp_path / "bad.pt")).setup()
    torch.save({"images": imgs}, tmp_path / "nolabels.pt")
    dm = ImageDataModule(str(tmp_path / "nolabels.pt"), levels=17)
    dm.setup()
    assert len(dm.splits["train"]) == 1
    with pytest.raises(ValueError, match="levels"):
        ImageDataModule(str(tmp_path / "d.pt"), levels=1)
