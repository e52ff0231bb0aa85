"""The tasks of the training pipeline.

Plain Python with no ML library, so the project runs anywhere flytekit does: replace the body of
`load` with your data source and of `train` with your model. Each task is a typed function that
is also callable directly, which is how tests/test_tasks.py tests them.
"""

import json
import random
from dataclasses import dataclass
from typing import List

from flytekit import task
from flytekit.types.file import FlyteFile


@dataclass
class Dataset:
    x: List[float]
    y: List[float]


@dataclass
class Split:
    train: Dataset
    test: Dataset


@dataclass
class Model:
    slope: float
    intercept: float


@task(cache=True, cache_version="1")
def load(rows: int, seed: int) -> Dataset:
    """Synthetic data, y = 3x + 2 plus noise: stands in for a warehouse query."""
    rng = random.Random(seed)
    x = [rng.uniform(0, 10) for _ in range(rows)]
    return Dataset(x=x, y=[3 * v + 2 + rng.gauss(0, 1) for v in x])


@task
def validate(data: Dataset, min_rows: int) -> Dataset:
    if len(data.x) != len(data.y):
        raise ValueError(f"x has {len(data.x)} values but y has {len(data.y)}")
    if len(data.x) < min_rows:
        raise ValueError(f"only {len(data.x)} rows; at least {min_rows} are needed")
    return data


@task
def split(data: Dataset, test_fraction: float) -> Split:
    cut = int(len(data.x) * (1 - test_fraction))
    return Split(train=Dataset(x=data.x[:cut], y=data.y[:cut]), test=Dataset(x=data.x[cut:], y=data.y[cut:]))


@task
def train(data: Split) -> Model:
    """Least squares for one feature."""
    xs, ys = data.train.x, data.train.y
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var
    return Model(slope=slope, intercept=my - slope * mx)


@task
def evaluate(model: Model, data: Split) -> float:
    """R² on the held-out rows."""
    xs, ys = data.test.x, data.test.y
    my = sum(ys) / len(ys)
    residual = sum((y - (model.slope * x + model.intercept)) ** 2 for x, y in zip(xs, ys))
    total = sum((y - my) ** 2 for y in ys)
    return 1 - residual / total


@task
def save(model: Model, score: float) -> FlyteFile:
    """The model file: what lineage.yaml calls the artifact."""
    path = "model.json"
    with open(path, "w") as f:
        json.dump({"slope": model.slope, "intercept": model.intercept, "r2": score}, f)
    return FlyteFile(path)
