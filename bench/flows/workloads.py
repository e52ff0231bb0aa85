"""The benchmark workloads (bench/README.md), each in two flavours.

raw_*: trivial raw-container tasks (`true`, no inputs, no outputs), ordered by explicit
dependencies, to measure the orchestration alone. py_*: flytekit Python tasks passing an int.

W1 is a chain of 50 tasks, W2 a fan-out of 100 tasks and a join, W3 a chain of 3 tasks (the
benchmark submits 100 executions of it at once).
"""

from typing import List

from flytekit import ContainerTask, task, workflow
from flytekit.core.node_creation import create_node

CHAIN = 50
FAN = 100

# The image is not used: Aloft's executor runs the command as a host process.
noop = ContainerTask(name="bench.raw_noop", image="busybox", command=["true"])


def _chain(n: int):
    nodes = [create_node(noop) for _ in range(n)]
    for before, after in zip(nodes, nodes[1:]):
        before >> after


@workflow
def raw_w1():
    _chain(CHAIN)


@workflow
def raw_w2():
    fan = [create_node(noop) for _ in range(FAN)]
    join = create_node(noop)
    for node in fan:
        node >> join


@workflow
def raw_w3():
    _chain(3)


@task
def inc(x: int) -> int:
    return x + 1


@task
def total(xs: List[int]) -> int:
    return sum(xs)


@workflow
def py_w1(x: int = 0) -> int:
    for _ in range(CHAIN):
        x = inc(x=x)
    return x


@workflow
def py_w2() -> int:
    return total(xs=[inc(x=i) for i in range(FAN)])


@workflow
def py_w3(x: int = 0) -> int:
    return inc(x=inc(x=inc(x=x)))
