"""Command line: ``python -m harness {list,run,validate,bench,plot,floor,import-benchmark,import-results}``.

This module parses (argument types, choices, the parser) and delegates to ``harness.commands``.
Every user error (unknown name, bad number, unavailable backend, unusable results folder) ends
in one line on stderr and exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from backends.base import DTYPES
from harness.commands import COMMANDS, DEFAULT_RESULTS, UsageError

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage + message; we want one line
        raise UsageError(message)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def int_list(text: str) -> list[int]:
    return _unique([positive_int(part) for part in text.split(",") if part.strip()] or _empty(text))


def name_list(text: str) -> list[str]:
    return _unique([part.strip() for part in text.split(",") if part.strip()] or _empty(text))


def _unique(values: list) -> list:
    """A list option naming one value twice would run (or report) the same thing twice."""
    seen = set()
    for value in values:
        if value in seen:
            raise argparse.ArgumentTypeError(f"{value!r} given twice")
        seen.add(value)
    return values


def _empty(text: str):
    raise argparse.ArgumentTypeError(f"empty list: {text!r}")


def build_parser() -> Parser:
    parser = Parser(prog="python -m harness", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    listing = sub.add_parser("list", help="every registered backend, available or not, with the reason")
    listing.add_argument("--backends", type=name_list, help="comma-separated names (default: every registered one)")

    run = sub.add_parser("run", help="train once on one backend and print the loss trace")
    run.add_argument("--backend", required=True)
    run.add_argument("--problem", required=True, choices=["xor2", "xor3", "scaled"])
    run.add_argument("--batch", type=positive_int, default=64, help="rows N (scaled problem)")
    run.add_argument("--hidden", type=positive_int, default=64, help="hidden width H (scaled problem)")
    run.add_argument("--iterations", type=positive_int, help="default: 10000 xor2, 60000 xor3, 1000 scaled")
    run.add_argument("--log-every", type=non_negative_int, help="0 logs nothing; default 1000/10000/100")
    run.add_argument("--dtype", choices=list(DTYPES), default="float64")
    run.add_argument("--seed", type=non_negative_int, default=0, help="seed of the scaled problem")
    run.add_argument("--json", action="store_true", help="one JSON object instead of text")

    val = sub.add_parser("validate", help="agreement of every available backend with the NumPy reference")
    val.add_argument("--backends", type=name_list, help="comma-separated names (default: all available)")
    val.add_argument("--quick", action="store_true", help="fewer and smaller scaled cases")

    bench = sub.add_parser("bench", help="sweep batch x hidden over the backends and store results")
    bench.add_argument("--preset", default="default", help="quick | default | full | gpu | gpu-1 | gpu-2 | gpu-check")
    bench.add_argument("--backends", type=name_list)
    bench.add_argument("--batch", type=int_list, help="comma-separated batch sizes (overrides the preset)")
    bench.add_argument("--hidden", type=int_list, help="comma-separated hidden widths (overrides the preset)")
    bench.add_argument("--dtype", type=name_list, help="float64,float32 (overrides the preset)")
    bench.add_argument("--out", type=Path, default=DEFAULT_RESULTS, help="results folder (default: results/)")
    bench.add_argument("--machine", help="name of this machine's results folder (default: from the hardware)")
    bench.add_argument("--threads", type=positive_int, help="threads for every CPU library (default: all cores)")
    bench.add_argument("--fresh", action="store_true", help="rerun points already stored for this commit")
    bench.add_argument("--no-plots", action="store_true")
    bench.add_argument("--no-ceilings", action="store_true",
                       help="do not measure the floor's ceilings (seconds before and after the sweep); machine.json "
                            "keeps those the folder holds for the same fingerprint")  # fmt: skip
    bench.add_argument("--no-progress", action="store_true")

    plot = sub.add_parser("plot", help="redraw every figure from stored results (runs no backend)")
    plot.add_argument("--results", type=Path, default=DEFAULT_RESULTS)

    imp = sub.add_parser("import-benchmark", help="append a pytest-benchmark JSON to the results table")
    imp.add_argument("file", type=Path)
    imp.add_argument("--out", type=Path, default=DEFAULT_RESULTS)
    imp.add_argument("--machine", help="results folder name (default: from the hardware)")

    imr = sub.add_parser("import-results", help="append another machine's results folder (machine.json + runs*.csv)")
    imr.add_argument("source", type=Path, help="folder with machine.json and runs*.csv")
    imr.add_argument("--out", type=Path, default=DEFAULT_RESULTS)
    imr.add_argument("--machine", help="results folder name (default: from the source's machine.json)")
    imr.add_argument("--note", default="", help="provenance to record with the import (how it was measured)")

    floor = sub.add_parser("floor", help="measure this machine's ceilings (and its GPU's) and print the floor per point")
    floor.add_argument("--batch", type=int_list, default=[4**k for k in range(1, 9)])
    floor.add_argument("--hidden", type=int_list, default=[4**k for k in range(1, 7)])
    floor.add_argument("--dtype", choices=list(DTYPES), default="float64")
    return parser



#: What an interrupted command has left, by command (``bench`` keeps every finished point).
INTERRUPTED = {
    "bench": "finished points are saved; run the same command again to resume",
    "import-results": "rows are appended whole or not at all; run the same command again (rows already there are not added twice)",
    "import-benchmark": "rows are appended whole or not at all; check the folder before importing again",
}
SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a closed terminal or SSH session), handled as Ctrl-C is."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum, frame):
    # The first signal unwinds the command (workers closed, rows kept); more would only cut that short.
    for name in SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    raise Interrupted(signum)


def main(argv: list[str] | None = None) -> int:
    previous = {name: signal.getsignal(getattr(signal, name)) for name in SIGNALS}
    args = None
    try:
        if threading.current_thread() is threading.main_thread():
            for name in SIGNALS:
                signal.signal(getattr(signal, name), _interrupt)
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        what = INTERRUPTED.get(getattr(args, "command", None))
        print(f"interrupted ({signal.Signals(signum).name})" + (f": {what}" if what else ""), file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:
        return 0
    finally:
        if threading.current_thread() is threading.main_thread():
            for name, handler in previous.items():
                signal.signal(getattr(signal, name), handler if handler is not None else signal.SIG_DFL)
