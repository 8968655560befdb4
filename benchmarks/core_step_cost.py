"""Per-step cost of the core networks and operators at 256x256 on CPU.

For each network: forward+backward of ``mean((G(z) - y)^2)``, and a full Adam step
(zero_grad, forward, backward, step), median over ``--repeat`` steps after 2 warm-up steps.
For each operator: ``A x`` and ``A^* y`` on one 256x256 image (3 channels; Radon 1 channel).
Prints a table and appends the run (with thread count and load averages) to the list
``runs`` in ``benchmarks/results/core_step_cost.json``.

    OMP_NUM_THREADS=2 python benchmarks/core_step_cost.py
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from shared.provenance import run_record

import torch

from shared.fit import Objective, Optimiser, fit
from shared.networks import DeepDecoder, count_parameters, get_noise_input, skip_light, skip_official
from shared.operators import Blur, Downsample, GaussianMatrix, PixelMask, Radon, gaussian_kernel


def _median_time(fn, repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def network_costs(size: int, repeat: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    dd = DeepDecoder(64, 6, 3)
    nets = [("skip_official", skip_official(), get_noise_input(32, size, size, generator=g)),
            ("skip_light", skip_light(), get_noise_input(32, size, size, generator=g)),
            ("deep_decoder_k64_d6", dd, get_noise_input(64, *dd.input_shape(size, size)[2:], generator=g))]
    y = torch.rand(1, 3, size, size, generator=g)
    rows = []
    for name, net, z in nets:
        def fwd_bwd():
            net.zero_grad(set_to_none=True)
            ((net(z) - y) ** 2).mean().backward()

        def adam_step():
            # One step of the engine itself, so the figure is what a user's fit pays per step.
            fit(net, z, Objective(y), optimiser=Optimiser(lr=1e-2, iterations=1), seed=None)

        rows.append(dict(name=name, parameters=count_parameters(net),
                         forward_backward_s=_median_time(fwd_bwd, repeat),
                         adam_step_s=_median_time(adam_step, repeat)))
        print(f"{name:22s} {rows[-1]['parameters']:>10,d}  fwd+bwd {rows[-1]['forward_backward_s']:.3f} s  "
              f"Adam step {rows[-1]['adam_step_s']:.3f} s", flush=True)
    return rows


def operator_costs(size: int, repeat: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    x3 = torch.rand(1, 3, size, size, generator=g)
    x1 = torch.rand(1, 1, size, size, generator=g)
    ops = [("PixelMask", PixelMask.random((size, size), 0.5, g), x3),
           ("Downsample x4 bicubic", Downsample(4), x3),
           ("Blur gaussian sigma 2 circular", Blur(gaussian_kernel(2.0)), x3),
           ("Radon 60 angles", Radon(60, size), x1),
           ("Radon 180 angles", Radon(180, size), x1),
           ("GaussianMatrix m=n/10 (64x64 grey)", GaussianMatrix(410, 4096, g, in_shape=(1, 64, 64)),
            torch.rand(1, 1, 64, 64, generator=g))]
    rows = []
    with torch.no_grad():
        for name, op, x in ops:
            y = op(x)
            rows.append(dict(name=name, forward_s=_median_time(lambda: op(x), repeat),
                             adjoint_s=_median_time(lambda: op.A_adjoint(y), repeat)))
            print(f"{name:36s} A {rows[-1]['forward_s'] * 1e3:8.1f} ms   A* {rows[-1]['adjoint_s'] * 1e3:8.1f} ms",
                  flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--note", default="", help="free text stored in the JSON (e.g. machine load)")
    ap.add_argument("--no-operators", action="store_true", help="time the networks only")
    args = ap.parse_args()
    result = dict(time_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), size=args.size, repeat=args.repeat,
                  torch=torch.__version__,
                  threads=torch.get_num_threads(), omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
                  cpu=platform.processor() or platform.machine(), cores=os.cpu_count(), note=args.note,
                  load_average_before=os.getloadavg())
    result["networks"] = network_costs(args.size, args.repeat)
    if not args.no_operators:
        result["operators"] = operator_costs(args.size, args.repeat)
    result["load_average_after"] = os.getloadavg()
    out = Path(__file__).parent / "results" / "core_step_cost.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(out.read_text()) if out.exists() else {}
    runs = data.get("runs", [data] if "networks" in data else [])
    result.update(run_record("cpu"))
    runs.append(result)
    # The file keeps every run; its top level says where the latest one ran.
    out.write_text(json.dumps({**run_record("cpu"), "runs": runs}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
