"""Tidy, append-only results: ``results/<machine>/runs.csv`` plus ``machine.json``: the store.

One row per timed repeat (status ``ok``) or one row per point that did not produce timings
(status ``skipped``/``failed``/``invalid``/``unhealthy``/``timeout``/``crashed``, with a reason).
What a row is, its columns, types, rules (``harness.schema.check``) and layouts, is
``harness.schema.Row`` (re-exported here); this module is the one place that writes and reads it.
What it guarantees:

* one writer at a time per machine folder: every change to a folder (appending, the layout
  upgrade, machine.json) happens under the folder's lock (``locked``: ``<folder>/.lock``, a
  ``filelock`` advisory lock); a second writer waits for it, at most ``LOCK_WAIT`` seconds, with a
  message, then gives up (``ResultsError``), having written nothing;
* whole lines only (``append_rows``): every row is checked first (the reader's rules), then the
  rows are written with one ``O_APPEND`` write (continued while the system writes less), then
  fsync; a write that fails (a full disk) or is interrupted is cut back to the file's length
  before it, so it leaves every row or none. A last line without its newline (a crash mid-write
  by an older writer, a copy cut short) is moved aside to ``runs.csv.torn-<time>`` with a
  message before anything is appended, never glued to a new row (``repair``);
* bounded, typed reads: runs.csv and machine.json must be regular files (not a FIFO, a folder or a
  device) of at most ``RUNS_LIMIT`` / ``MACHINE_LIMIT`` bytes; machine.json's fields are
  type-checked (``read_machine``); else ``ResultsError`` naming the file;
* ``read_rows`` / ``read_runs``: a file of any layout, as ``Row`` objects / a typed DataFrame; a
  line that does not parse or breaks a rule (and an unterminated last line) is reported by its
  line number and skipped, never fatal for the folder;
* ``migrate``: the one migration of a folder: runs.csv rewritten in the newest layout
  (atomically, every line kept), machine.json's ``schema_version`` stamped;
* ``write_machine`` / ``read_machine``: the fingerprint, stamped with the ``schema_version`` of
  the folder's runs.csv, merged into the folder's machine.json: the imports (``imported``), notes
  and earlier fingerprints (``earlier``: the previous one, when a sweep's differs) are kept.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from harness.schema import (  # noqa: F401  (re-exported: the schema's names, read where the store is)
    BUDGET_USED_UP,
    BUDGET_USED_UP_PATTERN,
    CACHE_STATES,
    DEVICES,
    LAYOUTS,
    NUMERIC,
    SCHEMA_VERSION,
    STATUSES,
    Row,
    Status,
    check,
    frame,
    layout_version,
    missing_columns,
    upgrader,
)
from harness.schema import COLUMNS as _COLUMNS

COLUMNS = list(_COLUMNS)
#: Columns the first layout lacks (added since; read as empty from an older file).
ADDED_COLUMNS = [c for c in COLUMNS if c not in LAYOUTS[0]]
RUNS = "runs.csv"
MACHINE = "machine.json"
LOCK = ".lock"
#: machine.json's record of the layout of its folder's runs.csv (harness.schema.LAYOUTS).
SCHEMA_KEY = "schema_version"
#: Largest runs.csv and machine.json read (the largest committed runs.csv is ~3 MB; a default sweep
#: adds ~0.5 MB): a file beyond these is not results, and reading it would exhaust memory.
RUNS_LIMIT = 512 << 20
MACHINE_LIMIT = 4 << 20
#: Seconds a writer waits for a folder another process is writing to before it gives up.
LOCK_WAIT = 60.0
#: Earlier fingerprints machine.json keeps (the newest).
MAX_EARLIER = 50
#: machine.json keys that belong to the folder, not to one fingerprint: kept by every write.
FOLDER_KEYS = ("imported", "earlier", "notes")

# A stored cell longer than csv's default 128 KiB limit (a reason written before reasons were cut)
# must cost that row at most, not the folder: any cell of a file under RUNS_LIMIT is allowed.
csv.field_size_limit(max(csv.field_size_limit(), RUNS_LIMIT))

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ResultsError(ValueError):
    """A results file that cannot be used; the message names the file and the problem."""


# ----------------------------------------------------------------------------- the lock


#: The folders whose lock this process holds -> (its FileLock, how many ``locked`` hold it).
_HELD: dict[tuple, list] = {}


def _folder_key(directory: Path) -> tuple | None:
    """The folder's identity (device, inode: one folder however it is named); None if absent."""
    try:
        info = os.stat(directory)
    except OSError:
        return None
    return info.st_dev, info.st_ino


@contextmanager
def locked(directory: Path, wait: float | None = None, log: Log = _stderr) -> Iterator[None]:
    """Hold ``directory``'s writer lock (``<directory>/.lock``; re-entrant in one process: the sweep
    holds it while each append takes it again, at no cost). When another process holds it: a
    message, then a wait of at most ``wait`` seconds (``LOCK_WAIT``), then ResultsError. The
    folder is created if need be."""
    key = _folder_key(directory)
    held = _HELD.get(key) if key else None
    if held is not None:
        held[1] += 1
        try:
            yield
        finally:
            held[1] -= 1
        return
    from filelock import FileLock, Timeout

    directory = Path(directory)
    wait = LOCK_WAIT if wait is None else wait
    path = directory / LOCK
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = FileLock(path)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log(f"waiting: another bench or import is writing to {directory} (it holds {path}); "
                f"waiting up to {wait:.0f} s")  # fmt: skip
            try:
                lock.acquire(timeout=wait)
            except Timeout:
                raise ResultsError(f"{directory}: another bench or import still holds {path} after {wait:.0f} s; "
                                   "run this again when it has finished") from None  # fmt: skip
    except OSError as exc:
        raise ResultsError(f"{path}: cannot lock the results folder ({exc.strerror or exc})") from None
    key = _folder_key(directory)
    _HELD[key] = [lock, 1, set()]  # the set: runs.csv files found appendable while held (``_appendable``)
    try:
        yield
    finally:
        del _HELD[key]
        lock.release()


# ----------------------------------------------------------------------------- bounded reads


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


def _open_regular(path: Path, limit: int, flags: int = os.O_RDONLY) -> int:
    """A descriptor of ``path``, checked to be a regular file of at most ``limit`` bytes (opened
    non-blocking, so a FIFO cannot hang the open). FileNotFoundError when there is none."""
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ResultsError(f"{path}: cannot open ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ResultsError(f"{path}: {_kind(info.st_mode)}, not a regular file")
        if info.st_size > limit:
            raise ResultsError(f"{path}: {info.st_size} bytes, more than the {limit} a {path.name} may have")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (ResultsError otherwise, naming it)."""
    path = Path(path)
    fd = _open_regular(path, limit)
    try:
        chunks, total = [], 0
        while chunk := os.read(fd, min(1 << 24, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # grew while read
                raise ResultsError(f"{path}: more than the {limit} bytes a {path.name} may have")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _text(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ResultsError(f"{path}: not a text file") from None


# ----------------------------------------------------------------------------- writing

#: os.write, as append_rows calls it (a test stands in a full disk or short writes here).
_write = os.write


def append_rows(path: Path, rows: Iterable[Row | Mapping], log: Log = _stderr) -> None:
    """Append rows (``Row`` objects, or mappings of column -> value) as whole lines, then fsync,
    under the folder's lock. Every row is checked first (``harness.schema.check``: a row the reader
    would reject is refused, ResultsError, nothing written); a torn last line is moved aside and an
    older layout migrated (``prepare``); a file of any other header, or a folder of a newer
    schema, is refused. A failed or interrupted write is cut back: every row or none."""
    path = Path(path)
    try:
        rows = [row if isinstance(row, Row) else Row.from_values(row) for row in rows]
        for row in rows:
            check(row)  # a Row is checked when built; again here, whatever was done to it since
    except (TypeError, ValueError) as exc:
        raise ResultsError(f"{path}: a row that does not fit the schema ({str(exc)[:300]})") from None
    body = _encode(rows).encode()
    with locked(path.parent, log=log):
        fd = _open_regular(path, RUNS_LIMIT, os.O_RDWR | os.O_APPEND | os.O_CREAT)
        try:
            start = os.fstat(fd).st_size
            if start and not _appendable(fd, start, path.parent):  # the slow path: repair, upgrade or refuse
                os.close(fd)
                fd = -1
                prepare(path, log)
                fd = _open_regular(path, RUNS_LIMIT, os.O_RDWR | os.O_APPEND | os.O_CREAT)
                start = os.fstat(fd).st_size
            data = _encode([], header=True).encode() + body if start == 0 else body
            _write_whole(fd, data, start)
        finally:
            if fd >= 0:
                os.close(fd)
        if start == 0:
            _stamp(path.parent, SCHEMA_VERSION)


def _appendable(fd: int, size: int, directory: Path) -> bool:
    """The common case, read from the open file: it ends in a newline, its header is the newest
    layout's, and machine.json records no newer schema (else ``prepare`` decides)."""
    if os.pread(fd, 1, size - 1) != b"\n":
        return False
    first = os.pread(fd, min(size, 1 << 16), 0).split(b"\n", 1)[0]
    if first != _HEADER:
        return False
    held = _HELD.get(_folder_key(directory))
    if held is not None and directory in held[2]:  # checked under this hold: no other writer since
        return True
    recorded = _recorded_version(directory)
    if recorded is not None and recorded > SCHEMA_VERSION:
        return False
    if held is not None:
        held[2].add(directory)
    return True


def _write_whole(fd: int, data: bytes, start: int) -> None:
    """Write all of ``data`` at the end of ``fd`` (length ``start`` before), then fsync; on any
    failure or interruption the file is cut back to ``start`` bytes and the error raised."""
    view, done = memoryview(data), 0
    try:
        while done < len(data):
            written = _write(fd, view[done:])
            if written <= 0:
                raise OSError(errno.EIO, "the write stored nothing")
            done += written
        os.fsync(fd)
    except BaseException:
        try:
            os.ftruncate(fd, start)
            os.fsync(fd)
        except OSError:
            pass
        raise


def _encode(rows: Iterable[Row], header: bool = False) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(COLUMNS)
    writer.writerows(row.cells() for row in rows)
    return buffer.getvalue()


_HEADER = ",".join(COLUMNS).encode()  # the newest header line, as _encode writes it (plain names)


def _parse(line: str) -> list[str]:
    return next(csv.reader([line]), [])


def _header(path: Path) -> list[str] | None:
    """The first line's cells (of at most 64 KiB: a longer one is no header of ours)."""
    fd = _open_regular(path, RUNS_LIMIT)
    try:
        first = os.pread(fd, 1 << 16, 0).split(b"\n", 1)[0]
    finally:
        os.close(fd)
    try:
        return _parse(first.decode("utf-8").removesuffix("\r")) or None
    except (UnicodeDecodeError, csv.Error):
        return None


#: The cells that name the point of a row, and its repeat (``repair``).
_POINT = ("backend", "dtype", "batch", "hidden", "commit")


def repair(path: Path, log: Log = _stderr) -> int:
    """A runs.csv whose last line has no newline (a write cut short: a crash, a full disk, a copy
    cut off) is cut back to a whole line, never left for a new row to be glued to. What is cut goes
    to ``<name>.torn-<UTC time>`` beside it, with a message naming that file: the fragment, and,
    when the fragment still names its point (backend, dtype, N, H, commit) and repeat ``r``, the
    whole lines just before it holding repeats ``r - 1``, ..., 0 of that point, so the point is
    gone whole and a resumed sweep measures it again rather than keeping it short of repeats.
    Returns the file's length after (0: none). Call it under the folder's lock."""
    path = Path(path)
    try:
        fd = _open_regular(path, RUNS_LIMIT, os.O_RDWR)
    except FileNotFoundError:
        return 0
    try:
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return size
        cut, end = 0, size
        while end > 0:
            begin = max(0, end - (1 << 16))
            found = os.pread(fd, end - begin, begin).rfind(b"\n")
            if found >= 0:
                cut = begin + found + 1
                break
            end = begin
        cut, repeats = _partial_point(fd, cut, size)
        moved = os.pread(fd, size - cut, cut)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = path.with_name(f"{path.name}.torn-{stamp}")
        for n in range(2, 1000):
            if not os.path.lexists(aside):
                break
            aside = path.with_name(f"{path.name}.torn-{stamp}-{n}")
        write_atomic(aside, moved)
        os.ftruncate(fd, cut)
        os.fsync(fd)
    finally:
        os.close(fd)
    also = f", with the {repeats} earlier repeat(s) of its point (a resumed sweep measures it again)" if repeats else ""
    log(f"warning: {path}: its last line was incomplete (a write cut short): moved to {aside}{also}; "
        f"{size - cut} bytes")  # fmt: skip
    return cut


def _partial_point(fd: int, cut: int, size: int) -> tuple[int, int]:
    """Where the lines of the torn last line's point begin (``repair``): (offset, whole lines of it
    before the fragment). (cut, 0) when the fragment or the header does not say."""
    try:
        head = os.pread(fd, min(cut, 1 << 16), 0).split(b"\n", 1)[0]
        header = _parse(head.decode("utf-8").removesuffix("\r"))
        fragment = _parse(os.pread(fd, min(size - cut, 1 << 16), cut).decode("utf-8", "replace"))
        names = [name for name in _POINT if name in header]
        where = [header.index(name) for name in names]
        at = header.index("repeat") if "repeat" in header else None
        # the cells needed are whole only when another cell follows them
        if cut == 0 or at is None or len(fragment) <= max([*where, at]) + 1:
            return cut, 0
        key = [fragment[i] for i in where]
        expected = int(fragment[at]) - 1
        begin = max(0, cut - (1 << 20))  # the lines of one point fit in far less
        lines = os.pread(fd, cut - begin, begin).split(b"\n")[:-1]
        start, count = cut, 0
        for line in reversed(lines[1:]):  # lines[0]: the header, or a line cut by `begin`
            if expected < 0:
                break
            cells = _parse(line.decode("utf-8").removesuffix("\r"))
            if len(cells) != len(header) or [cells[i] for i in where] != key or cells[at] != str(expected):
                break
            start -= len(line) + 1
            count += 1
            expected -= 1
        return start, count
    except (ValueError, UnicodeDecodeError, csv.Error, IndexError):
        return cut, 0


def prepare(path: Path, log: Log = _stderr) -> int:
    """Make an existing runs.csv ready for appending, under the folder's lock: a torn last line
    moved aside (``repair``), the header checked (``check_appendable``), an older layout migrated.
    Returns the schema version rows will be appended in (ResultsError: none)."""
    path = Path(path)
    with locked(path.parent, log=log):
        if repair(path, log) == 0:
            return SCHEMA_VERSION
        if check_appendable(path) < SCHEMA_VERSION:
            migrate(path, log)
    return SCHEMA_VERSION


def check_appendable(path: Path) -> int:
    """The schema version of an existing runs.csv, which rows can be appended to (after ``migrate``);
    ResultsError for a header of no known layout, or a folder whose machine.json says a newer
    harness wrote it."""
    version = layout_version(_header(path))
    if version is None:
        raise ResultsError(f"{path}: header does not match this version's columns; use another --out")
    recorded = _recorded_version(path.parent)
    if recorded is not None and recorded > SCHEMA_VERSION:
        raise ResultsError(f"{path.parent / MACHINE}: schema_version {recorded} is newer than this harness's "
                           f"({SCHEMA_VERSION}); update the harness to add to it")  # fmt: skip
    return version


def migrate(path: Path, log: Log = _stderr) -> tuple[int, int]:
    """The one migration of a results folder, under its lock: its runs.csv (``path``) of an older
    layout rewritten with the newest header, each line's cells re-laid by
    ``harness.schema.upgrader`` (values verbatim; a line with the wrong number of fields is kept as
    it is, and ``read_runs`` still reports it), atomically: a kill leaves the old file or the new
    one. A torn last line is moved aside first (``repair``). Then the ``schema_version`` of
    machine.json beside it (when there is one) is stamped. Returns (version before, after)."""
    path = Path(path)
    with locked(path.parent, log=log):
        repair(path, log)
        version = check_appendable(path)
        if version < SCHEMA_VERSION:
            # surrogateescape: a line that is not UTF-8 is kept byte for byte (the reader skips it)
            lines = read_bytes(path, RUNS_LIMIT).decode("utf-8", "surrogateescape").split("\n")[:-1]
            upgrade = upgrader(LAYOUTS[version - 1])
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(COLUMNS)
            for line in lines[1:]:
                try:
                    writer.writerow(upgrade(_parse(line.removesuffix("\r"))))
                except (ValueError, csv.Error):
                    buffer.write(line + "\n")
            write_atomic(path, buffer.getvalue().encode("utf-8", "surrogateescape"))
        _stamp(path.parent, SCHEMA_VERSION)
    return version, SCHEMA_VERSION


def folder_version(directory: Path) -> int | None:
    """The schema version of ``directory``'s runs.csv, from its header (the newest for a folder
    without one: its first rows will be written in it); None for a header of no known layout."""
    path = Path(directory) / RUNS
    try:
        if path.stat().st_size == 0:
            return SCHEMA_VERSION
    except FileNotFoundError:
        return SCHEMA_VERSION
    return layout_version(_header(path))


def _recorded_version(directory: Path) -> int | None:
    """machine.json's ``schema_version`` (None: none, or no usable machine.json)."""
    try:
        recorded = json.loads(read_bytes(Path(directory) / MACHINE, MACHINE_LIMIT)).get(SCHEMA_KEY)
    except (OSError, ResultsError, ValueError, RecursionError, AttributeError):
        return None
    return recorded if isinstance(recorded, int) and not isinstance(recorded, bool) else None


def _stamp(directory: Path, version: int) -> None:
    """Record ``version`` in the folder's machine.json, if it has a usable one that says otherwise."""
    path = Path(directory) / MACHINE
    try:
        fingerprint = read_machine(Path(directory))
    except (OSError, ResultsError):
        return
    if path.exists() and fingerprint.get(SCHEMA_KEY) != version:
        _write_json(path, {**fingerprint, SCHEMA_KEY: version})


# ----------------------------------------------------------------------------- devices


def nominal_device(backend: str, has_gpu: bool) -> str:
    """The device ``backend`` runs on on a machine with (``has_gpu``) or without an NVIDIA GPU.

    The one place a device is derived rather than reported (a worker reports ``runs_on()``): for
    rows written before the ``device`` column existed, and for rows of a backend that never ran
    (unavailable). From the backend's declared ``DEVICE`` ("cpu", "gpu", or "any": the GPU where
    there is one, as jax and torch do); "" for a name not registered here (a plugin elsewhere).
    """
    import backends

    declared = backends.declared(backend, "DEVICE", None)
    if declared == "any":
        return "gpu" if has_gpu else "cpu"
    return declared if declared in DEVICES else ""


def machine_has_gpu(fingerprint: dict) -> bool:
    return bool(isinstance(fingerprint, dict) and fingerprint.get("gpus"))


def fill_device(frame, fingerprint: dict):
    """``frame`` with every empty ``device`` cell derived from the machine's fingerprint (rows
    written before the column existed); reported devices are kept as they are."""
    has_gpu = machine_has_gpu(fingerprint)
    if "device" not in frame.columns:
        frame = frame.assign(device="")
    device = frame["device"].astype(object).where(frame["device"].notna(), "").astype(str)
    empty = device == ""
    if empty.any():
        nominal = {b: nominal_device(b, has_gpu) for b in frame.loc[empty, "backend"].unique()}
        device = device.where(~empty, frame["backend"].map(nominal))
    return frame.assign(device=device)


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write to a temporary file beside ``path``, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_json(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_machine(directory: Path, fingerprint: dict, log: Log = _stderr) -> None:
    """Write the fingerprint, with the ``schema_version`` of the folder's runs.csv, merged into the
    folder's machine.json under its lock (``merge_machine``: imports, notes and earlier
    fingerprints kept). ResultsError for a machine.json that cannot be read (nothing written)."""
    directory = Path(directory)
    with locked(directory, log=log):
        merged = merge_machine(read_machine(directory), fingerprint)
        version = folder_version(directory)
        _write_json(directory / MACHINE, {**merged, **({SCHEMA_KEY: version} if version else {})})


def _own(fingerprint: dict) -> dict:
    """A fingerprint's own fields: without the folder's, the schema version and the ceilings (which
    a sweep measures twice and keeps the better of)."""
    return {k: v for k, v in fingerprint.items() if k not in (*FOLDER_KEYS, SCHEMA_KEY, "ceilings")}


def merge_machine(current: dict, fingerprint: dict) -> dict:
    """``fingerprint`` written over the folder's ``current`` machine.json: the folder's keys
    (``FOLDER_KEYS``: imports, notes, earlier fingerprints) are kept unless ``fingerprint`` sets
    them; when the current fingerprint is another (a different commit, library, machine state),
    it joins ``earlier`` (the newest ``MAX_EARLIER``), so no sweep erases what the folder held. A
    fingerprint without ``ceilings`` (a sweep with ``--no-ceilings``) keeps the folder's ceilings
    when it is the same fingerprint; another one's stay in ``earlier`` with it."""
    merged = {k: current[k] for k in FOLDER_KEYS if k in current}
    merged.update(fingerprint)
    own = _own(current)
    same = own == _own(fingerprint)
    if own and not same and "earlier" not in fingerprint:
        previous = {k: v for k, v in current.items() if k not in FOLDER_KEYS}
        merged["earlier"] = [*current.get("earlier", []), previous][-MAX_EARLIER:]
    if same and "ceilings" in current and "ceilings" not in fingerprint:
        merged["ceilings"] = current["ceilings"]  # none measured (--no-ceilings): the same fingerprint's stay
    return merged


# The fields of machine.json this project writes, and the type each must have where it is read
# (harness.report, the importer): a file that breaks one is refused with the field's name.
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _dict_of(test):
    return lambda v: isinstance(v, dict) and all(isinstance(k, str) and test(x) for k, x in v.items())


def _list_of(test):
    return lambda v: isinstance(v, list) and all(test(x) for x in v)


def _optional(test):
    return lambda v: v is None or test(v)


_str = _optional(lambda v: isinstance(v, str))
_text_map = _dict_of(_str)
_IMPORT = {"source": _str, "copy": _str, "files": _list_of(lambda v: isinstance(v, str)), "note": _str,
           "rows_appended": _optional(_is_int), "rows_left_out": _dict_of(_is_int)}  # fmt: skip
_FIELDS: dict[str, tuple[Callable, str]] = {
    "cpu": (_str, "text"),
    "cores_logical": (_optional(lambda v: _is_int(v) and v > 0), "a positive integer"),
    "cores_physical": (_optional(lambda v: _is_int(v) and v > 0), "a positive integer"),
    "memory_bytes": (_optional(lambda v: _is_int(v) and v >= 0), "an integer"),
    "threads_requested": (_optional(lambda v: _is_int(v) and v > 0), "a positive integer"),
    SCHEMA_KEY: (lambda v: _is_int(v) and v > 0, "a positive integer"),
    **{key: (_str, "text") for key in ("os", "python", "commit", "machine", "preset")},
    "gpus": (_list_of(_dict_of(lambda v: v is None or isinstance(v, (str, int, float)))), "a list of objects"),
    "versions": (_text_map, "an object of texts"),
    "environment": (_text_map, "an object of texts"),
    "blas": (_list_of(lambda v: isinstance(v, dict)), "a list of objects"),
    "numba": (lambda v: isinstance(v, dict), "an object"),
    "ceilings": (_dict_of(lambda v: v is None or isinstance(v, str) or _is_number(v)), "an object of finite numbers"),
    "imported": (_list_of(lambda r: isinstance(r, dict) and all(t(r[k]) for k, t in _IMPORT.items() if k in r)),
                 "a list of import records (source, copy, files, rows_appended, rows_left_out, note)"),
    "earlier": (_list_of(lambda v: isinstance(v, dict)), "a list of objects"),
    "notes": (_optional(lambda v: isinstance(v, (str, list))), "text or a list"),
}


def parse_machine(path: Path, data: bytes) -> dict:
    """machine.json's bytes as a dict whose fields have their types (``_FIELDS``); ResultsError
    naming the file and the field otherwise."""
    try:
        fingerprint = json.loads(_text(path, data))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ResultsError(f"{path}: not valid JSON ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(fingerprint, dict):
        raise ResultsError(f"{path}: not a JSON object")
    for key, (test, kind) in _FIELDS.items():
        if key in fingerprint and not test(fingerprint[key]):
            raise ResultsError(f"{path}: field {key!r} is not {kind}")
    return fingerprint


def read_machine(directory: Path) -> dict:
    """The folder's machine.json ({} when there is none); ResultsError for one that is not a
    regular file under ``MACHINE_LIMIT`` bytes, not JSON, or has a field of the wrong type."""
    path = Path(directory) / MACHINE
    try:
        data = read_bytes(path, MACHINE_LIMIT)
    except FileNotFoundError:
        return {}
    return parse_machine(path, data)


def read_rows(path: Path) -> tuple[list[Row], list[int]]:
    """Every row of one runs.csv of any layout (``harness.schema.upgrader``), and the numbers of its
    bad lines (the wrong number of fields, a value that does not parse or breaks a rule of
    ``harness.schema.check``, a last line without its newline): reported, not fatal. ResultsError
    for a file that is not a runs.csv (not a regular file under ``RUNS_LIMIT``, not text, or
    lacking the first layout's columns)."""
    path = Path(path)
    return parse_rows(path, read_bytes(path, RUNS_LIMIT))


def parse_rows(path: Path, data: bytes) -> tuple[list[Row], list[int]]:
    """``read_rows`` of a file's bytes already read. A line that is not UTF-8 is a bad line."""
    try:
        lines = data.decode("utf-8").split("\n")
        undecodable = False
    except UnicodeDecodeError:  # each line decoded on its own: a bad one costs that line
        lines = data.decode("utf-8", "surrogateescape").split("\n")
        undecodable = True
    torn = lines.pop() != ""  # the text after the last newline: a line cut short
    if not lines:
        return [], [1] if torn else []
    try:
        header = _parse(lines[0].removesuffix("\r"))
    except csv.Error:
        header = []
    missing = missing_columns(header)
    if missing:
        raise ResultsError(f"{path}: missing columns {', '.join(missing)}")
    upgrade = upgrader(header)
    rows, bad = [], []
    for number, line in enumerate(lines[1:], start=2):  # one row per line: numbers stay line numbers
        try:
            if undecodable:
                line.encode("utf-8")  # UnicodeEncodeError (a ValueError) for the bytes that were not UTF-8
            rows.append(Row.from_cells(upgrade(_parse(line.removesuffix("\r")))))
        except (ValueError, TypeError, csv.Error):
            bad.append(number)
    if torn:
        bad.append(len(lines) + 1)
    return rows, bad


def read_runs(path: Path):
    """Read one runs.csv into a DataFrame typed by the schema (``harness.schema.frame``, the newest
    layout's columns whatever the file's); returns (frame, bad line numbers)."""
    rows, bad = read_rows(path)
    return frame(rows), bad


def check_machine_name(machine: str) -> None:
    """A results folder name: letters, digits, '.', '-' and '_', not '.' or '..' (no path, no
    traversal out of ``--out``); ResultsError otherwise."""
    if (not isinstance(machine, str) or not machine.replace("-", "").replace("_", "").replace(".", "").isalnum()
            or not machine.isascii() or set(machine) <= {"."} or len(machine) > 100):  # fmt: skip
        raise ResultsError(f"machine name {str(machine)[:100]!r}: use letters, digits, '.', '-' and '_' only "
                           "(ASCII, at most 100, not only dots)")  # fmt: skip


def rows_from_pytest_benchmark(data: dict, machine: str) -> list[Row]:
    """Rows of the results table from a pytest-benchmark JSON (``--benchmark-json`` or ``--benchmark-save``).

    Each round becomes one repeat; ``validated`` comes from the agreement the suite recorded. Each
    row is checked as a sweep's is (``harness.schema.check``); ResultsError for a file whose
    fields do not make valid rows.
    """
    from harness.agreement import TOLERANCE

    try:
        info = data.get("commit_info") or {}
        commit = str(info.get("id", "unknown"))[:12] + ("+dirty" if info.get("dirty") else "")
        benches = data.get("benchmarks")
        if not isinstance(benches, list):
            raise TypeError("'benchmarks' is not a list")
        rows = []
        for bench in benches:
            info, stats = bench.get("extra_info") or {}, bench.get("stats") or {}
            if not {"backend", "batch", "hidden", "iterations", "dtype"} <= set(info):
                continue  # not one of this suite's benchmarks
            error = info.get("max_rel_error")
            validated = isinstance(error, (int, float)) and error <= TOLERANCE.get(info["dtype"], -1)
            for repeat, seconds in enumerate(stats.get("data") or [stats.get("median")]):
                rows.append(Row(
                    backend=info["backend"], dtype=info["dtype"], batch=info["batch"], hidden=info["hidden"],
                    iterations=info["iterations"], repeat=repeat, seconds=seconds,
                    status=Status.OK if validated else Status.INVALID,
                    reason="" if validated else "agreement not recorded or above tolerance",
                    max_rel_error=error, validated=validated, machine=machine, commit=commit,
                    timestamp=str(data.get("datetime", "")),
                ))  # fmt: skip
    except (AttributeError, KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ResultsError(f"not a pytest-benchmark JSON of this project's benchmarks ({type(exc).__name__}: "
                           f"{str(exc)[:200]})") from None  # fmt: skip
    return rows
