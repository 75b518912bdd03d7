"""Ahead-of-time builds shared by the backends compiled outside Numba (``c``, ``c-openmp``,
``cython``, ``pythran``): one cache directory, one artifact per name and key, built once under an
inter-process lock.

    build_dir() -> Path
        $NNBENCH_BUILD_DIR if set, else ``$XDG_CACHE_HOME/nnbench/build`` (default
        ``~/.cache/nnbench/build``): per user, outside the checkout, shared by every process.

    cached_build(name, key_parts, build) -> (artifact_path, built_now)
        The artifact of ``name`` for the SHA-256 of ``key_parts`` (the caller's sources, flags,
        compiler version...; this module adds the Python ABI -- interpreter cache tag, extension
        suffix, machine -- and the CPU's model and flags itself, as builds use -march=native).
        When it is absent, or fails its recorded checksum (a partial or corrupted artifact),
        ``build(tmpdir)`` is called under a ``filelock`` and must return the path of the artifact
        it wrote inside ``tmpdir``; the artifact is then moved into a directory of its own, with a
        manifest holding its checksum, and that directory is renamed into place in one step, so a
        concurrent reader sees the whole artifact or none.
        ``built_now`` is True when this call built it (the harness's ``cold``), False when it was
        found on disk (``disk``).

    load_extension(path, module_name)
        Import the extension module built at ``path`` (its init function must be ``PyInit_`` +
        the last part of ``module_name``, i.e. the name it was compiled under).

Layout: ``<build_dir>/<name>-<key[:16]>/{<artifact file>, manifest.json}``, and
``<name>-<key[:16]>.lock`` beside it. Stale directories of old keys are left alone (they are
small; delete the build directory to reclaim them).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

BUILD_DIR_VARIABLE = "NNBENCH_BUILD_DIR"
MANIFEST = "manifest.json"
LOCK_TIMEOUT_S = 900.0  # a build of ours takes seconds; a holder stuck this long is broken


def tool_command(variable: str, default: str) -> list[str]:
    """A compiler command: ``$<variable>`` (CC, CXX), else Python's configured one, else ``default``."""
    return shlex.split(os.environ.get(variable) or sysconfig.get_config_var(variable) or default)


@functools.cache
def tool_version(command: tuple[str, ...]) -> str:
    """The first line of ``<command> --version`` (e.g. 'gcc (Debian 12.2.0-14) 12.2.0'), or ''
    where it cannot be run; part of every build key and of the ``library`` column."""
    try:
        done = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return (done.stdout.splitlines() or [""])[0].strip()


def tool_name(command: Sequence[str]) -> str:
    """'gcc 12.2.0' (or 'g++', 'clang') from the compiler's first --version line (its last word that starts with a
    digit); the command's own name where the line says neither."""
    line = tool_version(tuple(command))
    words = [w for w in line.split() if w[:1].isdigit()]
    name = ("clang" if "clang" in line else "g++" if "g++" in line else "gcc" if ("gcc" in line or "GCC" in line)
            else Path(command[0]).name)
    return f"{name} {words[-1]}" if words else name


def build_dir() -> Path:
    """Where ahead-of-time builds are cached (created on first use by ``cached_build``)."""
    configured = os.environ.get(BUILD_DIR_VARIABLE)
    if configured:
        return Path(configured).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache_home) / "nnbench" / "build"


@functools.cache
def cpu_identity() -> str:
    """The CPU's model and instruction-set flags (Linux: /proc/cpuinfo's first 'model name' and
    'flags' lines; elsewhere ``platform.processor()``), so a module built with -march=native on
    one machine is never loaded on another that shares the cache directory (an NFS home)."""
    try:
        with open("/proc/cpuinfo") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return platform.processor()
    wanted = {}
    for line in lines:
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "flags", "Features", "CPU part") and key not in wanted:
            wanted[key] = " ".join(value.split())
    return "; ".join(f"{k}: {v}" for k, v in sorted(wanted.items())) or platform.processor()


def abi_parts() -> tuple[str, ...]:
    """What makes a built extension loadable by this interpreter on this CPU (part of every key)."""
    return (
        sys.implementation.cache_tag or sys.implementation.name,
        sysconfig.get_config_var("EXT_SUFFIX") or "",
        platform.machine(),
        sys.platform,
        cpu_identity(),
    )


def cache_key(key_parts: Sequence[str | bytes]) -> str:
    """SHA-256 (hex) over the parts, each length-prefixed so no two sequences collide, then the ABI."""
    digest = hashlib.sha256()
    for part in (*key_parts, *abi_parts()):
        data = part if isinstance(part, bytes) else str(part).encode("utf-8")
        digest.update(b"b" if isinstance(part, bytes) else b"s")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _valid(entry: Path, key: str) -> Path | None:
    """The artifact in ``entry`` if its manifest names this key and its checksum matches."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
        artifact = entry / manifest["artifact"]
        if manifest.get("key") != key or Path(manifest["artifact"]).name != manifest["artifact"]:
            return None
        if artifact.is_file() and _sha256_file(artifact) == manifest["sha256"]:
            return artifact
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def cached_build(
    name: str, key_parts: Sequence[str | bytes], build: Callable[[Path], Path]
) -> tuple[Path, bool]:
    """The cached artifact of ``name`` for ``key_parts``, building it first if needed (see the
    module docstring); returns (artifact_path, built_now)."""
    from filelock import FileLock

    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"build name must be a plain file name, got {name!r}")
    key = cache_key(key_parts)
    root = build_dir()
    entry = root / f"{name}-{key[:16]}"
    found = _valid(entry, key)
    if found is not None:
        return found, False
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{name}-{key[:16]}.lock"), timeout=LOCK_TIMEOUT_S):
        found = _valid(entry, key)  # another process may have built it while we waited
        if found is not None:
            return found, False
        work = Path(tempfile.mkdtemp(prefix=f".{name}-build-", dir=root))
        try:
            tmpdir = work / "build"
            tmpdir.mkdir()
            artifact = Path(build(tmpdir))
            if not artifact.is_file():
                raise RuntimeError(f"building {name} produced no artifact at {artifact}")
            stage = work / "stage"
            stage.mkdir()
            placed = stage / artifact.name
            shutil.move(str(artifact), placed)
            manifest = {"artifact": placed.name, "sha256": _sha256_file(placed), "key": key, "name": name}
            (stage / MANIFEST).write_text(json.dumps(manifest, indent=1))
            if entry.exists():  # an invalid entry: move it aside first (rename is atomic)
                stale = work / "stale"
                os.replace(entry, stale)
            os.replace(stage, entry)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    found = _valid(entry, key)
    if found is None:
        raise RuntimeError(f"the build of {name} at {entry} does not verify after it was placed")
    return found, True


def load_extension(path: Path, module_name: str):
    """Import the extension module at ``path`` as ``module_name`` (the same module again when this
    process already imported it from that path)."""
    path = Path(path)
    loaded = sys.modules.get(module_name)
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "") == path:
        return loaded
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {module_name} from {path}", name=module_name, path=str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module
