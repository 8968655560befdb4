"""`make demo`: the main job of every front end on embedded data (no network, no ../shared).

Each front end has its own ``examples/demo_<name>.py`` with ``main(out_dir)``; this script
runs those present, one after the other, and prints where the outputs are.  (Python puts
this script's folder on ``sys.path``, so the sibling scripts import by name; the library
itself comes from the installed package.)
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = ["image", "geoprior", "eit"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default: %(default)s)")
    parser.add_argument("--only", choices=PARTS, action="append", help="run only these parts")
    args = parser.parse_args(argv)
    for name in args.only or PARTS:
        path = HERE / f"demo_{name}.py"
        if not path.exists():
            continue
        module = importlib.import_module(f"demo_{name}")
        out = args.out / name
        out.mkdir(parents=True, exist_ok=True)
        print(f"== {name}: writing to {out}")
        t0 = time.perf_counter()
        module.main(out)
        print(f"== {name}: done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
