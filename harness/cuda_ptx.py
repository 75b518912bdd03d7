"""Compile every CUDA kernel for real NVIDIA architectures, on a machine without a GPU.

The CUDA simulator that ``make test`` uses runs the kernels as Python threads: it checks what they
compute, not that the real CUDA target accepts them. This module compiles them with the real
toolchain -- NVVM (numba-cuda) or MLIR (numba-cuda-mlir) to PTX, then nvJitLink's ptxas to
machine code for each architecture, linking the device runtime where a kernel syncs its grid --
and reports the registers, spills and stack frame of every kernel, and whether it syncs its grid.
It needs the CUDA toolchain wheels of ``numba-cuda[cu13]`` (a project dependency), neither a
driver nor a GPU.

    python -m harness.cuda_ptx                   # table for the default architectures
    python -m harness.cuda_ptx --arch 9.0 --json
    python -m harness.cuda_ptx --compiler numba-cuda --compiler numba-cuda-mlir

Kernels are compiled from the same table the backends compile them from at run time
(``backends/_cuda_kernels.py``: function, signature, launch bound).
"""

# The sizes are named as in SPEC.md: D inputs, O outputs.
# ruff: noqa: E741

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys

from backends._cuda_compiler import COMPILERS, import_cuda

#: Architectures checked by default: Turing (T4), Ampere (A100, RTX 30), Ada (L4, RTX 40),
#: Hopper (H100, H200). CUDA 13's NVVM starts at sm_75.
DEFAULT_ARCHS = ((7, 5), (8, 0), (8, 9), (9, 0))
#: (D, O) specialisations compiled: the seed/sweep shape and a wider one.
DEFAULT_WIDTHS = ((3, 1), (5, 3))
#: The device runtime's grid sync, called in the PTX of a kernel that syncs its whole grid (and so
#: must be launched cooperatively); each record says whether its kernel's PTX calls it.
GRID_SYNC = "cudaCGSynchronize"


@contextlib.contextmanager
def _target(compiler: str, cc: tuple[int, int]):
    """Compile device functions for ``cc`` instead of asking the (absent) driver for the device's.

    Both compilers compile a ``@cuda.jit(device=True)`` function for the current device's compute
    capability, which needs a driver; here that lookup answers ``cc``. Only this module does this,
    and only while compiling.
    """
    if compiler == "numba-cuda-mlir":
        from numba_cuda_mlir import tools

        saved = tools._cached_cc
        tools._cached_cc = cc
        try:
            yield
        finally:
            tools._cached_cc = saved
        return
    from numba.cuda import dispatcher

    class Device:
        compute_capability = cc

    saved = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: Device
    try:
        yield
    finally:
        dispatcher.get_current_device = saved


def _ptxas(ptx: str, cc: tuple[int, int]) -> str:
    """nvJitLink's info log (ptxas's resource report) for ``ptx`` compiled to sm_<cc>."""
    from cuda.bindings import nvjitlink

    handle = nvjitlink.create(2, [f"-arch=sm_{cc[0]}{cc[1]}", "-verbose"])
    try:
        data = ptx.encode()
        nvjitlink.add_data(handle, nvjitlink.InputType.PTX, data, len(data), "kernel")
        if GRID_SYNC in ptx:  # a grid sync: the device runtime implements it
            from cuda.pathfinder import find_static_lib

            nvjitlink.add_file(handle, nvjitlink.InputType.LIBRARY, find_static_lib("cudadevrt"))
        try:
            nvjitlink.complete(handle)
        except nvjitlink.nvJitLinkError as exc:
            size = nvjitlink.get_error_log_size(handle)
            log = bytearray(size)
            nvjitlink.get_error_log(handle, log)
            raise RuntimeError(f"ptxas failed for sm_{cc[0]}{cc[1]}: {log.decode(errors='replace').strip()}") from exc
        size = nvjitlink.get_info_log_size(handle)
        log = bytearray(size)
        nvjitlink.get_info_log(handle, log)
        return log.decode(errors="replace")
    finally:
        nvjitlink.destroy(handle)


def _resources(log: str) -> dict:
    """Registers, spills and stack frame from ptxas's lines of the log (not the linker's summary)."""

    def number(pattern: str) -> int | None:
        found = re.findall(pattern, log)
        return int(found[-1]) if found else None

    return {
        "registers": number(r"ptxas info\s*: Used (\d+) registers"),
        "spill_stores": number(r"(\d+) bytes spill stores"),
        "spill_loads": number(r"(\d+) bytes spill loads"),
        "stack": number(r"(\d+) bytes stack frame"),
    }


def compile_kernels(cc: tuple[int, int], dtype: str, D: int = 3, O: int = 1, names=None,
                    compiler: str = "numba-cuda") -> list[dict]:  # fmt: skip
    """Compile the kernels for sm_<cc>; one record per kernel with its ptxas resource report."""
    from backends._cuda_compiler import import_cuda, load_kernels, version

    cuda = import_cuda(compiler)
    if compiler == "numba-cuda":
        from numba import config

        if config.ENABLE_CUDASIM:
            raise RuntimeError("the CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1): compile in a process without it")
    source = load_kernels(compiler)

    def fresh() -> None:  # device functions are cached per argument types, not per architecture
        for factory in (source.sigmoid, source.kernels):
            factory.cache_clear()

    records = []
    with _target(compiler, cc):
        fresh()
        try:
            kernels = source.kernels(dtype, D, O)
            for name in names or source.ALL_KERNELS:
                spec = kernels[name]
                bounds = spec.launch_bounds
                ptx, _ = cuda.compile_ptx(spec.pyfunc, spec.signature, cc=cc, launch_bounds=bounds)
                record = {"compiler": compiler, "version": version(compiler), "kernel": name, "dtype": dtype,
                          "arch": f"sm_{cc[0]}{cc[1]}", "D": D, "O": O}  # fmt: skip
                record.update(launch_bound=spec.bound, min_blocks=spec.min_blocks)
                record.update(_resources(_ptxas(ptx, cc)), grid_sync=GRID_SYNC in ptx)
                records.append(record)
        finally:
            fresh()  # leave no device function compiled for a foreign architecture behind
    return records


def _arch(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(?:sm_)?(\d+)\.?(\d)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not an architecture: {text!r} (e.g. 9.0 or sm_90)")
    return int(match.group(1)), int(match.group(2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.cuda_ptx", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=_arch, action="append", help="e.g. 9.0 or sm_90 (repeatable)")
    parser.add_argument("--dtype", choices=("float64", "float32"), action="append")
    parser.add_argument("--compiler", choices=COMPILERS, action="append", help="default: numba-cuda (repeatable)")
    parser.add_argument("--json", action="store_true", help="one JSON record per line")
    args = parser.parse_args(argv)
    if "numba" in sys.modules:
        parser.exit(2, "error: numba was imported before harness.cuda_ptx could turn the simulator off\n")
    os.environ["NUMBA_ENABLE_CUDASIM"] = "0"
    compilers = args.compiler or ["numba-cuda"]
    try:
        from cuda.bindings import nvjitlink  # noqa: F401

        if "numba-cuda" in compilers:
            from numba.cuda.cudadrv import nvvm

            nvvm.NVVM()  # loads libnvvm: fails here, with its own message, when the wheels are missing
    except Exception as exc:
        parser.exit(2, f"error: the CUDA compiler libraries are not installed ({type(exc).__name__}: {exc}); "
                       "pip install 'numba-cuda[cu13]'\n")  # fmt: skip
    rows = []
    for compiler in compilers:
        try:
            import_cuda(compiler)
        except ImportError as exc:
            parser.exit(2, f"error: {compiler} is not installed ({exc}); pip install '{compiler}[cu13]'\n")
        for cc in args.arch or DEFAULT_ARCHS:
            for dtype in args.dtype or ("float64", "float32"):
                for D, O in DEFAULT_WIDTHS:
                    try:
                        rows.extend(compile_kernels(cc, dtype, D, O, compiler=compiler))
                    except Exception as exc:  # an architecture this toolchain lacks, a kernel it rejects
                        message = " ".join(str(exc).split())
                        parser.exit(1, f"error: {compiler} sm_{cc[0]}{cc[1]} {dtype} D={D} O={O}: {type(exc).__name__}: {message}\n")
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    head = ("compiler", "arch", "dtype", "D", "O", "kernel", "launch_bound", "min_blocks", "registers", "spill_stores",
            "spill_loads", "stack", "grid_sync")  # fmt: skip
    width = {h: max(len(h), *(len(str(r[h])) for r in rows)) for h in head}
    print("  ".join(f"{h:>{width[h]}}" for h in head))
    for row in rows:
        print("  ".join(f"{row[h]!s:>{width[h]}}" for h in head))
    spilled = [r for r in rows if r["spill_stores"]]
    print(f"{len(rows)} kernels compiled, {len(spilled)} of them spill registers to local memory")
    return 0


if __name__ == "__main__":
    sys.exit(main())
