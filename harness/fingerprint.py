"""Machine fingerprint for machine.json, and the readable machine name results are filed under."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import backends

# What the harness itself and the backends' libraries run on; the backends' own packages are added
# from their declarations (``backends.packages``).
SUPPORT_PACKAGES = ("numpy", "scipy", "llvmlite", "pandas", "matplotlib", "jaxlib")
ENV_PREFIXES = ("OPENBLAS_", "NUMBA_", "OMP_", "MKL_", "XLA_", "JAX_", "CUDA_VISIBLE_DEVICES", "TORCH_")
REPO = Path(__file__).resolve().parent.parent


def commit() -> str:
    """Short commit of the repository, with '+dirty' when tracked files differ from it.

    ``results/`` is left out of the check: it is data, and a sweep writes machine.json and
    runs.csv there before it reads the commit, which would mark every committed result dirty.
    """
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def gpus() -> list[dict]:
    """NVIDIA GPUs seen by nvidia-smi (name, driver, memory); empty when none."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout  # fmt: skip
        cuda = re.search(r"CUDA Version:\s*([\d.]+)", subprocess.run([smi], capture_output=True, text=True, timeout=20).stdout)
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out.strip().splitlines():
        name, driver, memory = (part.strip() for part in line.split(","))
        rows.append({"name": name, "driver": driver, "memory": memory, "cuda": cuda.group(1) if cuda else None})
    return rows


def cpu_model() -> str:
    try:
        import cpuinfo

        return cpuinfo.get_cpu_info().get("brand_raw") or platform.processor()
    except Exception:  # cpuinfo shells out; a failure leaves a less precise name, not a crash
        return platform.processor() or platform.machine()


def machine_name(cpu: str | None = None, gpu_list: list[dict] | None = None, cores: int | None = None) -> str:
    """A readable name from the hardware (not the hostname): e.g. 'xeon-2.80ghz-2c' or '...-h100'.

    By default this machine's; with ``cpu``, ``gpu_list`` and ``cores`` (a fingerprint's ``cpu``,
    ``gpus`` and ``cores_logical``) another machine's, as for imported results."""
    cpu = cpu if cpu is not None else cpu_model()
    gpu_list = gpus() if gpu_list is None else gpu_list
    cores = cores if cores is not None else os.cpu_count()
    words = re.sub(r"\((r|tm)\)|cpu|processor|intel|amd|@|with.*graphics", " ", cpu.lower())
    slug = re.sub(r"[^a-z0-9.]+", "-", words).strip("-") or "cpu"
    name = f"{slug}-{cores}c"
    if gpu_list:
        g = re.sub(r"nvidia|geforce|tesla|\bsxm\w*|\bpcie\b|\d+gb\b|hbm\w*", " ", gpu_list[0]["name"].lower())
        name += "-" + (re.sub(r"[^a-z0-9]+", "-", g).strip("-") or "gpu")
    return name


def fingerprint(extra: dict | None = None) -> dict:
    """Everything needed to compare results across machines (see README)."""
    import numpy as np  # noqa: F401  (loads BLAS so threadpoolctl can see it)
    import psutil
    from threadpoolctl import threadpool_info

    versions = {}
    for pkg in dict.fromkeys((*SUPPORT_PACKAGES, *backends.packages())):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    info = {
        "cpu": cpu_model(),
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_physical": psutil.cpu_count(logical=False),
        "memory_bytes": psutil.virtual_memory().total,
        "gpus": gpus(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "blas": [
            {k: v for k, v in pool.items() if k in ("internal_api", "version", "num_threads", "architecture", "filepath")}
            for pool in threadpool_info()
        ],
        "environment": {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)},
        "commit": commit(),
    }
    try:
        import numba

        info["numba"] = {"using_svml": bool(numba.config.USING_SVML), "threading_layer_default": numba.config.THREADING_LAYER,
                         "num_threads": numba.config.NUMBA_NUM_THREADS}  # fmt: skip
    except ImportError:
        pass
    info.update(extra or {})
    return info
