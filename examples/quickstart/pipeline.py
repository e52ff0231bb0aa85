"""A small pipeline that runs on Aloft today: typed tasks, fan-out and fan-in, a retry.

Run it locally:            python -m flytekit ... or `pyflyte run pipeline.py listing_report`
Run it on `aloft up`:      pyflyte run --remote --wait pipeline.py listing_report --category shoes
"""

from dataclasses import dataclass
from typing import Dict, List

from flytekit import task, workflow


@dataclass
class Summary:
    category: str
    listings: int
    mean_price: float


@task
def load_prices(category: str, days: int) -> List[float]:
    """Stands in for a warehouse query: deterministic prices per category and day."""
    base = 10.0 + len(category)
    return [round(base + (d * 7 % 13) * 0.5, 2) for d in range(days)]


@task
def clean(prices: List[float], max_price: float) -> List[float]:
    return [p for p in prices if 0 < p <= max_price]


@task
def summarize(category: str, prices: List[float]) -> Summary:
    mean = sum(prices) / len(prices) if prices else 0.0
    return Summary(category=category, listings=len(prices), mean_price=round(mean, 2))


@task(retries=2)
def report(summaries: List[Summary]) -> Dict[str, float]:
    print("\n".join(f"{s.category}: {s.listings} listings, mean {s.mean_price}" for s in summaries))
    return {s.category: s.mean_price for s in summaries}


@workflow
def listing_report(category: str = "shoes", days: int = 30, max_price: float = 20.0) -> Dict[str, float]:
    summaries = []
    for window in (7, 14):  # a static fan-out, unrolled when the workflow is compiled
        prices = clean(prices=load_prices(category=category, days=window), max_price=max_price)
        summaries.append(summarize(category=category, prices=prices))
    everything = clean(prices=load_prices(category=category, days=days), max_price=max_price)
    summaries.append(summarize(category=category, prices=everything))
    return report(summaries=summaries)
