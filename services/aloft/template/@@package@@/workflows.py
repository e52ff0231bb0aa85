"""The training workflow and its launch plan."""

from flytekit import CronSchedule, LaunchPlan, Slack, workflow
from flytekit.models.core.execution import WorkflowExecutionPhase
from flytekit.types.file import FlyteFile

from @@package@@.tasks import evaluate, load, save, split, train, validate


@workflow
def training(rows: int = 500, seed: int = 7, test_fraction: float = 0.2) -> FlyteFile:
    data = validate(data=load(rows=rows, seed=seed), min_rows=50)
    parts = split(data=data, test_fraction=test_fraction)
    model = train(data=parts)
    return save(model=model, score=evaluate(model=model, data=parts))


# Every night at 02:00 UTC; the owning team hears about failures in Slack.
nightly = LaunchPlan.get_or_create(
    workflow=training,
    name="@@package@@.workflows.nightly",
    schedule=CronSchedule(schedule="0 2 * * *"),
    notifications=[
        Slack(
            phases=[WorkflowExecutionPhase.FAILED, WorkflowExecutionPhase.TIMED_OUT],
            recipients_email=["#@@slack_channel@@"],
        )
    ],
)
