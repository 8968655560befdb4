"""The ``untrained`` command line: one subcommand per front end.

Each front end has a module with ``register(subparsers)`` that adds its subcommand and
sets ``func`` on its parser; this file only assembles them::

    untrained image denoise photo.png --out out/
    untrained geoprior reconstruct scan.ply --out out/
    untrained eit reconstruct --demo --out out/
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Iterable

FRONT_ENDS = ["shared.image.cli", "geoprior.cli", "eit.cli"]


class InputError(ValueError):
    """A user's input file or option is invalid: the message names it, what was found and
    what was expected (exit code 2, no traceback)."""


def add_common_options(parser: argparse.ArgumentParser, default_out: str = "out") -> None:
    """Options every fitting subcommand takes: --seed, --device, --out, --quiet."""
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path(default_out), help="output folder (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


class Runner:
    """One command-line run of a front end, the same in all of them.

    Construct it after every input was read and every option checked (nothing is created
    before), with the input files and the names of every file the run may write: it
    refuses an ``--out`` that is an existing file and any output that would replace an
    input.  :meth:`open` creates the folder; :meth:`write` writes a
    :class:`shared.result.Result` as soon as its method finishes (so an interrupted
    multi-method run keeps the methods that finished); :meth:`say` reports on stdout
    (nothing with ``--quiet``).
    """

    def __init__(self, args: argparse.Namespace, inputs: Iterable[Path | None], outputs: Iterable[str]) -> None:
        self.out = Path(args.out)
        self.quiet = bool(getattr(args, "quiet", False))
        self.inputs = [Path(p) for p in inputs if p is not None]
        if self.out.exists() and not self.out.is_dir():
            raise InputError(f"--out {self.out} exists and is not a folder")
        self.check_outputs(outputs)

    def check_outputs(self, names: Iterable[str]) -> None:
        """Refuse output file names that would replace an input file."""
        protected = {p.resolve() for p in self.inputs}
        for name in names:
            if (self.out / name).resolve() in protected:
                raise InputError(f"refusing to overwrite the input file {self.out / name}; choose another --out folder")

    def open(self) -> Path:
        """Create the output folder (and its parents)."""
        self.out.mkdir(parents=True, exist_ok=True)
        return self.out

    def write(self, result, metrics_file: str | None = "metrics.json") -> list[Path]:
        """Write ``result`` (a :class:`shared.result.Result`) into the folder."""
        names = list(result.files) + ([metrics_file] if metrics_file else [])
        self.check_outputs(names)
        return result.write(self.out, metrics_file)

    def write_json(self, name: str, data) -> Path:
        from shared.result import write_json

        self.check_outputs([name])
        return write_json(self.out / name, data)

    def say(self, message: str) -> None:
        if not self.quiet:
            print(message, flush=True)


def build_parser() -> argparse.ArgumentParser:
    from shared import __version__

    parser = argparse.ArgumentParser(
        prog="untrained",
        description="Untrained neural priors for inverse problems: deep image prior, "
        "deep geometric prior, neural EIT.",
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
    """Parse ``argv`` and run the chosen ``func``; user-input errors print without traceback."""
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        # Input errors carry a message meant for the user; no traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    return run_parsed(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
