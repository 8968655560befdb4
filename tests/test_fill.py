"""The smooth fill of unknown pixels (biharmonic inpainting, and the inpainting DIP's consistency step)."""
import pytest
import torch

from shared.image import DeepImagePrior, inpaint_problem, resize, to_tensor, validate_array
from shared.operators import Blur, PixelMask, gaussian_kernel
from shared.operators.fill import gradient_energy_matrix, laplacian_matrix, smooth_fill
from shared.operators.tikhonov import laplacian


def _image(size: int, channels: int = 1) -> torch.Tensor:
    from skimage import data

    x = resize(to_tensor(validate_array(data.astronaut())), (size, size))
    return x[:, :channels]


def _holes(size: int, seed: int = 0) -> torch.Tensor:
    """A mask (1 = known) with square holes 2..6 px wide, at least 3 px inside the border."""
    g = torch.Generator().manual_seed(seed)
    m = torch.ones(1, 1, size, size)
    for _ in range(6):
        w = int(torch.randint(2, 7, (1,), generator=g))
        i, j = (int(v) for v in torch.randint(3, size - 3 - w, (2,), generator=g))
        m[..., i : i + w, j : j + w] = 0
    return m


def test_laplacian_matrix_is_the_reflect_laplacian_operator():
    x = torch.rand(1, 1, 7, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    dense = laplacian_matrix(7, 9) @ x.flatten().numpy()
    assert torch.allclose(torch.from_numpy(dense).reshape(1, 1, 7, 9), laplacian().A(x), atol=1e-12)
    with pytest.raises(ValueError, match="at least 2 x 2"):
        laplacian_matrix(1, 5)


def test_gradient_energy_matrix_sums_the_squared_differences():
    x = torch.rand(6, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    energy = float(((x[:, 1:] - x[:, :-1]) ** 2).sum() + ((x[1:] - x[:-1]) ** 2).sum())
    v = x.flatten().numpy()
    assert float(v @ (gradient_energy_matrix(6, 8) @ v)) == pytest.approx(energy, rel=1e-12)


def test_membrane_fill_obeys_the_maximum_principle_where_the_thin_plate_overshoots():
    """Order 1 is harmonic in the holes, so it never leaves the range of the known values; the
    biharmonic fill of a rough rim swings beyond it in a wide hole."""
    g = torch.Generator().manual_seed(3)
    y = torch.rand(1, 1, 40, 40, generator=g)
    m = torch.ones(1, 1, 40, 40)
    m[..., 8:32, 8:32] = 0
    op = PixelMask(m)
    hole = m.expand_as(y) < 0.5
    membrane = smooth_fill(op, op.A(y), order=1)[hole]
    lo, hi = float(y[~hole].min()), float(y[~hole].max())
    assert lo - 1e-9 <= float(membrane.min()) and float(membrane.max()) <= hi + 1e-9
    plate = smooth_fill(op, op.A(y), order=2)[hole]
    assert float(plate.min()) < lo or float(plate.max()) > hi
    with pytest.raises(ValueError, match="order"):
        smooth_fill(op, op.A(y), order=3)


def test_fill_keeps_known_pixels_and_extends_a_linear_ramp_exactly():
    """A linear image has zero Laplacian, so the least-bending fill of holes inside it is the ramp itself."""
    i, j = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    ramp = (0.2 + 0.01 * i + 0.015 * j)[None, None]
    op = PixelMask(_holes(32))
    filled = smooth_fill(op, op.A(ramp))
    assert torch.allclose(filled, ramp, atol=1e-6)
    assert torch.allclose(smooth_fill(op, op.A(ramp), order=1), ramp, atol=1e-6)
    known = op.mask.bool().expand_as(ramp)
    assert torch.equal(filled[known], ramp[known])


def test_fill_matches_scikit_image_biharmonic_inpainting():
    from skimage.restoration import inpaint_biharmonic

    x = _image(48, 3)
    op = PixelMask(_holes(48, seed=1))
    ours = smooth_fill(op, op.A(x))
    missing = (op.mask[0, 0] < 0.5).numpy()
    theirs = inpaint_biharmonic(x[0].permute(1, 2, 0).numpy(), missing, channel_axis=-1)
    assert float((ours[0].permute(1, 2, 0) - torch.from_numpy(theirs)).abs().max()) < 5e-3


def test_fill_about_a_centre_corrects_a_smooth_misfit_in_the_holes_too():
    """With a centre the fill is the centre plus the smooth extension of its misfit: a centre off by
    a constant comes back exactly right, holes included; one off by a slow wave comes back with
    its hole error cut tenfold, while the known pixels are exact."""
    x = _image(40)
    op = PixelMask(_holes(40, seed=2))
    y = op.A(x)
    assert torch.allclose(smooth_fill(op, y, centre=x + 0.05), x, atol=1e-6)
    i, j = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    wave = 0.05 * torch.sin(i / 7.0) * torch.cos(j / 9.0)
    hole = op.mask.expand_as(x) < 0.5
    for order in (1, 2):
        corrected = smooth_fill(op, y, centre=x + wave, order=order)
        assert float((corrected - x)[hole].norm()) < 0.1 * float(wave.expand_as(x)[hole].norm())


def test_fill_refuses_what_it_cannot_fill():
    x = _image(16)
    op = PixelMask(_holes(16))
    with pytest.raises(TypeError, match="PixelMask"):
        smooth_fill(Blur(gaussian_kernel(1.0)), x)
    with pytest.raises(ValueError, match="centre must have"):
        smooth_fill(op, op.A(x), centre=torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="no pixel as known"):
        smooth_fill(PixelMask(torch.zeros(16, 16)), x)


def test_inpainting_dip_fill_step_restores_the_known_pixels():
    """consistency='fill': the result equals the measurements on every known pixel and scores at
    least the network's output; the fill input and step belong to inpainting only."""
    problem = inpaint_problem(_image(32, 3), multiple=16, fraction=0.6, simulate=True, seed=0)
    dip = DeepImagePrior(iterations=40, seed=0, net_input="fill", consistency="fill")
    rec = dip.reconstruct(problem)
    known = problem.forward.mask.expand_as(problem.y).bool()
    assert torch.allclose(rec.arrays["output"][known], problem.y.clamp(0, 1)[known], atol=1e-6)
    assert rec.metrics["psnr"] >= rec.metrics["psnr_network"]
    assert rec.config["net_input"] == "fill" and "psnr_fill" in rec.metrics
    with pytest.raises(ValueError, match="inpainting"):
        DeepImagePrior(net_input="fill").settings("superres")
    with pytest.raises(ValueError, match="consistency='none'"):
        DeepImagePrior(consistency="fill").settings("superres")
