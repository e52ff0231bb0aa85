"""The whole workflow, run locally by flytekit exactly as Aloft would run its nodes."""

import json

from @@package@@.workflows import training


def test_training_produces_a_good_model_file():
    model_file = training(rows=300, seed=11)
    with open(model_file.download()) as f:
        model = json.load(f)
    assert abs(model["slope"] - 3) < 0.2
    assert model["r2"] > 0.9
