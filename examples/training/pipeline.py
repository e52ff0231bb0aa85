"""A training pipeline in the spirit of our users' reference project, on a dataset that ships with
scikit-learn (nothing is downloaded): load, validate, split, train one candidate per
hyper-parameter set in parallel (a map task), pick the best on cross-validation, evaluate it on
held-out data, and register the model file only if it beats the accuracy threshold (a
conditional; otherwise the run fails, which is what the Slack notification reports).

Locally:      pyflyte run pipeline.py training
On Aloft:     pyflyte run --remote --wait pipeline.py training --threshold 0.95
Nightly:      pyflyte register pipeline.py --activate-launchplans   (launch plan `training_nightly`)
"""

import functools
import math
from dataclasses import dataclass
from typing import List

from flytekit import CronSchedule, LaunchPlan, Slack, conditional, map_task, task, workflow
from flytekit.models.core.execution import WorkflowExecutionPhase
from flytekit.types.file import FlyteFile

MODEL_NAME = "breast-cancer-classifier"


@dataclass
class Dataset:
    features: List[List[float]]
    labels: List[int]
    feature_names: List[str]


@dataclass
class Split:
    train: Dataset
    test: Dataset


@dataclass
class HyperParams:
    c: float
    max_iter: int


@dataclass
class Candidate:
    params: HyperParams
    cv_accuracy: float
    model: FlyteFile


@task(cache=True, cache_version="1")
def load_dataset() -> Dataset:
    """The Wisconsin breast cancer dataset, bundled with scikit-learn."""
    from sklearn.datasets import load_breast_cancer

    raw = load_breast_cancer()
    return Dataset(
        features=raw.data.tolist(), labels=[int(v) for v in raw.target], feature_names=list(raw.feature_names)
    )


@task
def validate(data: Dataset, min_rows: int) -> Dataset:
    """Refuses data a model should not be trained on, with a message naming what is wrong."""
    if len(data.features) != len(data.labels):
        raise ValueError(f"{len(data.features)} feature rows but {len(data.labels)} labels")
    if len(data.features) < min_rows:
        raise ValueError(f"only {len(data.features)} rows; at least {min_rows} are needed")
    width = len(data.feature_names)
    for i, row in enumerate(data.features):
        if len(row) != width or any(not math.isfinite(v) for v in row):
            raise ValueError(f"row {i} has {len(row)} values (expected {width}) or a NaN/infinite one")
    classes = set(data.labels)
    if classes != {0, 1}:
        raise ValueError(f"expected labels 0 and 1, found {sorted(classes)}")
    print(f"validated {len(data.labels)} rows x {width} features; {sum(data.labels)} positive")
    return data


@task
def split(data: Dataset, test_fraction: float, seed: int) -> Split:
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(
        data.features, data.labels, test_size=test_fraction, random_state=seed, stratify=data.labels
    )
    names = data.feature_names
    return Split(train=Dataset(x_train, list(y_train), names), test=Dataset(x_test, list(y_test), names))


@task
def grid(cs: List[float], max_iter: int) -> List[HyperParams]:
    return [HyperParams(c=c, max_iter=max_iter) for c in cs]


@task(retries=1)
def train_candidate(data: Split, params: HyperParams) -> Candidate:
    """One candidate: standardized logistic regression, scored by 5-fold cross-validation on the
    training rows only (the test rows stay unseen until `evaluate`)."""
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=params.c, max_iter=params.max_iter))
    scores = cross_val_score(model, data.train.features, data.train.labels, cv=5)
    model.fit(data.train.features, data.train.labels)
    path = f"model-c{params.c}.joblib"
    joblib.dump(model, path)
    print(f"C={params.c}: cross-validated accuracy {scores.mean():.4f} (+/- {scores.std():.4f})")
    return Candidate(params=params, cv_accuracy=float(scores.mean()), model=FlyteFile(path))


@task
def pick_best(candidates: List[Candidate]) -> Candidate:
    best = max(candidates, key=lambda c: c.cv_accuracy)
    print("\n".join(f"C={c.params.c}: {c.cv_accuracy:.4f}" for c in candidates))
    print(f"best: C={best.params.c}")
    return best


@task
def evaluate(best: Candidate, data: Split) -> float:
    """Accuracy on the held-out test rows."""
    import joblib

    model = joblib.load(best.model.download())
    accuracy = float(model.score(data.test.features, data.test.labels))
    print(f"test accuracy of C={best.params.c}: {accuracy:.4f}")
    return accuracy


@task
def register_model(best: Candidate, accuracy: float) -> FlyteFile:
    """Registers the model file: the workflow's output, which lineage.yaml names as the model's
    artifact, so each registered file is a version of the model in the lineage graph."""
    import shutil

    path = f"{MODEL_NAME}.joblib"
    shutil.copyfile(best.model.download(), path)
    print(f"registered {MODEL_NAME} (C={best.params.c}, test accuracy {accuracy:.4f})")
    return FlyteFile(path)


@workflow
def training(
    test_fraction: float = 0.25,
    seed: int = 42,
    threshold: float = 0.95,
    cs: List[float] = [0.01, 0.1, 1.0, 10.0],  # noqa: B006 (flytekit reads the default, never mutates it)
    max_iter: int = 5000,
) -> FlyteFile:
    data = validate(data=load_dataset(), min_rows=100)
    parts = split(data=data, test_fraction=test_fraction, seed=seed)
    candidates = map_task(functools.partial(train_candidate, data=parts))(params=grid(cs=cs, max_iter=max_iter))
    best = pick_best(candidates=candidates)
    accuracy = evaluate(best=best, data=parts)
    return (
        conditional("beats_threshold")
        .if_(accuracy >= threshold)
        .then(register_model(best=best, accuracy=accuracy))
        .else_()
        .fail("the best model does not beat the accuracy threshold, so it was not registered")
    )


# Nightly at 03:00 UTC; the team hears about every outcome in Slack (`#ml-alerts`; map the
# channel to a webhook with ALOFT_SLACK__WEBHOOKS__ML_ALERTS, see services/notifier/README.md).
training_nightly = LaunchPlan.get_or_create(
    workflow=training,
    name="training_nightly",
    schedule=CronSchedule(schedule="0 3 * * *"),
    notifications=[
        Slack(
            phases=[
                WorkflowExecutionPhase.SUCCEEDED,
                WorkflowExecutionPhase.FAILED,
                WorkflowExecutionPhase.TIMED_OUT,
            ],
            recipients_email=["#ml-alerts"],
        )
    ],
)
