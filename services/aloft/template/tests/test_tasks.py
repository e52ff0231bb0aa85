"""Each task on its own: flytekit tasks are plain functions when called outside a workflow."""

import pytest

from @@package@@.tasks import Dataset, Model, Split, evaluate, load, split, train, validate


def test_load_is_deterministic_per_seed():
    assert load(rows=20, seed=1) == load(rows=20, seed=1)
    assert load(rows=20, seed=1) != load(rows=20, seed=2)


def test_validate_refuses_too_few_rows():
    with pytest.raises(ValueError, match="at least 10"):
        validate(data=Dataset(x=[1.0], y=[2.0]), min_rows=10)


def test_split_keeps_every_row_once():
    data = load(rows=100, seed=3)
    parts = split(data=data, test_fraction=0.25)
    assert len(parts.train.x) == 75 and len(parts.test.x) == 25
    assert parts.train.x + parts.test.x == data.x


def test_train_recovers_a_line():
    xs = [float(i) for i in range(10)]
    data = Split(train=Dataset(x=xs, y=[2 * x + 1 for x in xs]), test=Dataset(x=xs, y=xs))
    model = train(data=data)
    assert model.slope == pytest.approx(2) and model.intercept == pytest.approx(1)


def test_evaluate_is_one_for_a_perfect_model():
    xs = [float(i) for i in range(5)]
    data = Split(train=Dataset(x=xs, y=xs), test=Dataset(x=xs, y=[3 * x for x in xs]))
    assert evaluate(model=Model(slope=3, intercept=0), data=data) == pytest.approx(1)
