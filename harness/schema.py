"""The results schema, written once: ``Row``, whose fields ARE the columns of ``runs.csv``, in order.

Everything about a column derives from its field here: the CSV header (``COLUMNS``), how a value
is written (``Row.cells``) and read back (``Row.from_cells``: a cell that does not parse makes the
line bad), the DataFrame dtypes of the reader (``frame``), and the importers' columns (they build
``Row`` objects). A field's type is its column's type:

=================  =====================================================================
``str``            text, as is (``device`` and ``cache``: one of the values in the field's
                   ``choices``)
``int``            an integer; required
``int | None``     an integer, or the empty cell
``float | None``   ``repr`` of the float (exact round trip), or the empty cell (NaN in the frame)
``bool``           ``True``/``False`` (read: ``True``, ``true`` or ``1`` is true, anything else false)
``bool | None``    ``True``/``False``, or the empty cell
``Status``         one of ``STATUSES``
=================  =====================================================================

Valid. ``check`` is the one set of rules a row must meet, applied wherever a ``Row`` is built:
by the writer (``harness.results.append_rows``, the sweep, the importers) and by the reader (a
line whose row breaks a rule is a bad line, reported with its number). Besides each column's
type: ``dtype`` one of ``DTYPES``; ``batch`` and ``hidden`` in 1..``MAX_BATCH`` / 1..``MAX_WIDTH``;
``iterations``, ``repeat`` at least 0 and ``threads`` at least 1; every time (``seconds``,
``seconds_e2e``, ``compile_seconds``, ``startup_seconds``) finite and at least 0, and present on a
row of status ``ok``; ``max_rel_error`` at least 0 (``inf``: a run that diverged); a text cell at
most ``MAX_TEXT`` characters, except ``reason``, which is cut to ``MAX_REASON`` characters (a
backend's exception message can be megabytes), and no NUL or line break in any text.

Versions. ``LAYOUTS[v - 1]`` is the header of schema version ``v``: every layout a ``runs.csv``
was ever written in, oldest first (the committed ``results/`` folders hold versions 1, 3 and 5).
``SCHEMA_VERSION`` is the newest; ``machine.json`` records the version of its folder's
``runs.csv`` (``harness.results``). ``upgrade_cells`` is the one migration: the cells of a line
of any layout (or any header holding the first layout's columns) as the cells of the newest;
a column a layout lacks gets the empty cell (its field's default). A later change that renames
or re-encodes a column adds a layout here and its rule to ``upgrade_cells``.

This module is data only (no files): ``harness.results`` is the store that reads and writes it.
"""

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from enum import Enum
from types import NoneType, UnionType
from typing import Union, get_args, get_origin

import numpy as np

from backends.base import DTYPES
from harness.problems import MAX_BATCH, MAX_WIDTH

#: The reason of a row a sweep skipped because its time budget was used up, and how reports
#: recognise one: it says nothing about its point, so it supersedes no earlier run's measurement.
BUDGET_USED_UP = "sweep time budget of {:.0f} s used up"
BUDGET_USED_UP_PATTERN = r"sweep time budget of \d+ s used up"


class Status(str, Enum):
    """A row's status in runs.csv, and of a worker's answer that is not a timing (``harness.protocol.Failure``)."""

    OK = "ok"
    SKIPPED = "skipped"  # not run: unavailable, unsupported, over budget or memory
    FAILED = "failed"  # raised, or out of memory
    INVALID = "invalid"  # disagreed with the NumPy reference
    UNHEALTHY = "unhealthy"  # NaN or inf
    TIMEOUT = "timeout"  # no answer in time: worker killed
    CRASHED = "crashed"  # the worker died, or the device faulted

    def __str__(self) -> str:  # as written to runs.csv
        return self.value


STATUSES = tuple(s.value for s in Status)
#: The ``device`` column's values: what the backend ran on, as its worker reported (``runs_on``);
#: ``sim``: a GPU backend run by the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, on the CPU): never a
#: GPU timing, so no figure or table that compares devices takes it for one.
DEVICES = ("cpu", "gpu", "sim")
#: The ``cache`` column's values (``harness.timing.cache_state``).
CACHE_STATES = ("cold", "disk", "memory", "none", "unknown")
TRUE = ("True", "true", "1")
#: Longest ``reason`` kept (longer ones are cut, with a marker), and longest other text cell.
MAX_REASON = 2000
MAX_TEXT = 200
CUT = " [...cut]"
#: Columns holding a time in seconds: finite and >= 0 when present.
TIMES = ("seconds", "seconds_e2e", "compile_seconds", "startup_seconds")


def _column(doc: str, default=MISSING, choices: tuple[str, ...] | None = None):
    metadata = {"doc": doc, **({"choices": ("", *choices)} if choices else {})}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, kw_only=True)
class Row:
    """One line of runs.csv: one timed repeat (status ``ok``), or one point that produced no timing
    (its status and reason). The fields are the columns, in order; ``None`` is the empty cell."""

    backend: str = _column("registry name of the backend")
    dtype: str = _column("float64 or float32")
    batch: int = _column("rows N of the problem")
    hidden: int = _column("hidden width H")
    iterations: int = _column("iterations of one timed run (T; 0 when nothing was timed)", 0)
    repeat: int = _column("index of the timed repeat at this point", 0)
    seconds: float | None = _column("wall time of one timed run of `iterations` iterations (device-resident for GPUs)", None)
    seconds_e2e: float | None = _column("the same run with the host<->device copies (equals seconds on CPUs)", None)
    compile_seconds: float | None = _column("first call at the point: prepare + one iteration on the timed path + fetch", None)
    status: Status = _column("ok, or why the point produced no timing (STATUSES)")
    reason: str = _column("why, for a status other than ok", "")
    max_rel_error: float | None = _column("normwise relative error against the float64 NumPy reference", None)
    validated: bool = _column("the point agreed with the reference on both paths", False)
    threads: int | None = _column("threads its loop used (empty: no CPU pool of its own to report)", None)
    machine: str = _column("results folder name of the machine", "")
    commit: str = _column("code commit (+dirty when tracked code differed)", "")
    timestamp: str = _column("UTC time the point was recorded (ISO 8601)", "")
    library: str = _column("library and version that ran the loop, e.g. 'numba-cuda 0.30.4'", "")
    device: str = _column("what the backend ran on, as its worker reported (sim: the CUDA simulator)", "", DEVICES)
    cache: str = _column("what the first call built (harness.timing.cache_state)", "", CACHE_STATES)
    fresh: bool | None = _column("the first call was its worker process's first", None)
    startup_seconds: float | None = _column("fresh rows: the worker's imports of the backend and its availability check", None)

    def __post_init__(self) -> None:
        for f in _FIELDS:  # typed values whatever the caller passed (numpy scalars, a status string)
            value = getattr(self, f.name)
            coerced = _KINDS[f.name].coerce(value, f)
            if coerced is not value:
                object.__setattr__(self, f.name, coerced)
        _rules(self)

    def cells(self) -> list[str]:
        """The CSV cells of this row, in column order."""
        return [_KINDS[name].encode(getattr(self, name)) for name in COLUMNS]

    @classmethod
    def from_cells(cls, cells: Sequence[str]) -> "Row":
        """The row of one CSV line of the newest layout; ValueError when a cell does not parse."""
        if len(cells) != len(COLUMNS):
            raise ValueError(f"{len(cells)} cells, not {len(COLUMNS)}")
        return cls(**{name: _KINDS[name].decode(text) for name, text in zip(COLUMNS, cells)})

    @classmethod
    def from_values(cls, values: Mapping) -> "Row":
        """A row from a mapping of column -> value, each a typed value or a cell's text ("": empty).
        Unknown columns and missing required ones raise TypeError; a bad value ValueError."""
        unknown = set(values) - set(COLUMNS)
        if unknown:
            raise TypeError(f"not columns of runs.csv: {', '.join(sorted(unknown))}")
        return cls(**{k: _KINDS[k].decode(v) if isinstance(v, str) else v for k, v in values.items()})

    def key(self, names: Iterable[str]) -> tuple:
        return tuple(getattr(self, name) for name in names)


def check(row: Row) -> None:
    """The rules every row meets (the module docstring); ValueError naming the first broken one.
    A ``Row`` meets them when built (the reader builds one per line); the writer checks each row
    again, whatever was done to it since (each value as its column types it, then the rules)."""
    for name, base, optional, choices in _SPECS:
        value = getattr(row, name)
        if value is None and optional:
            continue
        if type(value) is not base or (base is float and math.isnan(value)) or (
            base is str and (value.count("\n") or value.count("\r") or value.count("\0")
                             or (choices and value not in choices) or (name == "reason" and len(value) > MAX_REASON))
        ):  # fmt: skip
            raise ValueError(f"{name}: {str(value)[:50]!r} is not a value of this column")
    _rules(row)


def _rules(row: Row) -> None:
    """``check``'s rules beyond the columns' types."""
    if row.dtype not in DTYPES:
        raise ValueError(f"dtype: {row.dtype[:50]!r} is not one of {DTYPES}")
    for name, low, high in (("batch", 1, MAX_BATCH), ("hidden", 1, MAX_WIDTH), ("iterations", 0, 1 << 62),
                            ("repeat", 0, 1 << 31), ("threads", 1, 1 << 20)):  # fmt: skip
        value = getattr(row, name)
        if value is not None and not low <= value <= high:
            raise ValueError(f"{name}: {value} is not in {low}..{high}")
    for name in TIMES:
        value = getattr(row, name)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name}: {value!r} is not a finite time >= 0")
    if row.status is Status.OK and row.seconds is None:
        raise ValueError("status ok without seconds")
    if row.max_rel_error is not None and not row.max_rel_error >= 0:
        raise ValueError(f"max_rel_error: {row.max_rel_error!r} is negative")
    for name in _TEXT:
        if name != "reason" and len(getattr(row, name)) > MAX_TEXT:
            raise ValueError(f"{name}: longer than {MAX_TEXT} characters")


class _Kind:
    """How one column's values are typed, written and read (from its field's annotation)."""

    def __init__(self, annotation) -> None:
        args = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else ()
        self.optional = NoneType in args
        self.base = next((a for a in args if a is not NoneType), annotation)

    def coerce(self, value, f):
        if value is None and self.optional:
            return None
        base = self.base
        if base is float:
            value = float(value)
            if math.isnan(value):  # NaN is the empty cell: missing
                if not self.optional:
                    raise ValueError(f"{f.name}: NaN")
                return None
            return value
        if base is bool:
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{f.name}: {value!r} is not a bool")
            return bool(value)
        if base is int:
            if isinstance(value, bool) or int(value) != value:
                raise ValueError(f"{f.name}: {value!r} is not an integer")
            return value if type(value) is int else int(value)
        if base is Status:
            return value if isinstance(value, Status) else Status(value)
        if not isinstance(value, str):
            raise ValueError(f"{f.name}: {value!r} is not text")
        if "\n" in value or "\r" in value:  # one row, one line of runs.csv
            value = " ".join(value.splitlines())
        if "\0" in value:  # not every csv reader reads a NUL back
            value = value.replace("\0", "")
        if f.name == "reason" and len(value) > MAX_REASON:
            value = value[: MAX_REASON - len(CUT)] + CUT
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ValueError(f"{f.name}: {value[:50]!r} is not one of {choices}")
        return value

    def encode(self, value) -> str:
        if value is None:
            return ""
        if self.base is float:
            return repr(value)
        return str(value)  # bool: True/False; Status: its value

    def decode(self, text: str):
        if text == "" and self.optional:
            return None
        base = self.base
        if base is float:
            return float(text)  # "nan" reads as missing (coerce)
        if base is int:
            return int(text)
        if base is bool:
            if self.optional and text not in ("True", "False"):
                raise ValueError(f"not True, False or empty: {text!r}")
            return text in TRUE
        if base is Status:
            return Status(text)
        return text

    def dtype(self) -> str:
        """The reader's DataFrame dtype of this column."""
        if self.base is int and not self.optional:
            return "int64"
        if self.base is float:
            return "float64"
        if self.base is bool and not self.optional:
            return "bool"
        return "object"


_FIELDS = fields(Row)
COLUMNS: tuple[str, ...] = tuple(f.name for f in _FIELDS)
_KINDS: dict[str, _Kind] = {f.name: _Kind(f.type) for f in fields(Row)}
#: The columns with a default: a layout may lack them (read as empty). The others every layout has.
REQUIRED = tuple(f.name for f in fields(Row) if f.default is MISSING and f.default_factory is MISSING)
#: Columns whose values are numbers in the frame (``harness.report`` coerces frames from elsewhere).
NUMERIC = tuple(name for name in COLUMNS if _KINDS[name].base in (int, float))
DOCS: dict[str, str] = {f.name: f.metadata["doc"] for f in fields(Row)}
_TEXT = tuple(name for name in COLUMNS if _KINDS[name].base is str)
#: (column, its type, whether empty is allowed, its choices) for ``check``.
_SPECS = tuple((f.name, _KINDS[f.name].base, _KINDS[f.name].optional, f.metadata.get("choices")) for f in _FIELDS)

_V1 = COLUMNS[: COLUMNS.index("timestamp") + 1]
#: Every header runs.csv was written with, oldest first: LAYOUTS[v - 1] is schema version v.
LAYOUTS: tuple[tuple[str, ...], ...] = (
    _V1,  # the first sweeps
    (*_V1, "library"),  # 20ac9fc: which library (and compiler) ran each row
    (*_V1, "library", "device"),  # 7309c58: where it ran, as the worker reported
    (*_V1, "library", "device", "cache", "fresh"),  # 8f0bfaf: what the first call built
    COLUMNS,  # 8236be2: startup_seconds
)
SCHEMA_VERSION = len(LAYOUTS)
assert LAYOUTS[-1] == COLUMNS and all(set(REQUIRED) <= set(layout) for layout in LAYOUTS)


def layout_version(header: Sequence[str] | None) -> int | None:
    """The schema version whose layout ``header`` is; None for any other header."""
    header = tuple(header or ())
    return LAYOUTS.index(header) + 1 if header in LAYOUTS else None


def missing_columns(header: Sequence[str]) -> list[str]:
    """Columns every layout has that ``header`` lacks (a file that is not a runs.csv at all)."""
    return [c for c in LAYOUTS[0] if c not in header]


def upgrader(header: Sequence[str]):
    """The one migration: a function taking the cells of a line under ``header`` (any layout in
    LAYOUTS, or any header holding LAYOUTS[0]'s columns) to its cells in the newest layout, each
    value verbatim; a column the header lacks is the empty cell. ValueError for a line whose
    number of cells is not the header's."""
    if tuple(header) == COLUMNS:
        positions = None
    else:
        index = {name: i for i, name in enumerate(header)}
        positions = [index.get(name) for name in COLUMNS]

    def upgrade(cells: Sequence[str]) -> list[str]:
        if len(cells) != len(header):
            raise ValueError(f"{len(cells)} cells under a header of {len(header)}")
        if positions is None:
            return list(cells)
        return ["" if i is None else cells[i] for i in positions]

    return upgrade


def upgrade_cells(header: Sequence[str], cells: Sequence[str]) -> list[str]:
    """``upgrader(header)(cells)`` for one line."""
    return upgrader(header)(cells)


def frame(rows: Sequence[Row]):
    """The rows as a DataFrame with one column per field, typed by the schema: integers int64,
    floats float64 (empty: NaN), ``validated`` bool, ``fresh`` True/False/None, ``status`` its
    text, the rest text."""
    import pandas as pd

    data = {}
    for name in COLUMNS:
        kind = _KINDS[name]
        values = [getattr(r, name) for r in rows]
        if kind.base is Status:
            values = [v.value for v in values]
        elif kind.base is float:
            values = [math.nan if v is None else v for v in values]
        data[name] = pd.Series(values, dtype=kind.dtype(), name=name)
    return pd.DataFrame(data, columns=list(COLUMNS))
