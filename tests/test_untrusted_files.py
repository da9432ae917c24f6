"""Records read back from a run or export folder are untrusted data (issue 20): a value out of its range is one
clear error naming the file, never a silent different result."""

from __future__ import annotations

import json

import pytest

from spft.errors import DataError
from spft.tasks.classification.source import read_thresholds


@pytest.mark.parametrize("bad", [1.5, -0.1, "NaN", "Infinity"])
def test_a_threshold_outside_0_1_is_refused_naming_the_file(tmp_path, bad):
    value = bad if isinstance(bad, float) else bad  # json.dumps writes NaN / Infinity as Python's json reads them
    (tmp_path / "thresholds.json").write_text(json.dumps({"classes": {"a": {"threshold": 0.3},
                                                                      "b": {"threshold": float(value)}}}))
    with pytest.raises(DataError, match=r"thresholds.json: class 'b' threshold .* not a probability in \[0, 1\]"):
        read_thresholds(tmp_path, ["a", "b"])


def test_thresholds_in_range_are_read(tmp_path):
    (tmp_path / "thresholds.json").write_text(json.dumps({"classes": {"a": {"threshold": 0.0}, "b": 1.0}}))
    thresholds, _, present = read_thresholds(tmp_path, ["a", "b"])
    assert thresholds == {"a": 0.0, "b": 1.0} and present
