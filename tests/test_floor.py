"""The CPU floor (harness.floor): the critical-path count, the latency-aware floor, the ceilings."""

from __future__ import annotations

import pytest

from harness.floor import (
    critical_path,
    floor_parts,
    floor_seconds,
    latency_seconds,
    measure_ceilings,
    measure_handoff,
)

# Round figures of the kind measure_ceilings returns (one thread = all threads here).
CEIL = {
    **{f"{k}_per_s_{dt}{sfx}": v for k, v in (("sigmoid", 1e9), ("exp", 1.2e9), ("fma", 2e10))
       for dt in ("float64", "float32") for sfx in ("", "_1t")},
    "bytes_per_s": 2e10,
    "bytes_per_s_1t": 1.5e10,
    "sigmoid_latency_s_float64": 20e-9,
    "fma_latency_s_float64": 1e-9,
    "sigmoid_latency_s_float32": 15e-9,
    "fma_latency_s_float32": 1e-9,
}


def test_critical_path_of_the_seed_size():
    # D=3: 1 + 2 levels; H=4: 1 + 2; output delta 3; hidden delta 2 + 0 (O=1); N=4: 1 + 2; update 1
    assert critical_path(4, 4) == {"sigmoids": 2, "steps": 15}
    assert critical_path(1, 1, inputs=1, outputs=1)["steps"] == 1 + 1 + 3 + 2 + 1 + 1
    # each doubling of N or H adds one level of its sum, nothing else
    assert critical_path(8, 4)["steps"] == 16 and critical_path(4, 8)["steps"] == 16
    assert critical_path(5, 4)["steps"] == 16  # a pairwise sum of 5 terms is 3 levels deep


def test_latency_bounds_small_points_and_throughput_large_ones():
    small = floor_parts(4, 4, "float64", CEIL, one_thread=True)
    assert small["latency_s"] == pytest.approx(2 * 20e-9 + 15 * 1e-9)
    assert small["floor_s"] == small["latency_s"] > max(small["compute_s"], small["memory_s"])
    large = floor_parts(65536, 1024, "float64", CEIL)
    assert large["floor_s"] == max(large["compute_s"], large["memory_s"]) > large["latency_s"]
    assert floor_seconds(4, 4, "float32", CEIL) == pytest.approx(2 * 15e-9 + 15e-9)


def test_ceilings_without_latencies_give_the_throughput_floor():
    old = {k: v for k, v in CEIL.items() if "latency" not in k}
    parts = floor_parts(4, 4, "float64", old)
    assert parts["latency_s"] is None and latency_seconds(4, 4, "float64", old) is None
    assert parts["floor_s"] == max(parts["compute_s"], parts["memory_s"])


# Two threads, each at the one-thread rates above, and a hand-off of 100 ns between them.
TWO = {**CEIL, **{k.removesuffix("_1t"): 2 * v for k, v in CEIL.items() if k.endswith("_1t")}, "threads": 2,
       "handoff_latency_s": 100e-9}  # fmt: skip


def test_a_hand_off_between_cores_makes_small_points_one_threads():
    for n, h in ((4, 4), (4, 16), (16, 16), (64, 64), (4096, 1024)):
        alone = floor_parts(n, h, "float64", TWO, one_thread=True)
        together = floor_parts(n, h, "float64", TWO)
        assert alone["handoff_s"] is None and together["handoff_s"] == 100e-9
        chain = together["latency_s"] + 100e-9
        assert together["floor_s"] == min(alone["floor_s"], max(together["compute_s"], together["memory_s"], chain))
    # 4 x 16: two threads would halve one thread's 94 ns of work, but the chain with the hand-off
    # (57 + 100 ns) is longer than that work, so the floor is one thread's; at 4096 x 1024 the
    # hand-off is nothing and both threads count
    small, large = floor_parts(4, 16, "float64", TWO), floor_parts(4096, 1024, "float64", TWO)
    assert small["floor_s"] == floor_seconds(4, 16, "float64", TWO, one_thread=True) > small["compute_s"]
    assert large["floor_s"] == large["compute_s"] == pytest.approx(floor_seconds(4096, 1024, "float64", TWO, one_thread=True) / 2)
    # a folder measured before the hand-off was (no key), or with one thread: the all-thread floor
    for ceilings in ({k: v for k, v in TWO.items() if k != "handoff_latency_s"}, {**TWO, "threads": 1}):
        parts = floor_parts(4, 16, "float64", ceilings)
        assert parts["handoff_s"] is None
        assert parts["floor_s"] == max(parts["compute_s"], parts["memory_s"], parts["latency_s"]) < small["floor_s"]


def test_the_ping_pong_gives_up_when_the_other_player_never_plays():
    from harness.floor import _build

    flags = _build()["np"].zeros(8, "int64")
    # alone, player 0 plays its first turn, then waits for a turn that never comes
    assert _build()["pingpong"](flags, 0, 2, 10_000) is False
    assert list(flags[:2]) == [1, 1]  # its one move, and the give-up flag


@pytest.mark.slow
def test_measured_hand_off_is_plausible():
    import os

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: there is no other core to hand off to")
    # short runs (0.2-0.5 ms each), so that one of them fits between two preemptions on a busy machine
    handoff = measure_handoff(0.5, rounds=2000)
    # a cache line crossing cores takes tens to hundreds of nanoseconds, not microseconds
    assert handoff is not None and 5e-9 < handoff < 5e-6


@pytest.mark.slow
def test_measured_latencies_are_plausible():
    ceil = measure_ceilings(seconds_budget=0.3)
    for dt in ("float64", "float32"):
        fma, sig = ceil[f"fma_latency_s_{dt}"], ceil[f"sigmoid_latency_s_{dt}"]
        # a dependent multiply-add takes cycles, not nanoseconds by the dozen; a sigmoid (an exp
        # polynomial and a division) is a chain of several of them
        assert 1e-11 < fma < 1e-8 and 3 * fma < sig < 1e-6
        # a chain is slower than the throughput of independent operations
        assert 1 / fma < ceil[f"fma_per_s_{dt}_1t"]


def test_two_measurements_merge_when_one_lacks_a_ceiling():
    """The hand-off is left out of a measurement where no ping-pong finished: merging the one before
    a sweep with the one after keeps whichever has it (a KeyError once failed the sweep here)."""
    from harness.floor import better_ceilings

    before = {"threads": 2, "method": "m", "sigmoid_per_s_float64": 1e9, "sigmoid_latency_s_float64": 2.5e-8}
    after = {"threads": 2, "method": "m", "sigmoid_per_s_float64": 2e9, "sigmoid_latency_s_float64": 2.3e-8,
             "handoff_latency_s": 6e-8}  # fmt: skip
    merged = {"threads": 2, "method": "m", "sigmoid_per_s_float64": 2e9, "sigmoid_latency_s_float64": 2.3e-8,
              "handoff_latency_s": 6e-8}  # fmt: skip
    assert better_ceilings(before, after) == merged
    assert better_ceilings(after, before) == merged
    assert better_ceilings(before, {}) == before


def test_the_better_of_two_measurements_is_the_higher_rate_and_the_shorter_latency():
    from harness.floor import best_ceiling

    assert best_ceiling("sigmoid_per_s_float64", 1e9, 2e9) == 2e9
    assert best_ceiling("bytes_per_s_1t", 3e10, 2e10) == 3e10
    assert best_ceiling("sigmoid_latency_s_float64", 2.5e-8, 2.3e-8) == 2.3e-8
    assert best_ceiling("fma_latency_s_float32", 1.0e-9, 1.3e-9) == 1.0e-9
