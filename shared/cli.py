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

FRONT_ENDS = ["shared.image.cli", "geoprior.cli", "eit.cli"]


def add_common_options(parser: argparse.ArgumentParser, default_out: str = "out") -> None:
    """Options every fitting subcommand takes: --seed, --device, --out, --quiet."""
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path(default_out), help="output folder (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def prepare_out_dir(path: Path) -> Path:
    """Create the output folder; refuse a path that is an existing file."""
    if path.exists() and not path.is_dir():
        raise SystemExit(f"error: --out {path} exists and is not a folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


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
