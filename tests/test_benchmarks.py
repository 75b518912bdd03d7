"""pytest-benchmark suite: ``pytest tests/test_benchmarks.py --benchmark-only --benchmark-enable``.

Compare commits with ``--benchmark-save=NAME`` then ``--benchmark-compare``; convert the saved JSON
into the results table with ``python -m harness import-benchmark FILE``. In ``make test`` these run
once with benchmarking disabled, as a correctness check of the timed code path.
"""

import pytest

import backends
from harness.agreement import TOLERANCE, max_relative_error, reference_result
from harness.problems import scaled
from tests.helpers import fast_tier, usable

# (batch, hidden, iterations per timed call): small, medium, and a point where BLAS matters.
POINTS = [(4, 4, 200), (64, 64, 20), (1024, 256, 3)]


# torch.compile's and jax-unrolled's first calls take seconds per shape: the slow tier.
NAMES = fast_tier(backends.names())


@pytest.mark.parametrize("batch,hidden,iterations", POINTS, ids=[f"N{b}-H{h}" for b, h, _ in POINTS])
@pytest.mark.parametrize("name", NAMES)
def test_training_loop(benchmark, name, batch, hidden, iterations):
    module = usable(name)
    if module.SIMULATED and batch * hidden > 64:
        pytest.skip("CUDA simulator: only the smallest point (timings there are meaningless anyway)")
    if name == "python" and batch * hidden > 4096:
        pytest.skip("pure Python: seconds per iteration at this size; covered by the sweep's budget")
    problem = scaled(batch, hidden, "float64", seed=7)
    module.run(module.prepare(problem), 1, 0)  # compile / first call outside the timing
    states = []

    def setup():  # fresh initial weights for every round, not timed
        states.append(module.prepare(problem))
        return (states[-1], iterations, 0), {}

    benchmark.extra_info.update(backend=name, batch=batch, hidden=hidden, iterations=iterations, dtype="float64")
    benchmark.pedantic(module.run, setup=setup, rounds=5, warmup_rounds=1)
    error = max_relative_error(module.fetch(states[-1]), reference_result(problem, iterations, 0))
    benchmark.extra_info["max_rel_error"] = error  # lets the importer mark the rows validated or not
    assert error <= TOLERANCE["float64"]
