"""The suite's own conftest: the time-per-group line `make test` prints, on a tiny suite run by pytester."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")

SUITE = """
import time

import pytest


@pytest.mark.slow
def test_trains() -> None:
    time.sleep(0.3)


@pytest.mark.slow
@pytest.mark.browser
def test_drives_chromium() -> None:
    pass


def test_adds() -> None:
    assert 1 + 1 == 2


@pytest.fixture
def slow_setup():
    time.sleep(0.2)


def test_with_a_slow_setup(slow_setup) -> None:
    pass
"""

LINE = re.compile(r"^fast (\d+) tests ([\d.]+) s \| browser (\d+) tests ([\d.]+) s \| slow (\d+) tests ([\d.]+) s$")


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_tiny=SUITE)
    return pytester


def _groups(result: pytest.RunResult) -> list[str]:
    lines = [line for line in result.outlines if re.match(r"^(fast|browser|slow) \d+ tests", line)]
    assert len(lines) == 1, result.outlines
    return lines[0]


def test_each_group_has_its_tests_and_their_setup_call_and_teardown_seconds(suite: pytest.Pytester) -> None:
    result = suite.runpytest_inprocess("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=4)
    fast, fast_s, browser, browser_s, slow, slow_s = LINE.match(_groups(result)).groups()
    assert (fast, browser, slow) == ("2", "1", "1")  # the browser test counts once, in its first group
    seconds: dict[str, float] = {}
    for report in result.reprec.getreports("pytest_runtest_logreport"):
        name = report.nodeid.split("::")[-1]
        seconds[name] = seconds.get(name, 0.0) + report.duration
    assert float(fast_s) == round(seconds["test_adds"] + seconds["test_with_a_slow_setup"], 1)
    assert float(browser_s) == round(seconds["test_drives_chromium"], 1)
    assert float(slow_s) == round(seconds["test_trains"], 1)
    assert float(slow_s) >= 0.3 and float(fast_s) >= 0.2  # the sleeps in a call and in a setup both count


def test_the_quick_loop_leaves_the_slow_groups_out(suite: pytest.Pytester) -> None:
    result = suite.runpytest_inprocess("-p", "no:cacheprovider", "-m", "not slow")
    result.assert_outcomes(passed=2)
    assert re.match(r"^fast 2 tests [\d.]+ s$", _groups(result))


def test_a_misspelt_group_is_refused(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_typo="import pytest\n\n\n@pytest.mark.slw\ndef test_typo() -> None:\n    pass\n")
    result = suite.runpytest_inprocess("-p", "no:cacheprovider", "--strict-markers")
    assert result.ret != 0 and "'slw' not found in `markers` configuration option" in result.stdout.str()
