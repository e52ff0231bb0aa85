"""Small helpers shared by the peer benchmark scripts (stdlib only)."""

import statistics
import sys

W1_LEN = 50  # W1: chain of 50 tasks
W2_FAN = 100  # W2: 100 independent tasks + 1 join
W3_RUNS = 100  # W3: 100 runs submitted at once ...
W3_LEN = 3  # ... of a 3-task chain


def log(peer, msg):
    print(f"[{peer}_bench] {msg}", file=sys.stderr, flush=True)


def fail(peer, msg, code=1):
    log(peer, f"ERROR: {msg}")
    sys.exit(code)


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    s = sorted(values)
    k = -(-p * len(s) // 100)  # ceil(p/100 * n)
    k = min(max(int(k), 1), len(s))
    return s[k - 1]


def w3_summary(t0, finish_times, wall):
    """One W3 repeat: finish_times has one entry per run, None if it failed."""
    lat = [f - t0 for f in finish_times if f is not None]
    failed = sum(1 for f in finish_times if f is None)
    if not lat:
        return {"wall_s": wall, "throughput_per_s": 0.0, "p50_s": None, "p99_s": None, "failed": failed}
    return {
        "wall_s": wall,
        "throughput_per_s": len(lat) / wall,
        "p50_s": percentile(lat, 50),
        "p99_s": percentile(lat, 99),
        "failed": failed,
    }


def aggregate(w1, w2, w3):
    """Medians over repeats; W3 failed is the total over all repeats."""
    ok3 = [x for x in w3 if x["p50_s"] is not None]
    return {
        "W1": {"wall_s": statistics.median(w1), "runs": w1},
        "W2": {"wall_s": statistics.median(w2), "runs": w2},
        "W3": {
            "wall_s": statistics.median(x["wall_s"] for x in w3),
            "throughput_per_s": statistics.median(x["throughput_per_s"] for x in w3),
            "p50_s": statistics.median(x["p50_s"] for x in ok3) if ok3 else None,
            "p99_s": statistics.median(x["p99_s"] for x in ok3) if ok3 else None,
            "failed": sum(x["failed"] for x in w3),
            "runs": w3,
        },
    }
