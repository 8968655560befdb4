"""The deep image prior's fitting-curve experiment: structure is fitted before noise.

The light skip network is fitted plainly (Adam, lr 0.01, no input noise, no averaging,
no stopping) to four targets of the same size: a natural image (the centre crop of F16,
``../shared/data/images/dip``), the image plus Gaussian noise (sigma 25/255), the image
with its pixels randomly permuted, and U(0, 1) white noise.  The MSE to the target
against the iteration (log-log) shows the network reproducing the image far faster than
the noise-like targets: the "resistance to noise" that makes early-stopped DIP a prior.

Writes ``fitting_curves.png`` and ``fitting_curves.json`` (MSE at a few iterations and
the iteration at which each target's MSE first falls below 1e-3 and 1e-2) into ``--out``.

Run: ``python examples/image_fitting_curves.py --out out/curves`` (reduced:
``--size 64 --iterations 600``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from shared.image.experiments import fitting_curve, fitting_targets  # noqa: E402
from shared.image.figures import loss_curves  # noqa: E402
from shared.image.io import centre_crop, read_image, resize  # noqa: E402
from shared.paths import require_data  # noqa: E402

LEVELS = (1e-2, 1e-3)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/examples/fitting_curves"))
    parser.add_argument("--size", type=int, default=128, help="image side (F16 centre crop, resized)")
    parser.add_argument("--net", default="skip", choices=("skip", "hourglass", "decoder", "official"))
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    f16 = read_image(require_data("images", "dip", "F16.png"), name="F16")
    image = resize(centre_crop(f16, 256), (args.size, args.size)) if args.size != 256 else centre_crop(f16, 256)
    curves, report = {}, {"image": f"F16 centre crop 256, resized to {args.size}", "net": args.net,
                          "iterations": args.iterations, "targets": {}}
    for name, target in fitting_targets(image, seed=args.seed).items():
        res = fitting_curve(target, net=args.net, iterations=args.iterations, seed=args.seed)
        mse = res.history["data"]
        curves[name] = mse
        first = {f"first_iteration_below_{lvl:g}": next((i + 1 for i, v in enumerate(mse) if v < lvl), None)
                 for lvl in LEVELS}
        at = {f"mse_at_{k}": mse[k - 1] for k in (10, 100, 1000, args.iterations) if k <= len(mse)}
        report["targets"][name] = {**at, **first, "time_s": res.wall_time_s}
        print(f"{name:16s} " + "  ".join(f"{k} {v:.2e}" if isinstance(v, float) else f"{k} {v}" for k, v in
                                         {**at, **first}.items()))
    loss_curves(args.out / "fitting_curves.png", curves, ylabel="MSE to the target",
                title=f"fitting {args.size}x{args.size} targets ({args.net} net)")
    (args.out / "fitting_curves.json").write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
