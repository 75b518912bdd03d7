"""The effort ladder, from declarations and stored medians: what Numba buys for how much work.

* the *rungs*: the backends declaring ``FAMILY`` "numba" and ``DEVICE`` "cpu", ordered by
  ``LEVEL`` (``backends.base.LEVELS``: naive, plain, tuned), registry order within a level;
* the *twins*: backends declaring ``TWIN``, the backend whose algorithm they reproduce with another
  compiler; each is shown beside its twin and the pair's time ratio ``<twin> / <backend>`` is
  reported at every point (above 1: the twin, Numba, is slower);
* *loop lines*: the size of each backend's training loop, by the one rule of ``LOC_RULE``;
* speed-up over the NumPy reference per point, by size band, at representative points, and the
  three sentences the README opens with.

Every registered rung and twin is reported, timed or not: one without a timed point says why
(``status``: "not run" when the results hold no row of it, else its rows' status and reason).
Backends are found by their declarations; none but the `numpy` reference is named here.
"""

from __future__ import annotations

import io
import math
import tokenize
from pathlib import Path

import numpy as np
import pandas as pd

import backends
from harness.report.rows import REFERENCE

#: The repository root: ``LOOP_FILES`` and a backend's own file are relative to it.
REPOSITORY = Path(__file__).resolve().parents[2]

#: N*H from which a problem counts as large (the issue 20 targets are stated from here on).
LARGE_WORK = 1 << 16
SEED = (4, 4)
#: Issue 20's target for each twin pair: <twin> / <backend> <= 1.1 at every point from LARGE_WORK on.
TWIN_TARGET = 1.1
#: Size bands of the ladder table and of the twin tables: (low, high, label), low <= N*H < high.
BANDS = (
    (0, 1 << 12, "N*H < 2^12"),
    (1 << 12, 1 << 16, "2^12 <= N*H < 2^16"),
    (1 << 16, 1 << 20, "2^16 <= N*H < 2^20"),
    (1 << 20, math.inf, "N*H >= 2^20"),
)

LOC_RULE = (
    "loop lines: the lines holding code in the files of a backend's training loop (its LOOP_FILES "
    "declaration, else its own file; a variant adds its own file to its base's files): Python and "
    "Cython files (.py, .pyx, .pxd) read with Python's tokenize, without blank lines, comments and "
    "docstrings (statements that are only a string); C files (.c, .h) without blank lines and "
    "// or /* */ comments"
)

PYTHON_SUFFIXES = (".py", ".pyx", ".pxd", ".pxi")
C_SUFFIXES = (".c", ".h")


# ----------------------------------------------------------------------------- declarations


def _level_rank(name: str) -> int:
    levels = backends.base.LEVELS
    level = backends.declared(name, "LEVEL")
    return levels.index(level) if level in levels else len(levels)


def rungs() -> list[str]:
    """The Numba CPU backends registered here, least effort first (``LEVEL``), then registry order."""
    found = backends.of_family("numba", "cpu")
    return sorted(found, key=lambda n: (_level_rank(n), found.index(n)))


def twins() -> list[tuple[str, str]]:
    """(backend, its twin) for every registered backend declaring a ``TWIN``, in registry order."""
    return [(n, t) for n in backends.names() if (t := backends.declared(n, "TWIN"))]


def members() -> list[str]:
    """The rungs, each followed by the backends twinning it; twins of other backends last."""
    pairs = twins()
    out: list[str] = []
    for rung in rungs():
        out += [rung] + [b for b, t in pairs if t == rung and b not in out]
    return out + [b for b, _ in pairs if b not in out]


def level(name: str) -> str:
    return str(backends.declared(name, "LEVEL", "") or "")


# ----------------------------------------------------------------------------- loop lines


def own_file(name: str) -> str | None:
    """The file of a registered backend, relative to the repository root (None: not registered)."""
    module = backends.REGISTRY.get(name)
    return module.replace(".", "/") + ".py" if module else None


def loop_files(name: str) -> list[str]:
    """The files holding ``name``'s training loop: its ``LOOP_FILES`` (else its own file), and for
    a variant (``backends.base_of``) its base's loop files and its own file as well."""
    declared = tuple(backends.declared(name, "LOOP_FILES", ()) or ())
    mine = own_file(name)
    files = list(declared) or ([mine] if mine else [])
    base = backends.base_of(name)
    if base is not None:
        files = loop_files(base) + files + ([mine] if mine else [])
    return list(dict.fromkeys(files))


def _python_lines(text: str) -> set[int]:
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING}
    lines: set[int] = set()
    statement: list[tokenize.TokenInfo] = []

    def flush():
        if statement and not all(t.type == tokenize.STRING for t in statement):  # a docstring is a string alone
            for t in statement:
                lines.update(range(t.start[0], t.end[0] + 1))
        statement.clear()

    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
            flush()
        elif token.type not in skip:
            statement.append(token)
    flush()
    return lines


def _c_lines(text: str) -> set[int]:
    """Lines with a character outside comments (string and character literals are code)."""
    lines: set[int] = set()
    line, i, n, state = 1, 0, len(text), "code"
    while i < n:
        c = text[i]
        pair = text[i : i + 2]
        if c == "\n":
            line += 1
            if state == "line":
                state = "code"
        elif state == "code":
            if pair == "//":
                state, i = "line", i + 1
            elif pair == "/*":
                state, i = "block", i + 1
            elif not c.isspace():
                lines.add(line)
                if c in "\"'":
                    state = c
        elif state == "block":
            if pair == "*/":
                state, i = "code", i + 1
        elif state in "\"'":
            lines.add(line)
            if c == "\\":
                i += 1
                if i < n and text[i] == "\n":
                    line += 1
            elif c == state:
                state = "code"
        i += 1
    return lines


def count_lines(path: Path) -> int:
    """Lines holding code in one file, by ``LOC_RULE``; ValueError for a file it has no rule for
    or one Python's tokenize cannot read."""
    path = Path(path)
    text = path.read_text()
    suffix = path.suffix.lower()
    if suffix in PYTHON_SUFFIXES:
        try:
            return len(_python_lines(text))
        except (tokenize.TokenError, SyntaxError) as exc:
            raise ValueError(f"{path.name}: tokenize failed ({exc})") from None
    if suffix in C_SUFFIXES:
        return len(_c_lines(text))
    raise ValueError(f"{path.name}: no line-count rule for {suffix or 'extensionless'} files")


def loop_lines(name: str, root: Path = REPOSITORY) -> tuple[int | None, str]:
    """(lines of ``name``'s training loop, the files counted) or (None, why they are not counted)."""
    files = loop_files(name)
    if not files:
        return None, "not registered here: its files are unknown"
    total = 0
    for file in files:
        path = Path(root) / file
        if not path.is_file():
            return None, f"{file} not found"
        try:
            total += count_lines(path)
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            return None, str(exc)
    return total, ", ".join(files)


# ----------------------------------------------------------------------------- measurements


def times(summary: pd.DataFrame, dtype: str) -> pd.DataFrame:
    """Median seconds per iteration of one dtype: rows (batch, hidden), a column per backend."""
    part = summary[summary["dtype"] == dtype]
    if part.empty:
        return pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=["batch", "hidden"]))
    return part.pivot_table(index=["batch", "hidden"], columns="backend", values="median")


def speedups(table: pd.DataFrame) -> pd.DataFrame:
    """NumPy's median / each backend's median at each point (empty without a NumPy column)."""
    if REFERENCE not in table:
        return pd.DataFrame(index=table.index)
    return table.rdiv(table[REFERENCE], axis=0)


def work(index) -> np.ndarray:
    return np.array([int(n) * int(h) for n, h in index], dtype=float)


def status(frame: pd.DataFrame, name: str, dtype: str) -> str:
    """Why ``name`` has no timed point: "not run" (no row) or its first row's status and reason."""
    rows = frame[(frame["backend"] == name) & (frame["dtype"] == dtype)] if not frame.empty else frame
    if rows.empty:
        return "not run"
    reasons = rows["reason"].fillna("").astype(str)
    reasons = reasons[reasons != ""]
    state = str(rows["status"].iloc[0])
    if state == "ok":
        return "no validated timing"
    return f"{state}: {reasons.iloc[0]}" if len(reasons) else state


def ratio_text(x: float) -> str:
    if not np.isfinite(x):
        return "-"
    return f"{x:.3g}x" if x < 100 else f"{x:.0f}x"


def _band_cell(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "-"
    if len(values) == 1:
        return ratio_text(values.iloc[0])
    return f"{ratio_text(values.median())} ({ratio_text(values.min())}-{ratio_text(values.max())})"


def representative(table: pd.DataFrame) -> list[tuple[int, int]]:
    """Up to three points with a NumPy time: the seed 4 x 4 (else the smallest), the largest point
    at which the most ladder members were timed, and the point whose N*H is nearest the two's
    geometric middle (ties: more members timed, then the squarer shape)."""
    if REFERENCE not in table:
        return []
    have = table[table[REFERENCE].notna()]
    if have.empty:
        return []
    present = [m for m in members() if m in have]
    count = {p: int(have.loc[p, present].notna().sum()) if present else 0 for p in have.index}
    points = [(int(n), int(h)) for n, h in have.index]
    seed = SEED if SEED in points else min(points, key=lambda p: (p[0] * p[1], p[0]))
    large = max(points, key=lambda p: (count[p], p[0] * p[1], p[0]))
    chosen = [seed] + ([large] if large != seed else [])
    middle_work = math.sqrt(seed[0] * seed[1] * large[0] * large[1])
    rest = [p for p in points if p not in chosen]
    if rest and large != seed:
        mid = min(rest, key=lambda p: (abs(math.log2(p[0] * p[1] / middle_work)), -count[p],
                                       abs(math.log2(p[0] / p[1])), p[0]))  # fmt: skip
        if min(seed[0] * seed[1], large[0] * large[1]) <= mid[0] * mid[1] <= max(seed[0] * seed[1], large[0] * large[1]):
            chosen.insert(1, mid)
    return chosen


def large_points(index) -> tuple[list, str]:
    """The points with N*H >= LARGE_WORK, or else those of the largest N*H, with how they read."""
    points = list(index)
    if not points:
        return [], "no point"
    big = [p for p in points if p[0] * p[1] >= LARGE_WORK]
    if big:
        return big, f"from N*H = 2^{int(math.log2(LARGE_WORK))} up"
    top = max(p[0] * p[1] for p in points)
    return [p for p in points if p[0] * p[1] == top], f"at the largest N*H measured, {top}"


def _libraries(frame: pd.DataFrame, name: str, dtype: str) -> str:
    if "library" not in frame.columns:
        return ""
    rows = frame[(frame["backend"] == name) & (frame["dtype"] == dtype)]
    if "status" in rows.columns:  # the library that ran the loop: a row that never ran may name only the package
        rows = rows[rows["status"].astype(str) == "ok"]
    return ", ".join(sorted(set(rows["library"].dropna().astype(str)) - {""}))


def _where(index) -> str:
    """How many points, and the span of their N*H."""
    if not len(index):
        return "no point"
    w = sorted({int(n) * int(h) for n, h in index})
    count = f"{len(index)} point{'s' if len(index) > 1 else ''}"
    return f"{count}, N*H {w[0]}" if len(w) == 1 else f"{count}, N*H {w[0]}..{w[-1]}"


# ----------------------------------------------------------------------------- summary.md


def summary_section(table: pd.DataFrame, frame: pd.DataFrame, dtype: str, root: Path = REPOSITORY) -> list[str]:
    """The ladder table and the twin tables of one dtype, as Markdown lines."""
    names = members()
    if not names:
        return []
    speed = speedups(table)
    lines = ["", "### The effort ladder", ""]
    if REFERENCE not in table:
        return lines + [f"No `{REFERENCE}` time in {dtype}: no speed-ups ({status(frame, REFERENCE, dtype)})."]
    lines.append(f"Speed-up over `{REFERENCE}`: median over the points of each band (min-max); "
                 f"the Numba CPU backends by effort level, each C twin under the backend whose algorithm "
                 f"it reproduces; {LOC_RULE}.")  # fmt: skip
    lines.append("")
    heads = [f"{SEED[0]} x {SEED[1]}"] + [label for _, _, label in BANDS]
    lines.append("| backend | level | twin of | loop lines | " + " | ".join(heads) + " |")
    lines.append("|---|---|---|---|" + "---|" * len(heads))
    w = work(speed.index)
    for name in names:
        lines_count, why = loop_lines(name, root)
        loc = str(lines_count) if lines_count is not None else f"- ({why})"
        twin = backends.declared(name, "TWIN")
        head = f"| `{name}` | {level(name) or '?'} | {f'`{twin}`' if twin else ''} | {loc} | "
        mine = speed[name].dropna() if name in speed else pd.Series(dtype=float)
        if mine.empty:
            lines.append(head + f"not timed ({status(frame, name, dtype)}) |" + " |" * (len(heads) - 1))
            continue
        cells = [ratio_text(mine.get(SEED, float("nan")))]
        for lo, hi, _ in BANDS:
            cells.append(_band_cell(speed[name][(w >= lo) & (w < hi)]))
        lines.append(head + " | ".join(cells) + " |")
    lines += twin_section(table, frame, dtype)
    return lines


def pair_ratios(table: pd.DataFrame, backend: str, twin: str) -> pd.Series:
    """time(twin) / time(backend) at every point both timed (above 1: the twin is slower)."""
    if backend not in table or twin not in table:
        return pd.Series(dtype=float)
    return (table[twin] / table[backend]).dropna()


def twin_section(table: pd.DataFrame, frame: pd.DataFrame, dtype: str) -> list[str]:
    """Each twin pair at every point, and where each side is faster, by band."""
    pairs = twins()
    if not pairs:
        return []
    lines = ["", "### The same algorithm, two compilers", ""]
    ratios = {}
    for backend, twin in pairs:
        r = pair_ratios(table, backend, twin)
        libraries = f"`{twin}`: {_libraries(frame, twin, dtype) or 'library not recorded'}; " \
                    f"`{backend}`: {_libraries(frame, backend, dtype) or 'library not recorded'}"  # fmt: skip
        if r.empty:
            missing = [f"`{n}`: {status(frame, n, dtype)}" for n in (twin, backend) if n not in table or table[n].isna().all()]
            lines.append(f"- `{twin} / {backend}`: no point timed by both ({'; '.join(missing) or 'no common point'}).")
            continue
        ratios[(backend, twin)] = r
        big, label = large_points(r.index)
        part = r.loc[big]
        lines.append(f"- `{twin} / {backend}` ({libraries}): {len(r)} points; `{twin}` faster at "
                     f"{int((r < 1).sum())}, `{backend}` at {int((r > 1).sum())}; {label} ({len(part)} points) "
                     f"median {part.median():.2f}, range {part.min():.2f}-{part.max():.2f}; the target "
                     f"<= {TWIN_TARGET:g} met at {int((part <= TWIN_TARGET).sum())} of {len(part)}.")  # fmt: skip
    if not ratios:
        return lines
    lines += ["", "Where each is faster, by band (ratio = time of the first / time of the second; "
              "above 1: the second is faster):", ""]  # fmt: skip
    lines.append("| pair | band | points | median | range | the first faster at | the second faster at |")
    lines.append("|---|---|---|---|---|---|---|")
    for (backend, twin), r in ratios.items():
        w = work(r.index)
        for lo, hi, label in BANDS:
            part = r[(w >= lo) & (w < hi)]
            if part.empty:
                continue
            lines.append(f"| `{twin} / {backend}` | {label} | {len(part)} | {part.median():.2f} | "
                         f"{part.min():.2f}-{part.max():.2f} | {_where(part[part < 1].index)} | "
                         f"{_where(part[part > 1].index)} |")  # fmt: skip
    lines += ["", "Every point (time of the first / time of the second):", ""]
    heads = [f"`{t} / {b}`" for b, t in ratios]
    lines.append("| N x H | N*H | " + " | ".join(heads) + " |")
    lines.append("|---|---|" + "---|" * len(heads))
    points = sorted(set().union(*(set(r.index) for r in ratios.values())), key=lambda p: (p[0] * p[1], p[0]))
    for n, h in points:
        cells = [f"{r[(n, h)]:.2f}" if (n, h) in r.index else "-" for r in ratios.values()]
        lines.append(f"| {n} x {h} | {n * h} | " + " | ".join(cells) + " |")
    return lines


# ----------------------------------------------------------------------------- the README's answer


def timed_members(table: pd.DataFrame) -> list[str]:
    speed = speedups(table)
    return [m for m in members() if m in speed and speed[m].notna().any()]


def answer_table(table: pd.DataFrame, frame: pd.DataFrame, dtype: str, root: Path = REPOSITORY) -> list[str]:
    """Each ladder member's speed-up over NumPy at the representative points, and its loop lines."""
    speed = speedups(table)
    points = representative(table)
    heads = [f"{n} x {h}" for n, h in points]
    lines = ["| backend | level | loop lines | " + " | ".join(heads) + " |", "|---|---|---|" + "---|" * len(heads)]
    for name in members():
        count, _ = loop_lines(name, root)
        twin = backends.declared(name, "TWIN")
        what = level(name) + (f", twin of `{twin}`" if twin else "")
        head = f"| `{name}` | {what} | {count if count is not None else '-'} | "
        if name not in speed or speed[name].isna().all():
            lines.append(head + f"not timed ({status(frame, name, dtype)})" + " |" * len(heads))
            continue
        lines.append(head + " | ".join(ratio_text(speed[name].get(p, float("nan"))) for p in points) + " |")
    return lines


def _listing(items: list[str]) -> str:
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def provenance(frame: pd.DataFrame, dtype: str) -> str:
    """Which commits the ladder's and NumPy's rows come from: one commit is one side-by-side sweep."""
    rows = frame[(frame["dtype"] == dtype) & frame["backend"].isin([REFERENCE, *members()])]
    commits = sorted({str(c) for c in rows["commit"].dropna() if str(c)}) if "commit" in rows else []
    if not commits:
        return "newest run of each point"
    shown = ", ".join(f"`{c[:12]}`" for c in commits)
    return f"newest run of each point, commit{'s' if len(commits) > 1 else ''} {shown}"


def sentences(table: pd.DataFrame, frame: pd.DataFrame, dtype: str, machine: str) -> list[str]:
    """Three sentences from the medians: the rungs at the seed size, at large sizes, and each twin
    pair's ratio at large sizes. Each says what it could not compute and why."""
    speed = speedups(table)
    ladder = rungs()
    if REFERENCE not in table or not ladder:
        why = f"`{REFERENCE}` was not timed" if REFERENCE not in table else "no Numba CPU backend is registered"
        return [f"On `{machine}` ({dtype}) there is no effort ladder to report: {why}."]
    points = representative(table)
    seed = points[0]
    at_seed, untimed = [], []
    for rung in ladder:
        value = speed[rung].get(seed, float("nan")) if rung in speed else float("nan")
        if np.isfinite(value):
            at_seed.append(f"{ratio_text(value)} (`{rung}`)")
        else:
            never = rung not in speed or speed[rung].isna().all()
            untimed.append(f"`{rung}` ({status(frame, rung, dtype) if never else 'not at this point'})")
    first = f"On `{machine}` ({dtype}, {provenance(frame, dtype)}), at the seed size {seed[0]} x {seed[1]}"
    if at_seed:
        first += f" the Numba rungs run at {_listing(at_seed)} NumPy's speed, from least to most effort"
    first += (f"; not timed: {_listing(untimed)}." if untimed else ".") if at_seed else \
        f" no Numba rung was timed: {_listing(untimed)}."
    timed = [r for r in ladder if r in speed and speed[r].notna().any()]
    big, label = large_points([p for p in speed.index if speed.loc[p, timed].notna().any()] if timed else [])
    if not timed or not big:
        second = "No Numba rung has a timed point beyond that."
    else:
        medians = {r: speed.loc[big, r].dropna() for r in timed}
        medians = {r: v.median() for r, v in medians.items() if len(v)}
        parts = [f"`{r}` {ratio_text(v)}" for r, v in medians.items()]
        second = f"{label[0].upper()}{label[1:]} ({len(big)} points) their median speed-ups are {_listing(parts)}"
        if len(medians) > 1:
            hi, lo = max(medians, key=medians.get), min(medians, key=medians.get)
            second += f": `{hi}` is {ratio_text(medians[hi] / medians[lo])} as fast as `{lo}` there"
        untimed = [r for r in ladder if r not in medians]
        if untimed:
            second += f" (not timed there: {_listing([f'`{r}`' for r in untimed])})"
        second += "."
    pairs = [(b, t) for b, t in twins() if t in ladder]
    if not pairs:
        third = "No backend declares a Numba rung as its `TWIN`, so no compiler is compared with Numba on the same algorithm."
    else:
        said, missing = [], []
        for backend, twin in pairs:
            r = pair_ratios(table, backend, twin)
            if r.empty:
                missing.append(f"`{twin} / {backend}` ({'; '.join(f'`{n}`: {status(frame, n, dtype)}' for n in (twin, backend) if n not in table or table[n].isna().all()) or 'no common point'})")
                continue
            big, label = large_points(r.index)
            part = r.loc[big]
            lib = _libraries(frame, backend, dtype)
            said.append(f"`{twin} / {backend}` is {part.median():.2f} {label} (range {part.min():.2f}-{part.max():.2f}; "
                        f"`{twin}` faster at {int((part < 1).sum())} of {len(part)} points"
                        f"{'; `' + backend + '`: ' + lib if lib else ''})")  # fmt: skip
        third = ""
        if said:
            third = f"Against the same algorithm built by another compiler, the median time ratio {_listing(said)}."
        if missing:
            third += (" " if third else "") + f"Not compared: {_listing(missing)}."
    return [first, second, third]
