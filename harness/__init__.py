"""Harness: builds problems, checks agreement, times backends, stores results, draws plots.

The modules, stage by stage. The sweep loads backends by name, each in its own worker process;
reporting reads the backends' declarations and imports no backend library (tests/test_plots.py
checks it). No module here names a backend but the ``numpy`` reference (tests/test_registry.py).

1. Problems and agreement
   ``problems`` (the seed problems and the scaled sweep problem), ``agreement`` (the float64 NumPy
   reference and the tolerances), ``health`` (no inf/NaN, no subnormal activation or delta).
2. Timing
   ``timing`` (how one point is measured: the whole policy and its numbers), ``protocol`` (the
   typed messages between the sweep and a worker), ``worker`` (one backend and dtype in its own
   process), ``plan`` (presets, the plan, admission:
   time, memory and point budgets), ``bench`` (the sweep over the grid, resume), ``floor`` and
   ``gpu_floor`` (measured ceilings and the floor they give), ``cuda_ptx`` (every CUDA kernel
   compiled for real architectures, no GPU needed).
3. Results
   ``schema`` (the ``Row`` dataclass: the columns, their types, every layout ever written and the
   one upgrade to the newest), ``results`` (the tidy append-only ``runs.csv``, its statuses,
   ``machine.json`` with its ``schema_version``, the migration of older folders),
   ``fingerprint`` (the machine: hardware, libraries, variables, its folder name), ``importing``
   (another machine's results into ``results/``).
4. Reporting
   ``report`` (a package: row selection, figures, summaries, crossovers, cross-machine figures,
   each machine's README and the README's tables).
5. Command line
   ``cli`` (parsing only), ``commands`` (checks every input, then delegates), ``orchestrate``
   (``make bench`` end to end: ceilings, fingerprint, sweep, ceilings again, reports).
"""
