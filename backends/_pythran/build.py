"""Building the `pythran` backend's module (not its training loop, which is ``train.py`` beside
this file): the ``pythran`` command, in a subprocess, with the flags and the BLAS the backend
names."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

from backends import _aot


def cxx() -> list[str]:
    """The C++ compiler command Pythran builds with ($CXX, else sysconfig's CXX)."""
    return _aot.tool_command("CXX", "c++")


def build_module(source: Path, module: str, tmp: Path, flags: Sequence[str], blas: str) -> Path:
    """Compile ``source`` as ``module`` with the ``pythran`` command (a subprocess: Pythran's
    configuration is global) inside ``tmp``; returns the extension's path. A failure raises with
    the last lines of Pythran's output."""
    copy = tmp / f"{module}.py"  # the module takes its name from the file
    shutil.copyfile(source, copy)
    target = tmp / f"{module}{sysconfig.get_config_var('EXT_SUFFIX') or '.so'}"
    command = [sys.executable, "-m", "pythran.run", str(copy), "-o", str(target), *flags, "--config", f"compiler.blas={blas}"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp)
    if done.returncode != 0 or not target.is_file():
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise RuntimeError(f"pythran failed to build {source.name} (exit {done.returncode}): {tail}")
    return target
