"""Hostile input, one table: the real CLI exits with a one-line error (never a traceback) and writes nothing.

Each row runs ``python -m bench.cli`` on a fresh copy of a tiny synthetic TGS folder after ``setup`` has
broken it, then checks the exit code, the message fragment on a ``salt-bench ...`` line of stderr, that no
"Traceback" was printed and nothing in ``hidden`` (a password) was printed at all, that every file beside the
output (the data folder included) is byte-identical afterwards, that the paths in ``absent`` (run directories,
output folders, files a payload would create) do not exist, and that no temporary file was left behind.
Every row fails before any training starts.
"""
from __future__ import annotations

import errno
import functools
import io
import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pytest
from PIL import Image, ImageFile

from bench.config import CONFIG_DIR
from bench.data import png, synthetic
from bench.errors import BenchError
from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(CONFIG_DIR / "quick.yaml")
N_TRAIN = 12


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]  # {data}, {tmp}, {out}, {quick} and {root} (the project folder, the CLI's cwd) are filled in
    code: int
    fragment: str
    setup: Callable[[Path, Path], None] | None = None  # (data folder, tmp folder): break the input
    absent: tuple[str, ...] = ("{out}",)  # must not exist afterwards
    file_size_limit: int | None = None  # RLIMIT_FSIZE in bytes: writes beyond it fail like a full disk
    hidden: tuple[str, ...] = ()  # must appear nowhere in stdout or stderr


# --------------------------------------------------------------------------------------- setups


def _train_rows(root: Path) -> list[list[str]]:
    return [line.split(",", 1) for line in (root / "train.csv").read_text().splitlines()[1:]]


def _first(root: Path) -> str:
    return _train_rows(root)[0][0]


def _salt(root: Path) -> str:
    return next(ident for ident, rle in _train_rows(root) if rle)


def _image(root: Path, ident: str | None = None) -> Path:
    return root / "train" / "images" / f"{ident or _first(root)}.png"


def _mask(root: Path, ident: str) -> Path:
    return root / "train" / "masks" / f"{ident}.png"


def _write_image(pixels: np.ndarray, mode: str | None = None) -> Callable[[Path, Path], None]:
    return lambda root, tmp: Image.fromarray(pixels, mode).save(_image(root))


def _bytes(content: bytes) -> Callable[[Path, Path], None]:
    return lambda root, tmp: _image(root).write_bytes(content)


def _truncate(root: Path, tmp: Path) -> None:
    path = _image(root)
    path.write_bytes(path.read_bytes()[:-60])


def _as_bmp(root: Path, tmp: Path) -> None:
    buf = io.BytesIO()
    Image.open(_image(root)).save(buf, format="BMP")
    _image(root).write_bytes(buf.getvalue())


def _unequal_channels(root: Path, tmp: Path) -> None:
    rgb = np.array(Image.open(_image(root)))
    rgb[5, 5, 1] ^= 1
    Image.fromarray(rgb, "RGB").save(_image(root))


def _three_valued_mask(root: Path, tmp: Path) -> None:
    pixels = np.full((101, 101), 255, np.uint8)
    pixels[:20], pixels[20:40] = 0, 128
    Image.fromarray(pixels, "L").save(_mask(root, _first(root)))


def _transparent_mask(root: Path, tmp: Path) -> None:
    """A salt mask as grayscale+alpha with one transparent pixel: an opaque one is read, this one is not."""
    path = _mask(root, _salt(root))
    gray = (np.array(Image.open(path)) != 0).astype(np.uint8) * 255
    alpha = np.full_like(gray, 255)
    alpha[0, 0] = 0
    Image.fromarray(np.stack([gray, alpha], axis=-1), "LA").save(path)


def _mask_off_by_one_pixel(root: Path, tmp: Path) -> None:
    path = _mask(root, _salt(root))
    pixels = np.array(Image.open(path))
    pixels[0, 0] = 65535 - pixels[0, 0]
    Image.fromarray(pixels).save(path)


@functools.cache
def _huge_png(side: int) -> bytes:
    """A few KB of 1-bit PNG that declares side x side pixels (decoded: side**2 bytes or more)."""
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, format="PNG")
    return buf.getvalue()


def _huge(side: int) -> Callable[[Path, Path], None]:
    return lambda root, tmp: _image(root).write_bytes(_huge_png(side))


def _edit_csv(name: str, edit: Callable[[list[str], Path], list[str]]) -> Callable[[Path, Path], None]:
    def setup(root: Path, tmp: Path) -> None:
        path = root / name
        path.write_text("\n".join(edit(path.read_text().splitlines(), root)) + "\n")
    return setup


def _first_rle(rle: str) -> Callable[[Path, Path], None]:
    """Replace the first train.csv row's RLE (its mask PNG is compared with it, so it is decoded too)."""
    return _edit_csv("train.csv", lambda ls, root: [ls[0], f"{ls[1].split(',')[0]},{rle}", *ls[2:]])


def _remove(*parts: str) -> Callable[[Path, Path], None]:
    def setup(root: Path, tmp: Path) -> None:
        path = root.joinpath(*parts)
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return setup


def _remove_mask(root: Path, tmp: Path) -> None:
    _mask(root, _first(root)).unlink()


def _file(name: str, text: str) -> Callable[[Path, Path], None]:
    return lambda root, tmp: (tmp / name).write_text(text.format(tmp=tmp))


def _non_empty_out(root: Path, tmp: Path) -> None:
    (tmp / "synth").mkdir()
    (tmp / "synth" / "keep.txt").write_text("user data")


def _same_run_spelled_twice(root: Path, tmp: Path) -> None:
    """A folder ``run`` and two other spellings of it: ``x/../run`` and a symbolic link ``link``."""
    (tmp / "run").mkdir()
    (tmp / "x").mkdir()
    (tmp / "link").symlink_to(tmp / "run")


# --------------------------------------------------------------------------------------- the table

CHECK = ("data", "check", "{data}")
RUN = ("run", "--config", "{quick}", "--out", "{out}")


TUNE = ("tune", "--arch", "unet", "--n-trials", "1", "--out", "{out}")


def _set(*overrides: str) -> tuple[str, ...]:
    return RUN + tuple(token for o in overrides for token in ("--set", o))


def _storage(url: str) -> Case:
    return Case(f"tune --storage {url}", TUNE + ("--storage", url), 2, "cannot open", hidden=("secretpw", ":sec", "retpw"))


CASES = [
    # PNG files
    Case("empty PNG", CHECK, 2, "corrupt PNG", _bytes(b"")),
    Case("PNG signature only", CHECK, 2, "corrupt PNG", _bytes(b"\x89PNG\r\n\x1a\n")),
    Case("garbage PNG", CHECK, 2, "corrupt PNG", _bytes(b"not an image at all")),
    Case("truncated PNG", CHECK, 2, "corrupt PNG", _truncate),
    Case("BMP named .png", CHECK, 2, "not a PNG (format BMP)", _as_bmp),
    Case("wrong size", CHECK, 2, "wrong size 100x101, expected 101x101", _write_image(np.zeros((101, 100), np.uint8), "L")),
    Case("2000x2000 PNG", CHECK, 2, "wrong size 2000x2000, expected 101x101", _huge(2000)),
    Case("12000x12000 PNG (Pillow warns)", CHECK, 2, "could be decompression bomb", _huge(12000)),
    Case("20000x20000 PNG (Pillow refuses)", CHECK, 2, "could be decompression bomb", _huge(20000)),
    Case("RGB channels differ", CHECK, 2, "RGB channels differ", _unequal_channels),
    Case("16-bit image", CHECK, 2, "expected an 8-bit image", _write_image(np.full((101, 101), 300, np.uint16))),
    Case("mask with 3 values", CHECK, 2, "mask has 3 distinct values (0, 128, 255)", _three_valued_mask),
    Case("mask with a transparent pixel", CHECK, 2, "grayscale+alpha PNG with transparent pixels (1 of 10201)",
         _transparent_mask),
    Case("mask PNG differs from its RLE", CHECK, 2, "differs from its RLE", _mask_off_by_one_pixel),
    Case("image without a mask", CHECK, 2, "has no file", _remove_mask),
    Case("no train/images folder", CHECK, 2, "missing folder", _remove("train", "images")),
    Case("test id without its image", CHECK, 2, "has no file",
         lambda root, tmp: next((root / "test" / "images").glob("*.png")).unlink()),
    Case("not a directory", ("data", "check", "{tmp}/nowhere"), 2, "not a directory"),
    # RLE and CSV files
    Case("RLE odd token count", CHECK, 2, "bad RLE: odd token count", _first_rle("1 2 3")),
    Case("RLE non-integer", CHECK, 2, "bad RLE: non-integer token '2x'", _first_rle("1 2x")),
    Case("RLE beyond the image", CHECK, 2, "bad RLE: out-of-range run", _first_rle("10000 500")),
    Case("RLE overlapping runs", CHECK, 2, "bad RLE: overlapping runs", _first_rle("1 5 3 2")),
    Case("RLE 30-digit token", CHECK, 2, "bad RLE: out-of-range run", _first_rle("1" * 30 + " 1")),
    Case("train.csv wrong header", CHECK, 2, "wrong header 'id,mask'",
         _edit_csv("train.csv", lambda ls, r: ["id,mask", *ls[1:]])),
    Case("train.csv duplicate id", CHECK, 2, "duplicate id", _edit_csv("train.csv", lambda ls, r: ls + ls[1:2])),
    Case("train.csv extra field", CHECK, 2, "3 fields, expected 2",
         _edit_csv("train.csv", lambda ls, r: [ls[0], ls[1] + ",x", *ls[2:]])),
    Case("train.csv unterminated quote", CHECK, 2, "malformed CSV", _edit_csv("train.csv", lambda ls, r: ls + ['"abc,1 1'])),
    Case("train.csv not UTF-8", CHECK, 2, "unreadable CSV",
         lambda root, tmp: (root / "train.csv").write_bytes(b"id,rle_mask\n\xff\xfe,\n")),
    Case("depths.csv non-integer", CHECK, 2, "depth 'deep' is not an integer",
         _edit_csv("depths.csv", lambda ls, r: [ls[0], ls[1].split(",")[0] + ",deep", *ls[2:]])),
    # folds
    Case("folds > images", ("data", "folds", "{data}", "--k", "100", "--out", "{out}"), 2,
         f"cannot make 100 folds from {N_TRAIN} images"),
    Case("folds k=1", ("data", "folds", "{data}", "--k", "1", "--out", "{out}"), 2, "argument --k: expected an integer >= 2"),
    Case("folds k=0", ("data", "folds", "{data}", "--k", "0", "--out", "{out}"), 2, "argument --k: expected an integer >= 2"),
    Case("folds negative seed", ("data", "folds", "{data}", "--seed", "-1", "--out", "{out}"), 2,
         "argument --seed: expected an integer >= 0"),
    # writes that fail (a full disk: the file size limit makes writes fail the same way)
    Case("synth on a full disk", ("data", "synth", "--out", "{out}", "--n-train", "8", "--n-test", "0"), 2,
         ".png: File too large", file_size_limit=2000),
    Case("folds on a full disk", ("data", "folds", "{data}", "--out", "{out}"), 2, "File too large",
         absent=("{out}/splits.json", "{out}/ImageSets"), file_size_limit=100),
    Case("synth into a non-empty folder", ("data", "synth", "--out", "{tmp}/synth", "--n-train", "8", "--n-test", "0"), 2,
         "refusing to overwrite", _non_empty_out, absent=("{tmp}/synth/train",)),
    Case("synth seed -1", ("data", "synth", "--out", "{out}", "--seed", "-1"), 2, "argument --seed: expected an integer >= 0"),
    Case("synth no train images", ("data", "synth", "--out", "{out}", "--n-train", "0"), 2,
         "argument --n-train: expected an integer >= 1"),
    # configs
    Case("YAML python tag", RUN + ("--config", "{tmp}/evil.yaml"), 2, "invalid YAML at line 1",
         _file("evil.yaml", 'name: !!python/object/apply:os.system ["touch {tmp}/pwned"]\n'), absent=("{out}", "{tmp}/pwned")),
    Case("NaN loss weight", _set("protocol.loss.first.bce=nan"), 2, "protocol.loss.first.bce: expected a finite number"),
    # numeric arguments
    Case("tune --timeout nan", ("tune", "--arch", "unet", "--timeout", "nan", "--out", "{out}"), 2,
         "argument --timeout: expected a finite number > 0, got 'nan'"),
    Case("tune --timeout inf", ("tune", "--arch", "unet", "--timeout", "inf", "--out", "{out}"), 2,
         "argument --timeout: expected a finite number > 0"),
    Case("tune --timeout 0", ("tune", "--arch", "unet", "--timeout", "0", "--out", "{out}"), 2,
         "argument --timeout: expected a finite number > 0"),
    Case("tune --timeout text", ("tune", "--arch", "unet", "--timeout", "soon", "--out", "{out}"), 2,
         "argument --timeout: expected a number, got 'soon'"),
    Case("tune --n-trials 0", ("tune", "--arch", "unet", "--n-trials", "0", "--out", "{out}"), 2,
         "argument --n-trials: expected an integer >= 1"),
    Case("tune --storage unreachable", ("tune", "--arch", "unet", "--n-trials", "1", "--out", "{out}", "--storage",
                                         "sqlite:///{tmp}/no/such/dir/study.db"), 2, "--storage sqlite:///",
         absent=("{out}",)),
    Case("run --cpus-per-cell nan", RUN + ("--cpus-per-cell", "nan"), 2,
         "argument --cpus-per-cell: expected a finite number > 0"),
    # subsets and seeds: an empty list is not "all", a repeated item is not two
    Case("run --archs ','", RUN + ("--archs", ","), 2, "argument --archs: expected a comma-separated list, got ','"),
    Case("run --archs ''", RUN + ("--archs", ""), 2, "argument --archs: expected a comma-separated list, got ''"),
    Case("run --archs unet,unet", RUN + ("--archs", "unet,unet"), 2, "argument --archs: unet is listed twice"),
    Case("run --folds ','", RUN + ("--folds", ","), 2, "argument --folds: expected a comma-separated list"),
    Case("tune --folds 0,0", ("tune", "--arch", "unet", "--n-trials", "1", "--folds", "0,0", "--out", "{out}"), 2,
         "argument --folds: 0 is listed twice"),
    Case("predict --ensemble ','", ("predict", "{tmp}", "--ensemble", ","), 2,
         "argument --ensemble: expected a comma-separated list", absent=("{tmp}/submission.csv",)),
    Case("protocol.seeds=[0,0]", _set("protocol.seeds=[0,0]"), 2, "protocol.seeds: seed 0 is listed twice in [0, 0]"),
    # compare: one run directory, however spelled, is not two runs
    *[Case(f"compare run {b}", ("compare", "{tmp}/run", f"{{tmp}}/{b}"), 2, "are the same run directory",
           _same_run_spelled_twice, absent=("{tmp}/run/compare",)) for b in ("run", "x/../run", "link", "run/.")],
    # a search space without parameters: every trial would be the untuned config, labelled tuned
    *[Case(f"tune with a {kind} space file", ("tune", "--config", "{quick}", "--arch", "unet", "--n-trials", "1", "--space",
                                              "{tmp}/space.yaml", "--out", "{out}"), 2,
           "space.yaml: no parameter to tune for unet", _file("space.yaml", text))
      for kind, text in (("empty", ""), ("comments-only", "# to do\n\n"), ("sections-only", "pruner: {{name: none}}\n"))],
    # the run directory and the data folder are kept apart
    Case("run --out the data folder", ("run", "--config", "{quick}", "--out", "{data}", "--set", "data.source={data}"), 2,
         "the run directory is the data folder", absent=()),
    Case("run --out inside the data folder", ("run", "--config", "{quick}", "--out", "{data}/run", "--set",
                                              "data.source={data}"), 2, "the run directory is inside the data folder",
         absent=("{data}/run",)),
    Case("run --out around the data folder", ("run", "--config", "{quick}", "--out", "{tmp}", "--set", "data.source={data}"),
         2, "the run directory contains the data folder", absent=("{tmp}/config.yaml", "{tmp}/protocol.json")),
    Case("tune --out the data folder", ("tune", "--config", "{quick}", "--arch", "unet", "--n-trials", "1", "--out",
                                        "{data}", "--set", "data.source={data}"), 2, "the run directory is the data folder",
         absent=("{data}/tuning",)),
    # a data source that fails leaves no run directory behind
    Case("run on a missing data folder", ("run", "--config", "{quick}", "--out", "{tmp}/new/run", "--set",
                                          "data.source={tmp}/nowhere"), 2, "nowhere: not a directory", absent=("{tmp}/new",)),
    Case("run on a corrupt PNG", _set("data.source={data}"), 2, "corrupt PNG", _bytes(b"junk")),
    Case("run with more folds than images", _set("data.source={data}", "data.holdout=0", f"protocol.folds={N_TRAIN + 1}"),
         2, f"{N_TRAIN} development images cannot make protocol.folds={N_TRAIN + 1} folds"),
    Case("tune on a corrupt PNG", ("tune", "--config", "{quick}", "--arch", "unet", "--n-trials", "1", "--out", "{out}",
                                   "--set", "data.source={data}"), 2, "corrupt PNG", _bytes(b"junk")),
    # storage URLs: a mistyped one is printed, its password never
    _storage("postgresql:/user:secretpw@127.0.0.1:1/db"),
    _storage("postgresql//user:secretpw@127.0.0.1:1/db"),
    _storage("user:secretpw@127.0.0.1:1/db"),
    _storage("postgresql://user:sec retpw@127.0.0.1:1/db"),
    _storage("postgresql://user@127.0.0.1:1/db?password=sec retpw"),
    # names, not paths: nothing is written outside --out (or runs/)
    Case("tune --study ../../escaped_study", TUNE + ("--study", "../../escaped_study"), 2,
         "--study: '../../escaped_study' holds '..'",
         absent=("{out}", "{tmp}/escaped_study.db", "{tmp}/escaped_study.best.yaml", "{tmp}/escaped_study")),
    Case("tune --study with a separator", TUNE + ("--study", "a/b"), 2, "--study: 'a/b' holds a path separator"),
    Case("tune --study empty", TUNE + ("--study", ""), 2, "--study: '' is empty"),
    Case("run name=../x", ("run", "--config", "{quick}", "--set", "name=../i23-escaped-run"), 2,
         "name: '../i23-escaped-run' holds '..'", absent=("{root}/i23-escaped-run", "{root}/runs/i23-escaped-run")),
    Case("run name=an absolute path", ("run", "--config", "{quick}", "--set", "name={tmp}/abs"), 2,
         "abs' holds a path separator", absent=("{tmp}/abs",)),
    Case("run name= (empty)", ("run", "--config", "{quick}", "--set", "name="), 2, "name: '' is empty",
         absent=("{root}/runs/config.yaml",)),
    Case("run name=. (runs/ itself)", ("run", "--config", "{quick}", "--set", "name=."), 2, "name: '.' is the current folder",
         absent=("{root}/runs/config.yaml",)),
    Case("run name=../x with --out", _set("name=../x"), 2, "name: '../x' holds '..'"),
]


@pytest.fixture(scope="module")
def base_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic.write_dataset(tmp_path_factory.mktemp("bad-input") / "data", n_train=N_TRAIN, n_test=2, seed=1)


def _snapshot(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not any(s == p or s in p.parents for s in skip)}


def _limit_file_size(limit: int) -> Callable[[], None]:
    def apply() -> None:
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # kept across exec: writes fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(case: Case, base_dataset: Path, tmp_path: Path) -> None:
    if case.file_size_limit and not hasattr(os, "fork"):
        pytest.skip("the file size limit needs POSIX")
    data = tmp_path / "data"
    shutil.copytree(base_dataset, data)
    if case.setup:
        case.setup(data, tmp_path)
    outputs = (tmp_path / "out", tmp_path / "cache")
    before = _snapshot(tmp_path, outputs)
    fill = {"data": str(data), "tmp": str(tmp_path), "out": str(tmp_path / "out"), "quick": QUICK, "root": str(ROOT)}
    argv = [token.format(**fill) for token in case.argv]
    env = {**os.environ, "SALT_BENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "bench.cli", *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120, preexec_fn=_limit_file_size(case.file_size_limit) if case.file_size_limit else None)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == case.code, result.stderr
    lines = [line for line in result.stderr.splitlines() if case.fragment in line]
    assert lines and lines[0].startswith("salt-bench"), result.stderr
    assert not [text for text in case.hidden if text in result.stderr + result.stdout], result.stderr
    assert _snapshot(tmp_path, outputs) == before, "the input folder, or a file beside the output, changed"
    for path in case.absent:
        assert not Path(path.format(**fill)).exists(), path
    assert not [p for p in tmp_path.rglob("*.tmp")], "a temporary file was left"


# --------------------------------------------------------------------------------------- configs in-process

# Two config rows above go through the CLI (importing the trainer costs seconds per process); these go
# through ``config.load``, the first thing ``run`` and ``tune`` call: (YAML layer or None, overrides, message).
CONFIG_CASES = [
    ("name: !include other.yaml\n", [], "invalid YAML at line 1"),
    ("protocol: [1, 2\n", [], "invalid YAML at line 2"),
    ("protocol:\n  epoks: 3\n", [], "unknown key 'protocol.epoks'"),
    (None, ["architectures.unet.train.epochs=3"], "architectures.unet.train.epochs: not a per-architecture setting"),
    ("- 1\n", [], "top level must be a mapping, got list"),
    (None, ["protocol.epochs=many"], "protocol.epochs: expected int, got str 'many'"),
    (None, ["protocol.epochs"], "expected KEY=VALUE"),
    (None, ["protocol.folds=1"], "protocol.folds: 1 is below the minimum 2"),
    (None, ["protocol.optimizer.lr=nan"], "protocol.optimizer.lr: expected a finite number, got 'nan'"),
    (None, ["architectures.unet.train.optimizer.lr=.nan"], "architectures.unet.train.optimizer.lr: expected a finite number"),
    (None, ["protocol.grad_clip=.inf"], "protocol.grad_clip: expected a finite number, got inf"),
    (None, ["protocol.optimizer.lr=1e999"], "protocol.optimizer.lr: expected a finite number, got '1e999'"),
    (None, ["protocol.augment.hflip=NaN"], "protocol.augment.hflip: expected a finite number"),
    (None, ["protocol.loss.then={lovasz: .nan}", "protocol.loss.switch_epoch=1"], "protocol.loss.then.lovasz: expected a finite"),
    ("protocol:\n  loss:\n    first: {bce: .inf}\n", [], "protocol.loss.first.bce: expected a finite number, got inf"),
    (None, ["protocol.fold_seed=-1"], "protocol.fold_seed: -1 is below the minimum 0"),
    (None, ["data.seed=-1"], "data.seed: -1 is below the minimum 0"),
    (None, ["protocol.seeds=[0, -1]"], "protocol.seeds[1]: -1 is below the minimum 0"),
    # free-form model options: any number in them, NaN or infinite in any spelling, is refused too
    (None, ["architectures.pspnet.psp_dropout=.nan"], "architectures.pspnet.psp_dropout: expected a finite number"),
    (None, ["architectures.pspnet.psp_dropout=nan"], "architectures.pspnet.psp_dropout: expected a finite number"),
    (None, ["architectures.deeplabv3.decoder_atrous_rates=[3, .inf, 9]"],
     "architectures.deeplabv3.decoder_atrous_rates[1]: expected a finite number"),
    ("architectures:\n  unet: {decoder_channels: [32, 16, -.inf]}\n", [],
     "architectures.unet.decoder_channels[2]: expected a finite number"),
]


@pytest.mark.parametrize(("text", "overrides", "message"), CONFIG_CASES, ids=[c[2][:40] for c in CONFIG_CASES])
def test_bad_config_is_one_line(text: str | None, overrides: list[str], message: str, tmp_path: Path) -> None:
    from bench import config

    layers = [QUICK]
    if text is not None:
        layers.append(tmp_path / "bad.yaml")
        layers[-1].write_text(text)
    with pytest.raises(BenchError) as err:
        config.load(layers, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(layers[-1]) in str(err.value) or overrides and "--set" in str(err.value)


def test_a_missing_or_unreadable_config_is_named(tmp_path: Path) -> None:
    from bench import config

    for path in (tmp_path / "none.yaml", tmp_path):
        with pytest.raises(BenchError, match=f"{path}: cannot read config"):
            config.load([path])


# --------------------------------------------------------------------------------------- in-process checks


def test_an_oversized_png_is_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The header is enough: a PNG that is not 101x101 is never decoded (a 420 KB file can hold 1.2 GB)."""
    path = tmp_path / "big.png"
    path.write_bytes(_huge_png(2000))
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: decoded.append(im.size) or real_load(im))
    with pytest.raises(BenchError, match="wrong size 2000x2000"):
        png.read_image(path)
    assert decoded == []
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((101, 101), np.uint8), "L").save(small)
    assert png.read_image(small).shape == (101, 101)
    assert decoded and set(decoded) == {(101, 101)}  # the spy sees real decodes


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("postgresql://u@127.0.0.1:1/db?password=secretpw", "secretpw"),
        ("postgresql://u:secretpw@127.0.0.1:1/db", "secretpw"),
        ("postgresql://u:sec@ret/pw@127.0.0.1:1/db", "ret/pw"),
        ("postgresql://u@127.0.0.1:1/db?sslmode=disable&sslpassword=secretpw", "secretpw"),
        ("mysql://u@127.0.0.1:1/db?passwd=secretpw;charset=utf8", "secretpw"),
        ("postgresql://u@127.0.0.1:1/db?PASS%57ORD=secretpw", "secretpw"),
    ],
)
def test_storage_passwords_never_printed(url: str, secret: str) -> None:
    from bench import tune
    from bench.redact import mask_url

    masked = mask_url(url)
    assert secret not in masked and "***" in masked
    assert masked.split("://")[0] == url.split("://")[0] and "127.0.0.1:1" in masked
    space = SimpleNamespace(heartbeat={"interval": 60, "grace_period": 120, "max_retry": 1})  # all open_storage reads
    with pytest.raises(BenchError) as err:  # nothing listens on port 1, or the driver is missing
        tune.open_storage(url, space)
    assert secret not in str(err.value) and "cannot open" in str(err.value)


def test_every_float_field_refuses_non_finite_values() -> None:
    """Not only the fields with a range: any float in the config, NaN or infinite, in any spelling."""
    from bench import config

    floats = [f"{section}.{name}" for section, cls in (("protocol.optimizer", config.OptimizerConfig),
                                                       ("protocol.scheduler", config.SchedulerConfig),
                                                       ("protocol.augment", config.AugmentConfig))
              for name, tp in cls.__annotations__.items() if tp == "float"]
    assert len(floats) >= 10
    for key in floats + ["protocol.grad_clip", "protocol.loss.first.dice"]:
        for value in ("nan", ".nan", "-.inf", "inf", "1e999"):
            with pytest.raises(BenchError, match=f"{key}: expected a finite number"):
                config.load([QUICK], [f"{key}={value}"])
    assert math.isfinite(config.load([QUICK], ["protocol.grad_clip=1e3"]).protocol.grad_clip)


def test_disk_full_is_one_line_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """ENOSPC as the OS raises it (no file name on a failed write): the CLI names the file, exits 2, leaves nothing."""
    from bench import cli

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Image.Image, "save", full)
    assert cli.main(["data", "synth", "--out", str(tmp_path / "out"), "--n-train", "8", "--n-test", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("salt-bench: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert err.rstrip().endswith(f".png: {os.strerror(errno.ENOSPC)}")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------- a finished run, one file broken

# Each row corrupts one file of a copy of a finished tiny run (holdout included) and runs one command on it, as a
# careless user would: (name, the file relative to the run, how it is broken, the command).
FINISHED_CELL = "cells/unet/fold0-seed0"


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00\x01garbage, not what this file should hold\n" * 3)


RUN_FILE_CASES = [
    ("truncated metrics.json", f"{FINISHED_CELL}/metrics.json", _truncated, "report"),
    ("truncated metrics.json", f"{FINISHED_CELL}/metrics.json", _truncated, "run"),
    ("truncated metrics.json", f"{FINISHED_CELL}/metrics.json", _truncated, "compare"),
    ("truncated metrics.json", f"{FINISHED_CELL}/metrics.json", _truncated, "predict"),
    ("metrics.json = {}", f"{FINISHED_CELL}/metrics.json", lambda p: p.write_text("{}"), "report"),
    ("truncated splits.json", "splits.json", _truncated, "run"),
    ("truncated splits.json", "splits.json", _truncated, "report"),
    ("truncated holdout.json", "holdout.json", _truncated, "run"),
    ("truncated env.json", "env.json", _truncated, "report"),
    ("truncated data.npz", "data.npz", _truncated, "run"),
    ("truncated data.npz", "data.npz", _truncated, "predict"),
    ("garbage holdout prediction", "holdout/unet-seed0.npz", _garbage, "run"),
    ("empty holdout prediction", "holdout/unet-seed0.npz", lambda p: p.write_bytes(b""), "run"),
    ("invalid config.yaml", "config.yaml", lambda p: p.write_text("name: [unclosed\narchitectures: {unet: {}\n"), "run"),
    ("garbage history.csv", f"{FINISHED_CELL}/history.csv", _garbage, "report"),
    ("garbage gallery.npz", "gallery.npz", _garbage, "report"),
    ("truncated model.pt", f"{FINISHED_CELL}/model.pt", _truncated, "predict"),
]


def _finished_overrides(data: Path) -> list[str]:
    return tiny_overrides(data, **{"protocol.epochs": 1, "data.holdout": 0.25})


@pytest.fixture(scope="module")
def finished_run(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two folds of one architecture trained by the real engine, its holdout predicted and the run aggregated."""
    from bench import config, runner

    run_dir = tmp_path_factory.mktemp("finished") / "run"
    runner.run_grid(config.load([QUICK], _finished_overrides(tiny_dataset)), run_dir, archs=["unet"], progress=False)
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize(("name", "relative", "corrupt", "command"), RUN_FILE_CASES,
                         ids=[f"{c[0]} ({c[3]})" for c in RUN_FILE_CASES])
def test_a_broken_file_of_a_finished_run_is_one_line_naming_it(name: str, relative: str, corrupt: Callable[[Path], None],
                                                                 command: str, finished_run: Path, tiny_dataset: Path,
                                                                 tmp_path: Path) -> None:
    run = Path(shutil.copytree(finished_run, tmp_path / "run"))
    broken = run / relative
    assert broken.is_file()
    corrupt(broken)
    argv = {
        "report": ["report", str(run), "--out", str(tmp_path / "report.html")],
        "run": ["run", "--config", QUICK, "--out", str(run), "--archs", "unet", "--no-report",
                *[token for o in _finished_overrides(tiny_dataset) for token in ("--set", o)]],
        "compare": ["compare", str(shutil.copytree(finished_run, tmp_path / "other")), str(run),
                    "--out", str(tmp_path / "compare.csv")],
        "predict": ["predict", str(run), "--arch", "unet", "--out", str(tmp_path / "submission.csv")],
    }[command]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "bench.cli", *argv], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("salt-bench") and str(broken) in lines[0], result.stderr
