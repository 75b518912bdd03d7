"""`c`: numba-cpu's algorithm in C (backends/_c/), compiled by the system C compiler through cffi,
so the ratio numba-cpu / c isolates the compiler (LLVM through Numba against GCC).

The C file is the twin of backends/_numba_kernels.py: the same regimes, row tiles and buffers (this
file calls ``_numba_kernels.prepare_net``, so the tiles are numba-cpu's own), the same exp
polynomial and the same loop orders (backends/_c/train.c lists the two differences a C compiler
forces: D and O are constants of each build, H is not; fastmath flags are per file).

Building. One extension module per (D, O) -- the constants Numba specialises on -- compiled with
cffi in API mode on the first ``prepare`` that needs it and cached on disk by ``backends._aot``
(keyed on the sources, the flags, the compiler's version and the Python ABI), so the first call in
a fresh process with an empty build cache is ``cold`` and includes the build, a cached module is
``disk``, and a module this process already loaded is ``memory``. ``CC`` chooses the compiler,
as for any distutils build. ``library()`` names the compiler, its version and the flags (and
cffi's version): the rows' ``library`` column.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backends import _aot
from backends.base import Backend, Problem, TrainResult, UnsupportedProblem, missing_library, n_logged

SOURCE_DIR = Path(__file__).resolve().parent / "_c"
SOURCES = ("train.h", "train.c", "train_body.h")
#: numba-cpu's fastmath (``_numba_exp.KERNEL_FM``: reassoc, contract, nsz, arcp; no nnan/ninf) as GCC
#: options (-fno-trapping-math: reassociation needs it; no errno, as Numba's math) and -O3
#: -march=native. The exp keeps its order despite -fassociative-math (backends/_c/train.c).
FLAGS = (
    "-O3",
    "-march=native",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fassociative-math",
    "-ffp-contract=fast",
    "-fno-signed-zeros",
    "-freciprocal-math",
    "-g0",  # (Python's CFLAGS ask for -g: debug info only slows the build)
)


def compiler() -> list[str]:
    """The C compiler command distutils (and so cffi) will run: $CC, else Python's configured CC."""
    return _aot.tool_command("CC", "cc")


@dataclass
class CState:
    """One prepared run: the module's arrays (kept alive for the pointers), and the losses so far."""

    net: Any
    work: Any
    module: Any
    layers: int
    dtype: str
    cols: bool  # column layout (prepare_net's choice)
    losses: list[np.ndarray] = field(default_factory=list)


class C(Backend):
    NAME = "c"
    SUMMARY = "numba-cpu's algorithm in C (system compiler -O3 -march=native, via cffi), one thread"
    PACKAGE = "cffi"
    COLOUR, MARKER = "#117733", "X"
    FAMILY = "c"
    LEVEL = "tuned"
    TWIN = "numba-cpu"
    LOOP_FILES = ("backends/c_backend.py", "backends/_c/train.c", "backends/_c/train_body.h")
    OPENMP = False  # c-openmp: compiled with -fopenmp, the tiles' chunks on threads

    def __init__(self) -> None:
        self._modules: dict[tuple[int, int], Any] = {}
        self._built = 0
        self._loaded = 0

    # ---- building -------------------------------------------------------------------------------

    @classmethod
    def flags(cls) -> tuple[str, ...]:
        """The compiler options of this backend's modules (after Python's own CFLAGS)."""
        return (*FLAGS, "-fopenmp" if cls.OPENMP else "-fopenmp-simd")

    def available(self) -> str | None:
        try:
            import cffi  # noqa: F401
        except ImportError as exc:
            return missing_library("cffi", exc)
        if sys.version_info >= (3, 12) and importlib.util.find_spec("setuptools") is None:
            return "package 'setuptools' not installed (cffi builds with it from Python 3.12 on)"
        command = compiler()
        if not command or shutil.which(command[0]) is None:
            return f"no C compiler ({command[0] if command else 'CC'!r} not found)"
        # prepare() lays the problem out with numba-cpu's own code: imported here, with the
        # process's start, so a first call's time is the build's and the run's, not Numba's import.
        import backends._numba_kernels  # noqa: F401
        return None

    @classmethod
    def library(cls) -> str:
        """What the rows' ``library`` column should say: the compiler, its version and the flags,
        and cffi's version, e.g. 'gcc 12.2.0 -O3 -march=native ... (cffi 2.1.1)'."""
        from importlib import metadata

        version = _aot.tool_name(compiler())
        try:
            via = f"cffi {metadata.version('cffi')}"
        except metadata.PackageNotFoundError:
            via = "cffi not installed"
        return f"{version} {' '.join(cls.flags())} ({via})"

    def module_name(self, D: int, O: int) -> str:  # noqa: E741
        return f"_nnbench_{self.NAME.replace('-', '_')}_d{D}_o{O}"

    def module(self, D: int, O: int):  # noqa: E741
        """The compiled module for (D, O): this process's, else the disk cache's, else built now."""
        if (D, O) in self._modules:
            return self._modules[(D, O)]
        command = compiler()
        name = self.module_name(D, O)
        defines = (f"-DNN_D={D}", f"-DNN_O={O}")
        key = [
            name,
            *(f"{s}\0{(SOURCE_DIR / s).read_text()}" for s in SOURCES),
            " ".join(command),
            _aot.tool_version(tuple(command)),
            *self.flags(),
            *defines,
            self.cffi_version(),
        ]
        path, built_now = _aot.cached_build(name, key, lambda tmp: self._compile(name, D, O, tmp))
        module = _aot.load_extension(path, name)
        self._modules[(D, O)] = module
        self._built += 1
        self._loaded += 0 if built_now else 1
        return module

    @staticmethod
    def cffi_version() -> str:
        import cffi

        return cffi.__version__

    def _compile(self, name: str, D: int, O: int, tmpdir: Path) -> Path:  # noqa: E741
        import cffi

        ffi = cffi.FFI()
        header = (SOURCE_DIR / "train.h").read_text()
        ffi.cdef("\n".join(line for line in header.splitlines() if not line.startswith("#")))
        ffi.set_source(
            name,
            '#include "train.h"\n#include "train.c"\n',
            include_dirs=[str(SOURCE_DIR)],
            define_macros=[("NN_D", str(D)), ("NN_O", str(O))],
            extra_compile_args=list(self.flags()),
            extra_link_args=["-fopenmp"] if self.OPENMP else [],
        )
        try:
            return Path(ffi.compile(tmpdir=str(tmpdir)))
        except Exception as exc:  # distutils' CompileError/LinkError, or a missing tool
            raise RuntimeError(
                f"{self.NAME}: building the C module failed: {(str(exc).splitlines() or [''])[0]}"
            ) from exc

    # ---- the backend ----------------------------------------------------------------------------

    def chunks(self, problem: Problem) -> int:
        """How many chunks of tiles to split each iteration into (the serial loop: 1)."""
        return 1

    def split_hidden(self, problem: Problem) -> bool:
        """Whether to split the hidden units among threads instead of the tiles (c-openmp)."""
        return False

    def prepare(self, problem: Problem) -> CState:
        from backends._numba_kernels import prepare_net

        self.check(problem)
        layers = len(problem.weights)
        if layers > 2:
            raise UnsupportedProblem(
                f"{self.NAME} supports 1 or 2 weight layers (2- and 3-layer nets), not {layers}"
            )
        D, O = problem.sizes[0], problem.sizes[-1]  # noqa: E741
        module = self.module(D, O)
        hidden = self.split_hidden(problem)
        net, work, cols = prepare_net(problem, self.threads() if hidden else self.chunks(problem), hidden)
        return CState(net, work, module, layers, problem.dtype, cols)

    def run(self, state: CState, iterations: int, log_every: int) -> None:
        losses = np.zeros(n_logged(iterations, log_every))
        ffi, lib = state.module.ffi, state.module.lib
        sfx = "f64" if state.dtype == "float64" else "f32"
        ctype = "double *" if sfx == "f64" else "float *"

        def ptr(array, kind=ctype):
            return ffi.cast(kind, ffi.from_buffer(array, require_writable=False))

        net, work = state.net, state.work
        out = ffi.cast("double *", ffi.from_buffer(losses))
        if state.layers == 1:
            N = net.N
            getattr(lib, f"nn_train_net1_{sfx}")(
                ptr(net.X),
                ptr(net.y),
                ptr(net.W0),
                ptr(work.d2),
                ptr(work.G0),
                N,
                net.alpha,
                iterations,
                log_every,
                out,
            )
        elif work.hb.shape[0] > 0:  # the hidden split
            getattr(lib, f"nn_train_hidden_{sfx}")(
                ptr(net.X), ptr(net.y), ptr(net.W0), ptr(net.W1t), net.N, net.X.shape[2], work.hb.shape[0] - 1,
                ptr(work.hb, "int64_t *"), ptr(work.A), ptr(work.d2), ptr(work.G0), ptr(work.G1),
                ptr(work.flags, "int64_t *"), net.alpha, iterations, log_every, out,
            )  # fmt: skip
        else:
            ntiles, _, T = net.X.shape
            H = net.W0.shape[1]
            cols = int(state.cols)
            getattr(lib, f"nn_train3_{sfx}")(
                ptr(net.X), ptr(net.y), ptr(net.W0), ptr(net.W1t), net.N, H, T, ntiles, cols,
                work.closs.shape[0], ptr(work.A), ptr(work.d2), ptr(work.G0), ptr(work.G1),
                ptr(work.closs, "double *"), net.alpha, iterations, log_every, out,
            )  # fmt: skip
        state.losses.append(losses)

    def fetch(self, state: CState) -> TrainResult:
        from backends._numba_kernels import weights

        losses = np.concatenate(state.losses) if state.losses else np.empty(0)
        if state.layers == 1:
            return TrainResult([np.ascontiguousarray(state.net.W0.T)], losses)
        return TrainResult(weights(state.net, state.work), losses)

    def threads(self) -> int:
        return 1

    def compilations(self) -> tuple[int, int]:
        """Modules this process has built or loaded (one per (D, O)), and how many came from the
        disk cache (a module built now counts as built, not loaded: ``cold``)."""
        return self._built, self._loaded
