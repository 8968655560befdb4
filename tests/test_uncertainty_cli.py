"""`untrained image ct --uncertainty` writes a std map and a calibration report."""
import json

import numpy as np
from skimage.io import imsave

from shared.cli import main
from shared.image.phantoms import shepp_logan


def test_image_ct_uncertainty_flag(tmp_path):
    src = tmp_path / "phantom.png"
    imsave(src, (shepp_logan(32)[0, 0].numpy() * 255).astype(np.uint8))
    out = tmp_path / "out"
    rc = main(["image", "ct", str(src), "--size", "32", "--angles", "10", "--iterations", "5", "--stop", "none",
               "--uncertainty", "--uncertainty-rank", "4", "--out", str(out), "--quiet"])
    assert rc == 0
    rep = json.loads((out / "uncertainty.json").read_text())
    assert rep["uncertainty"]["rank"] == 4 and rep["noise_std_given"] > 0
    assert 0 <= rep["calibration"]["fraction_within"] <= 1
    assert (out / "std.png").stat().st_size > 0 and (out / "std.pt").exists()
    assert main(["image", "ct", str(src), "--size", "32", "--iterations", "2", "--uncertainty",
                 "--uncertainty-rank", "0", "--out", str(out), "--quiet"]) == 2
