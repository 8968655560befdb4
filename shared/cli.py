"""The ``untrained`` command line: one subcommand per front end, one runner for all.

Each front end has a module with ``register(subparsers)`` that adds its subcommand and
sets ``func`` on its parser; this file assembles them and holds what every front end
shares: the common options (:func:`add_common_options`), argument types that validate
numbers and devices at parse time (:func:`number`, :func:`device`), the :class:`Runner`
that owns the output folder, and the exit codes::

    0    success
    2    a user's input or option is invalid (the message names the file or flag, what was
         found and what was expected); nothing is created
    1    an internal error: one line says it is a bug and where the traceback was written
         (``traceback.txt`` in the output folder, or stderr with ``--debug``); also a fit
         that diverged (non-finite loss; its last finite state is written)
    130  interrupted (Ctrl-C / SIGTERM): the fit in progress stops at the end of its step,
         its best output so far is written with ``"interrupted": true``, and methods that
         had finished are already on disk; a second Ctrl-C exits at once

Examples::

    untrained image denoise photo.png --out out/
    untrained geoprior reconstruct scan.ply --out out/
    untrained eit reconstruct --phantom two-inclusion --out out/
"""
from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable

FRONT_ENDS = ["shared.image.cli", "geoprior.cli", "eit.cli"]

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

__all__ = ["InputError", "Runner", "add_common_options", "number", "device", "main", "run_parsed",
           "EXIT_OK", "EXIT_INTERNAL", "EXIT_INPUT", "EXIT_INTERRUPTED"]


class InputError(ValueError):
    """A user's input file or option is invalid: the message names it, what was found and
    what was expected (exit code 2, no traceback)."""


# ----------------------------------------------------------------------- option types
def number(kind: type = float, low: float | None = None, high: float | None = None, *,
           low_open: bool = False, high_open: bool = False) -> Callable[[str], Any]:
    """An argparse ``type`` that accepts a finite ``kind`` (int or float) within bounds.

    ``low``/``high`` are inclusive unless ``low_open``/``high_open``; NaN and infinities
    are always refused, with a message that states the range.
    """
    lo = "" if low is None else (f"> {low}" if low_open else f">= {low}")
    hi = "" if high is None else (f"< {high}" if high_open else f"<= {high}")
    wanted = " and ".join(p for p in (lo, hi) if p)
    what = "an integer" if kind is int else "a finite number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}{' ' + wanted if wanted else ''}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected {what}{' ' + wanted if wanted else ''}, got {text!r}")
        bad_low = low is not None and (value <= low if low_open else value < low)
        bad_high = high is not None and (value >= high if high_open else value > high)
        if bad_low or bad_high:
            raise argparse.ArgumentTypeError(f"expected a value {wanted}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def device(text: str) -> str:
    """An argparse ``type`` for ``--device``: a torch device that exists on this machine."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a torch device such as cpu, cuda or cuda:1, got {text!r}") \
            from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: no CUDA GPU is available on this machine (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise argparse.ArgumentTypeError(f"{text!r}: no Apple MPS device is available (use --device cpu)")
    elif dev.type != "cpu":
        raise argparse.ArgumentTypeError(f"expected cpu, cuda[:N] or mps, got {text!r}")
    return str(dev)


def add_common_options(parser: argparse.ArgumentParser, default_out: str = "out") -> None:
    """Options every fitting subcommand takes: --seed, --device, --out, --quiet, --debug."""
    parser.add_argument("--seed", type=number(int, 0), default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--device", type=device, default="cpu",
                        help="torch device, e.g. cpu or cuda (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path(default_out), help="output folder (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or reports")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an internal error on stderr")


# ----------------------------------------------------------------------------- runner
class Runner:
    """One command-line run of a front end, the same in all of them.

    Construct it after every input was read and every option checked (nothing is created
    before), with the input files and the names of every file the run may write: it
    refuses an ``--out`` that is an existing file or lies under one, and any output that
    would replace an input.  :meth:`open` creates the folder and checks that it can be
    written; :meth:`write` writes a :class:`shared.result.Result` as soon as its method
    finishes (so an interrupted multi-method run keeps the methods that finished);
    :meth:`say` reports on stdout (nothing with ``--quiet``); :meth:`finish` is the exit code.
    """

    def __init__(self, args: argparse.Namespace, inputs: Iterable[Path | None], outputs: Iterable[str]) -> None:
        self.args = args
        self.out = Path(args.out)
        self.quiet = bool(getattr(args, "quiet", False))
        self.inputs = [Path(p) for p in inputs if p is not None]
        self.interrupted = self.diverged = False
        self._check_folder()
        self.check_outputs(outputs)

    def _check_folder(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise InputError(f"--out {self.out} exists and is not a folder")
        parent = self.out
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise InputError(f"--out {self.out} lies under {parent}, which is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise InputError(f"--out {self.out}: cannot write in {parent} (permission denied or read-only)")

    def check_outputs(self, names: Iterable[str]) -> None:
        """Refuse output file names that would replace an input file."""
        protected = {p.resolve() for p in self.inputs}
        for name in names:
            if (self.out / name).resolve() in protected:
                raise InputError(f"refusing to overwrite the input file {self.out / name}; choose another --out folder")

    def open(self) -> Path:
        """Create the output folder (and its parents) and check that a file can be written there."""
        created = [p for p in (self.out, *self.out.parents) if not p.exists()]
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe = self.out / ".untrained-write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            for p in created:  # leave nothing behind
                try:
                    p.rmdir()
                except OSError:
                    pass
            raise InputError(f"--out {self.out}: cannot write there ({exc.strerror or exc})") from None
        self.args._work_started = True  # from here on, a ValueError is a bug, not bad input
        return self.out

    def write(self, result: Any, metrics_file: str | None = "metrics.json") -> list[Path]:
        """Write ``result`` (a :class:`shared.result.Result`) into the folder; note how its fit ended."""
        fit = getattr(result, "fit", None)
        if fit is not None and getattr(fit, "stopped_by", None) == "interrupted":
            self.interrupted = True
            result.metrics["interrupted"] = True
        if fit is not None and getattr(fit, "stopped_by", None) == "non-finite":
            self.diverged = True
        names = list(result.files) + ([metrics_file] if metrics_file else [])
        self.check_outputs(names)
        return result.write(self.out, metrics_file)

    def write_json(self, name: str, data: Any) -> Path:
        from shared.result import write_json

        self.check_outputs([name])
        return write_json(self.out / name, data)

    def say(self, message: str) -> None:
        if not self.quiet:
            print(message, flush=True)

    def finish(self) -> int:
        """The exit code: 130 if a fit was interrupted, 1 if one diverged, else 0."""
        if self.interrupted:
            print(f"interrupted: the best output so far was written to {self.out} (marked \"interrupted\": true)",
                  file=sys.stderr)
            return EXIT_INTERRUPTED
        if self.diverged:
            print(f"error: a fit diverged (non-finite loss); its last finite state was written to {self.out}. "
                  "Try a smaller --lr.", file=sys.stderr)
            return EXIT_INTERNAL
        return EXIT_OK


# ------------------------------------------------------------------------ entry point
def build_parser() -> argparse.ArgumentParser:
    from shared import __version__

    parser = argparse.ArgumentParser(
        prog="untrained",
        description="Untrained neural priors for inverse problems: deep image prior, "
        "deep geometric prior, neural EIT.",
        epilog="exit codes: 0 success, 2 invalid input or option, 1 internal error (a bug) or a diverged fit, "
        "130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"untrained {__version__}")
    sub = parser.add_subparsers(dest="frontend", metavar="{image,geoprior,eit}")
    sub.required = True
    for name in FRONT_ENDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A front end that is not part of this installation is simply not offered.
            if exc.name and name.startswith(exc.name):
                continue
            raise
        module.register(sub)
    return parser


def run_parsed(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the chosen ``func`` and map what it raised to an exit code.

    Before the run opened its output folder, a ``ValueError`` or a missing file is a
    user's input error (exit 2); after that only an :class:`InputError` is, and anything
    else is an internal error (exit 1, traceback to ``traceback.txt`` or, with
    ``--debug``, to stderr).
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or an option argparse refused (it printed why)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_INPUT)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (InputError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except ValueError as exc:
        if not getattr(args, "_work_started", False):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_INPUT
        return _internal_error(args, exc)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: say it is a bug, keep the traceback
        return _internal_error(args, exc)


def _internal_error(args: argparse.Namespace, exc: BaseException) -> int:
    text = "".join(traceback.format_exception(exc))
    where = "above"
    if getattr(args, "debug", False):
        sys.stderr.write(text)
    else:
        out = Path(getattr(args, "out", ".") or ".")
        path = out / "traceback.txt" if out.is_dir() else Path.cwd() / "untrained-traceback.txt"
        try:
            path.write_text(text)
            where = f"in {path}"
        except OSError:
            sys.stderr.write(text)
    print(f"internal error ({type(exc).__name__}: {exc}). This is a bug; the traceback is {where} "
          "(run with --debug to print it).", file=sys.stderr)
    return EXIT_INTERNAL


def main(argv: list[str] | None = None) -> int:
    return run_parsed(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
