"""Kaggle RLE: byte-exact round trip of every real mask, a property test, and each rejection with its reason."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bench.data.rle import rle_decode, rle_encode


def test_every_real_rle_round_trips_to_the_identical_string(real_dir):
    with open(real_dir / "train.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4000
    empty = 0
    for row in rows:
        mask = rle_decode(row["rle_mask"])
        assert mask.shape == (101, 101) and mask.dtype == np.bool_
        assert rle_encode(mask) == row["rle_mask"], row["id"]
        empty += not mask.any()
    assert empty == 1562  # the README's count: the decoder does not invent or drop salt


def test_column_major_and_one_indexed():
    mask = np.zeros((3, 4), dtype=bool)
    mask[0, 0] = mask[1, 0] = True  # pixels 1, 2 (down the first column)
    mask[2, 1] = True  # pixel 6
    mask[0, 2] = True  # pixel 7: the run continues across the column boundary
    assert rle_encode(mask) == "1 2 6 2"
    np.testing.assert_array_equal(rle_decode("1 2 6 2", (3, 4)), mask)


def test_empty_and_full_masks():
    assert rle_encode(np.zeros((101, 101), dtype=bool)) == ""
    assert not rle_decode("").any()
    assert rle_encode(np.ones((101, 101), dtype=bool)) == "1 10201"
    assert rle_decode("1 10201").all()


def test_last_pixel_is_in_range():
    mask = rle_decode("10201 1")
    assert mask[100, 100] and mask.sum() == 1


def test_touching_runs_decode_to_their_union():
    np.testing.assert_array_equal(rle_decode("1 2 3 2", (2, 3)), rle_decode("1 4", (2, 3)))


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        arrays(np.bool_, st.tuples(st.integers(1, 12), st.integers(1, 12))),
        st.sampled_from([np.zeros((101, 101), bool), np.ones((101, 101), bool), np.eye(101, dtype=bool)]),
    )
)
def test_round_trip_property(mask):
    text = rle_encode(mask)
    np.testing.assert_array_equal(rle_decode(text, mask.shape), mask)
    assert rle_encode(rle_decode(text, mask.shape)) == text
    starts = [int(t) for t in text.split()[0::2]]
    assert starts == sorted(starts)


@pytest.mark.parametrize(
    ("rle", "problem"),
    [
        ("5 2 1 2", "unsorted"),
        ("1 5 3 2", "overlapping"),
        ("1 5 5 2", "overlapping"),
        ("0 3", "non-positive"),
        ("-4 3", "non-positive"),
        ("4 0", "non-positive"),
        ("10200 3", "out-of-range"),
        ("10202 1", "out-of-range"),
        ("99999999999999999999999 1", "out-of-range"),
        ("1 2.5", "non-integer"),
        ("1 x", "non-integer"),
        ("1e3 2", "non-integer"),
        ("1 2 3", "odd token count"),
        ("7", "odd token count"),
    ],
)
def test_rejections_say_which_problem(rle, problem):
    with pytest.raises(ValueError, match=problem):
        rle_decode(rle)


def test_rejection_names_the_offending_run():
    with pytest.raises(ValueError, match=r"run 3 starts at 2, before run 2 at 10"):
        rle_decode("1 1 10 2 2 1")


def test_encode_rejects_non_2d():
    with pytest.raises(ValueError, match="2-D"):
        rle_encode(np.zeros((2, 2, 2), dtype=bool))
