"""The TGS layout: the real sample files load and match their RLE, write -> load is exact, bad input is named."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data import tgs
from bench.data.rle import rle_decode, rle_encode
from bench.errors import BenchError


def _filter_csv(src: Path, dst: Path, ids: set[str]) -> None:
    """Copy the header and the rows of ``ids`` (in the source's order) of a real CSV."""
    lines = src.read_text().splitlines(keepends=True)
    dst.write_text(lines[0] + "".join(line for line in lines[1:] if line.split(",", 1)[0] in ids))


@pytest.fixture()
def sample_root(tmp_path, real_dir) -> Path:
    """A tiny TGS folder built in tmp from the 9 real sample images, masks and test images."""
    root = tmp_path / "tgs"
    shutil.copytree(real_dir / "sample" / "images", root / "train" / "images")
    shutil.copytree(real_dir / "sample" / "masks", root / "train" / "masks")
    shutil.copytree(real_dir / "sample" / "test_images", root / "test" / "images")
    train = {p.stem for p in (root / "train" / "images").glob("*.png")}
    test = {p.stem for p in (root / "test" / "images").glob("*.png")}
    _filter_csv(real_dir / "train.csv", root / "train.csv", train)
    _filter_csv(real_dir / "depths.csv", root / "depths.csv", train | test)
    _filter_csv(real_dir / "sample_submission.csv", root / "sample_submission.csv", test)
    return root


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _expect_error(root: Path, call, *fragments: str) -> str:
    """``call`` raises a one-line BenchError containing every fragment, and the folder is left unchanged."""
    before = _snapshot(root)
    with pytest.raises(BenchError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert _snapshot(root) == before
    return message


def _png(path: Path, pixels: np.ndarray, mode: str | None = None) -> None:
    Image.fromarray(pixels, mode).save(path)


def _rows(path: Path) -> list[str]:
    return path.read_text().splitlines()


# ------------------------------------------------------------------------------------ real samples


def test_real_samples_load_and_match_their_rle(sample_root, real_dir):
    data = tgs.load(sample_root)
    rles = dict(line.split(",", 1) for line in _rows(sample_root / "train.csv")[1:])
    assert data.ids == list(rles)
    assert len(data.ids) == 9
    assert data.images.shape == (9, 101, 101) and data.images.dtype == np.uint8
    assert data.masks.dtype == np.bool_
    for i, ident in enumerate(data.ids):
        rgb = np.asarray(Image.open(real_dir / "sample" / "images" / f"{ident}.png"))
        np.testing.assert_array_equal(data.images[i], rgb[..., 0])
        np.testing.assert_array_equal(data.masks[i], rle_decode(rles[ident]))
        raw_mask = np.asarray(Image.open(real_dir / "sample" / "masks" / f"{ident}.png"))
        np.testing.assert_array_equal(data.masks[i], raw_mask != 0)
    assert 0 < data.masks.any(axis=(1, 2)).sum() < 9  # both 16-bit salt masks and 8-bit empty ones occur
    depths = dict(line.split(",") for line in _rows(sample_root / "depths.csv")[1:])
    assert data.depths.tolist() == [int(depths[i]) for i in data.ids]
    assert data.test_ids() == [line.split(",")[0] for line in _rows(sample_root / "sample_submission.csv")[1:]]
    assert data.test_images().shape == (9, 101, 101)
    first = np.asarray(Image.open(sample_root / "test" / "images" / f"{data.test_ids()[0]}.png"))
    np.testing.assert_array_equal(data.test_images()[0], first[..., 0])


def test_masks_from_rle_alone_equal_the_mask_pngs(sample_root):
    with_pngs = tgs.load(sample_root)
    shutil.rmtree(sample_root / "train" / "masks")
    from_rle = tgs.load(sample_root)
    assert from_rle.ids == with_pngs.ids
    np.testing.assert_array_equal(from_rle.masks, with_pngs.masks)


def test_without_csvs_ids_come_from_the_files(sample_root):
    for name in ("train.csv", "depths.csv", "sample_submission.csv"):
        (sample_root / name).unlink()
    data = tgs.load(sample_root)
    assert data.ids == sorted(p.stem for p in (sample_root / "train" / "images").glob("*.png"))
    assert data.depths is None
    assert data.test_ids() == sorted(p.stem for p in (sample_root / "test" / "images").glob("*.png"))


def test_grayscale_images_and_8bit_masks_are_read(tmp_path):
    root = tmp_path / "gray"
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "masks").mkdir(parents=True)
    image = np.arange(101 * 101, dtype=np.int64).reshape(101, 101).astype(np.uint8)
    mask = np.zeros((101, 101), np.uint8)
    mask[:40] = 255
    _png(root / "train" / "images" / "a.png", image, "L")
    _png(root / "train" / "masks" / "a.png", mask, "L")
    _png(root / "train" / "images" / "b.png", image, "L")
    _png(root / "train" / "masks" / "b.png", np.full((101, 101), 1, np.uint8), "L")  # full: {max} only
    data = tgs.load(root)
    np.testing.assert_array_equal(data.images[0], image)
    np.testing.assert_array_equal(data.masks[0], mask == 255)
    assert data.masks[1].all()
    assert data.test_ids() == []


def test_writing_the_samples_reproduces_the_real_formats(sample_root, tmp_path):
    data = tgs.load(sample_root)
    depths = dict(zip(data.ids, data.depths.tolist()))
    depths.update((line.split(",")[0], int(line.split(",")[1])) for line in _rows(sample_root / "depths.csv")[1:])
    out = tgs.write(tmp_path / "copy", data.ids, data.images, data.masks, depths=depths,
                    test_ids=data.test_ids(), test_images=data.test_images())
    assert (out / "train.csv").read_text() == (sample_root / "train.csv").read_text()
    for sub in ("train/images", "train/masks", "test/images"):
        for original in (sample_root / sub).glob("*.png"):
            a, b = Image.open(original), Image.open(out / sub / original.name)
            assert (a.mode, a.size) == (b.mode, b.size), original
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert sorted(_rows(out / "depths.csv")) == sorted(_rows(sample_root / "depths.csv"))
    submission = _rows(out / "sample_submission.csv")
    assert submission[0] == "id,rle_mask"
    assert submission[1:] == [f"{i},1 1" for i in data.test_ids()]


# ------------------------------------------------------------------------------------ write -> load


def _random_dataset(n: int = 12, n_test: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = [f"{i:04x}a" for i in range(n)]
    test_ids = [f"t{i:03d}" for i in range(n_test)]
    images = rng.integers(0, 256, (n, 101, 101), dtype=np.uint8)
    masks = rng.random((n, 101, 101)) < rng.random((n, 1, 1))
    masks[0] = False
    masks[1] = True
    test_images = rng.integers(0, 256, (n_test, 101, 101), dtype=np.uint8)
    depths = {i: int(z) for i, z in zip(ids + test_ids, rng.integers(50, 960, n + n_test))}
    return ids, images, masks, depths, test_ids, test_images


def test_write_load_round_trip(tmp_path):
    ids, images, masks, depths, test_ids, test_images = _random_dataset()
    root = tgs.write(tmp_path / "ds", ids, images, masks, depths, test_ids, test_images)
    data = tgs.load(root)
    assert data.ids == ids
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_array_equal(data.masks, masks)
    assert data.depths.tolist() == [depths[i] for i in ids]
    assert data.test_ids() == test_ids
    np.testing.assert_array_equal(data.test_images(), test_images)
    assert _rows(root / "train.csv")[1:] == [f"{i},{rle_encode(m)}" for i, m in zip(ids, masks)]
    assert _rows(root / "train.csv")[1] == f"{ids[0]},"
    empty, full = (Image.open(_mask_png(root, i)) for i in ids[:2])
    assert (empty.mode, full.mode) == ("L", "I;16")
    assert np.unique(np.asarray(full)).tolist() == [65535]
    assert Image.open(root / "train" / "images" / f"{ids[2]}.png").mode == "RGB"
    assert not [p for p in tmp_path.iterdir() if p.name != "ds"]  # no temporary folder left beside


def test_summary_and_its_text(tmp_path):
    ids, images, masks, depths, test_ids, test_images = _random_dataset()
    images[3] = 77  # one constant grey image
    masks[2] = False
    data = tgs.load(tgs.write(tmp_path / "ds", ids, images, masks, depths, test_ids, test_images))
    s = tgs.summary(data)
    assert (s["n_train"], s["n_test"], s["n_constant_images"]) == (12, 5, 1)
    assert s["empty_fraction"] == pytest.approx(np.mean(~masks.any(axis=(1, 2))))
    assert len(s["coverage_classes"]) == 11 and sum(s["coverage_classes"]) == 12
    assert s["coverage_classes"][10] >= 1  # the full mask
    assert (s["depth_min"], s["depth_max"]) == (min(depths[i] for i in ids), max(depths[i] for i in ids))
    text = tgs.format_summary(s)
    assert "train images     12" in text and "test images      5" in text and "depth z" in text


def test_write_failure_leaves_no_partial_dataset(tmp_path, monkeypatch):
    ids, images, masks, depths, test_ids, test_images = _random_dataset()
    calls = []
    real_write_png = tgs.write_png

    def failing(job):
        calls.append(job)
        if len(calls) == 7:
            raise OSError("disk full")
        real_write_png(job)

    monkeypatch.setattr(tgs, "write_png", failing)
    with pytest.raises(OSError, match="disk full"):
        tgs.write(tmp_path / "ds", ids, images, masks, depths, test_ids, test_images)
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    ids, images, masks, depths, test_ids, test_images = _random_dataset()
    root = tmp_path / "ds"
    root.mkdir()
    (root / "keep.txt").write_text("user data")
    _expect_error(root, lambda: tgs.write(root, ids, images, masks), str(root), "refusing to overwrite")
    tgs.write(root, ids, images, masks, overwrite=True)
    assert not (root / "keep.txt").exists() and (root / "train.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: {**d, "ids": d["ids"][:-1] + d["ids"][:1]}, "duplicate id"),
        (lambda d: {**d, "ids": ["../evil"] + d["ids"][1:]}, "invalid id '../evil'"),
        (lambda d: {**d, "test_ids": d["ids"][:5]}, "duplicate id"),
        (lambda d: {**d, "depths": {k: v for k, v in d["depths"].items() if k != "t000"}}, "no entry for id t000"),
        (lambda d: {**d, "depths": {**d["depths"], "t000": 1.5}}, "depth of id t000 must be an integer"),
        (lambda d: {**d, "masks": d["masks"].astype(np.uint8)}, "masks must be bool"),
        (lambda d: {**d, "images": d["images"][:, :100]}, "images must have shape (12, 101, 101)"),
        (lambda d: {**d, "test_images": None}, "test_ids and test_images go together"),
    ],
)
def test_write_rejects_bad_arguments_before_writing(tmp_path, mutate, message):
    ids, images, masks, depths, test_ids, test_images = _random_dataset()
    args = mutate(dict(ids=ids, images=images, masks=masks, depths=depths, test_ids=test_ids, test_images=test_images))
    with pytest.raises(ValueError) as err:
        tgs.write(tmp_path / "ds", **args)
    assert message in str(err.value)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ bad input


def _mask_png(root: Path, ident: str) -> Path:
    return root / "train" / "masks" / f"{ident}.png"


def _image_png(root: Path, ident: str) -> Path:
    return root / "train" / "images" / f"{ident}.png"


def _first_id(root: Path) -> str:
    return _rows(root / "train.csv")[1].split(",")[0]


def _salt_id(root: Path) -> str:
    return next(line.split(",")[0] for line in _rows(root / "train.csv")[1:] if line.split(",")[1])


def test_id_in_train_csv_without_an_image(sample_root):
    ident = _first_id(sample_root)
    _image_png(sample_root, ident).unlink()
    _expect_error(sample_root, lambda: tgs.load(sample_root),
                  str(sample_root / "train.csv"), f"id {ident} has no file", str(_image_png(sample_root, ident)))


def test_image_without_a_train_csv_row(sample_root):
    shutil.copy(_image_png(sample_root, _first_id(sample_root)), _image_png(sample_root, "ffffffffff"))
    _expect_error(sample_root, lambda: tgs.load(sample_root),
                  str(_image_png(sample_root, "ffffffffff")), "is not in", "train.csv")


def test_image_without_a_mask(sample_root):
    ident = _first_id(sample_root)
    _mask_png(sample_root, ident).unlink()
    _expect_error(sample_root, lambda: tgs.load(sample_root),
                  f"id {ident} has no file", str(_mask_png(sample_root, ident)))


def test_mask_without_an_image(sample_root):
    shutil.copy(_mask_png(sample_root, _first_id(sample_root)), _mask_png(sample_root, "ffffffffff"))
    _expect_error(sample_root, lambda: tgs.load(sample_root), str(_mask_png(sample_root, "ffffffffff")), "is not in")


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n", b"not an image at all"])
def test_corrupt_png(sample_root, content):
    path = _image_png(sample_root, _first_id(sample_root))
    path.write_bytes(content)
    _expect_error(sample_root, lambda: tgs.load(sample_root), str(path), "corrupt PNG")


def test_truncated_png(sample_root):
    path = _mask_png(sample_root, _salt_id(sample_root))
    path.write_bytes(path.read_bytes()[:-60])
    _expect_error(sample_root, lambda: tgs.load(sample_root), str(path), "corrupt PNG")


def test_not_a_png(sample_root):
    path = _image_png(sample_root, _first_id(sample_root))
    buf = io.BytesIO()
    Image.open(path).save(buf, format="BMP")
    path.write_bytes(buf.getvalue())
    _expect_error(sample_root, lambda: tgs.load(sample_root), str(path), "not a PNG (format BMP)")


@pytest.mark.parametrize("kind", ["image", "mask"])
def test_wrong_size(sample_root, kind):
    ident = _first_id(sample_root)
    path = _image_png(sample_root, ident) if kind == "image" else _mask_png(sample_root, ident)
    _png(path, np.zeros((101, 100, 3) if kind == "image" else (101, 100), np.uint8))
    _expect_error(sample_root, lambda: tgs.load(sample_root), str(path), "wrong size 100x101, expected 101x101")


def test_rgb_image_with_unequal_channels(sample_root):
    path = _image_png(sample_root, _first_id(sample_root))
    rgb = np.array(Image.open(path))
    rgb[5, 5, 1] ^= 1
    _png(path, rgb, "RGB")
    _expect_error(sample_root, lambda: tgs.load(sample_root), str(path), "RGB channels differ")


def test_16bit_image(sample_root):
    path = _image_png(sample_root, _first_id(sample_root))
    _png(path, np.full((101, 101), 300, np.uint16))
    _expect_error(sample_root, lambda: tgs.load(sample_root), str(path), "expected an 8-bit image")


@pytest.mark.parametrize(
    ("values", "text"),
    [((0, 128, 255), "3 distinct values (0, 128, 255)"), ((1, 255), "2 distinct values (1, 255)")],
)
def test_mask_with_more_than_two_values(sample_root, values, text):
    path = _mask_png(sample_root, _first_id(sample_root))
    pixels = np.full((101, 101), values[-1], np.uint8)
    for i, v in enumerate(values[:-1]):
        pixels[i * 20:(i + 1) * 20] = v
    _png(path, pixels, "L")
    _expect_error(sample_root, lambda: tgs.load(sample_root), str(path), text, "expected 0 and one other value")


def test_mask_png_disagreeing_with_train_csv(sample_root):
    ident = _salt_id(sample_root)
    path = _mask_png(sample_root, ident)
    pixels = np.array(Image.open(path))
    pixels[0, 0] = 65535 - pixels[0, 0]
    _png(path, pixels)
    _expect_error(sample_root, lambda: tgs.load(sample_root), str(path), f"mask of id {ident} differs from its RLE")


def _resave_masks(root: Path, save) -> dict[str, np.ndarray]:
    """Re-save a real salt mask and a real empty one with ``save(path, salt)``; returns what each held before."""
    salt_id, empty_id = _salt_id(root), next(i for i in tgs.load(root).ids if i != _salt_id(root)
                                             and not np.asarray(Image.open(_mask_png(root, i))).any())
    before = {}
    for ident in (salt_id, empty_id):
        path = _mask_png(root, ident)
        before[ident] = np.asarray(Image.open(path)) != 0
        save(path, before[ident])
    return before


def _palette_png(path: Path, salt: np.ndarray) -> None:
    """Index 1 for salt, as VOC-style tools write it; the palette paints index 0 white, so colours would invert it."""
    image = Image.fromarray(salt.astype(np.uint8), "P")
    image.putpalette([255, 255, 255, 0, 0, 0])
    image.save(path)


def _opaque_la_png(path: Path, salt: np.ndarray) -> None:
    gray = salt.astype(np.uint8) * 255
    Image.fromarray(np.stack([gray, np.full_like(gray, 255)], axis=-1), "LA").save(path)


@pytest.mark.parametrize("save", [_palette_png, _opaque_la_png], ids=["palette", "grayscale+alpha"])
def test_palette_and_opaque_alpha_masks_are_read(sample_root, save):
    reference = tgs.load(sample_root)
    before = _resave_masks(sample_root, save)
    assert {Image.open(_mask_png(sample_root, i)).mode for i in before} == {"LA" if save is _opaque_la_png else "P"}
    data = tgs.load(sample_root)  # the masks are also checked against train.csv's RLE
    np.testing.assert_array_equal(data.masks, reference.masks)
    assert sorted(bool(m.any()) for m in before.values()) == [False, True]


def test_no_masks_at_all(sample_root):
    shutil.rmtree(sample_root / "train" / "masks")
    (sample_root / "train.csv").unlink()
    _expect_error(sample_root, lambda: tgs.load(sample_root), "no masks", "train.csv")


def test_missing_train_images_folder(sample_root):
    shutil.rmtree(sample_root / "train" / "images")
    _expect_error(sample_root, lambda: tgs.load(sample_root), str(sample_root / "train" / "images"), "missing folder")


def _edit_csv(path: Path, edit) -> None:
    lines = _rows(path)
    path.write_text("\n".join(edit(lines)) + "\n")


def _set_first_value(value: str):
    """An edit that replaces the second field of the first data row."""
    return lambda lines: [lines[0], lines[1].split(",")[0] + "," + value, *lines[2:]]


@pytest.mark.parametrize(
    ("name", "edit", "fragments"),
    [
        ("train.csv", lambda ls: ls + ls[1:2], ["line 11: duplicate id"]),
        ("train.csv", lambda ls: ["id,mask"] + ls[1:], ["wrong header 'id,mask'", "expected 'id,rle_mask'"]),
        ("train.csv", lambda ls: [], ["wrong header ''"]),
        ("train.csv", lambda ls: ls[:1] + [ls[1] + ",x"] + ls[2:], ["line 2: 3 fields, expected 2"]),
        ("train.csv", _set_first_value("5 2 1 2"), ["id {id}: bad RLE: unsorted runs"]),
        ("train.csv", _set_first_value("1 x"), ["id {id}: bad RLE: non-integer token 'x'"]),
        ("train.csv", lambda ls: ls[:1] + [",1 1"] + ls[2:], ["line 2: empty id"]),
        ("depths.csv", lambda ls: ls + ls[1:2], ["line 20: duplicate id"]),
        ("depths.csv", lambda ls: ["id,depth"] + ls[1:], ["wrong header 'id,depth'", "expected 'id,z'"]),
        ("depths.csv", _set_first_value("12.5"), ["line 2: id", "depth '12.5' is not an integer"]),
        ("depths.csv", _set_first_value("deep"), ["depth 'deep' is not an integer"]),
    ],
)
def test_malformed_csv(sample_root, name, edit, fragments):
    path = sample_root / name
    ident = _first_id(sample_root)
    _edit_csv(path, edit)
    _expect_error(sample_root, lambda: tgs.load(sample_root), str(path), *(f.format(id=ident) for f in fragments))


def test_header_names_may_carry_spaces(sample_root):
    reference = tgs.load(sample_root)
    _edit_csv(sample_root / "train.csv", lambda ls: ["id, rle_mask", *ls[1:]])
    _edit_csv(sample_root / "depths.csv", lambda ls: [" id ,z", *ls[1:]])
    data = tgs.load(sample_root)
    assert data.ids == reference.ids
    np.testing.assert_array_equal(data.masks, reference.masks)
    np.testing.assert_array_equal(data.depths, reference.depths)


def test_depths_missing_a_train_id(sample_root):
    ident = _first_id(sample_root)
    _edit_csv(sample_root / "depths.csv", lambda ls: [line for line in ls if not line.startswith(ident)])
    _expect_error(sample_root, lambda: tgs.load(sample_root),
                  str(sample_root / "depths.csv"), f"no depth for train id {ident}")


def test_unreadable_csv_encoding(sample_root):
    (sample_root / "train.csv").write_bytes(b"id,rle_mask\n\xff\xfe,\n")
    _expect_error(sample_root, lambda: tgs.load(sample_root), str(sample_root / "train.csv"), "unreadable CSV")


def test_test_split_problems_are_named_on_first_use(sample_root):
    data = tgs.load(sample_root)
    test_id = _rows(sample_root / "sample_submission.csv")[1].split(",")[0]
    (sample_root / "test" / "images" / f"{test_id}.png").unlink()
    _expect_error(sample_root, data.test_ids, str(sample_root / "sample_submission.csv"), f"id {test_id} has no file")


def test_corrupt_test_image(sample_root):
    data = tgs.load(sample_root)
    path = sample_root / "test" / "images" / f"{data.test_ids()[2]}.png"
    path.write_bytes(b"garbage")
    _expect_error(sample_root, data.test_images, str(path), "corrupt PNG")
