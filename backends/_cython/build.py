"""Building the `cython` backend's extension (not its training loop, which is ``train.pyx``
beside this file): Cython translates the source, setuptools' ``build_ext`` compiles it with the C
compiler Python was built with, the tools' output goes to a log."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from backends import _aot


def compiler() -> list[str]:
    """The C compiler command setuptools builds extensions with ($CC, else sysconfig's CC)."""
    return _aot.tool_command("CC", "cc")


def build_extension(source: Path, module: str, tmp: Path, flags: tuple[str, ...], link: tuple[str, ...]) -> Path:
    """Cythonize ``source`` and compile it with setuptools' ``build_ext`` inside ``tmp``; returns
    the extension's path. The tools' output goes to a log; a failure raises with its last lines."""
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    pyx = tmp / f"{module}.pyx"
    shutil.copyfile(source, pyx)
    log = tmp / "build.log"
    with open(log, "w") as sink, _redirected(sink):
        try:
            ext = Extension(module, [str(pyx)], extra_compile_args=list(flags), extra_link_args=list(link))
            dist = Distribution({"name": module, "ext_modules": cythonize([ext], quiet=True, build_dir=str(tmp / "c"))})
            command = dist.get_command_obj("build_ext")
            command.build_lib, command.build_temp = str(tmp / "lib"), str(tmp / "obj")
            command.ensure_finalized()
            command.run()
            built = Path(command.get_ext_fullpath(module))
        except (Exception, SystemExit) as exc:  # distutils reports a failed compile as SystemExit or CompileError
            failure = exc
        else:
            failure = None
    if failure is not None:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-5:])
        raise RuntimeError(f"building {source.name} failed ({type(failure).__name__}: {failure}): {tail}")
    return built


class _redirected:
    """File descriptors 1 and 2 into ``sink`` for the block (the compiler writes to them directly)."""

    def __init__(self, sink) -> None:
        self.sink, self.saved = sink, []

    def __enter__(self):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, ValueError):
                pass
        self.saved = [os.dup(1), os.dup(2)]
        os.dup2(self.sink.fileno(), 1)
        os.dup2(self.sink.fileno(), 2)
        return self

    def __exit__(self, *exc) -> None:
        for fd, saved in zip((1, 2), self.saved):
            os.dup2(saved, fd)
            os.close(saved)
