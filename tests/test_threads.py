"""shared.threads: thread limits are applied inside the block and restored after it."""
import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

from shared.threads import map_parallel, thread_limits


def _blas_threads() -> list[int]:
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_thread_limits_apply_and_restore():
    np.ones(2) @ np.ones(2)  # make sure NumPy's BLAS is loaded
    torch_before, blas_before = torch.get_num_threads(), _blas_threads()
    with thread_limits(torch_threads=1, blas=1):
        assert torch.get_num_threads() == 1
        assert all(n == 1 for n in _blas_threads())
    assert torch.get_num_threads() == torch_before
    assert _blas_threads() == blas_before


def test_thread_limits_restore_after_an_exception():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with thread_limits(torch_threads=1):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_thread_limits_reject_bad_counts(bad):
    with pytest.raises(ValueError, match="integer >= 1"):
        with thread_limits(blas=bad):
            pass


def test_map_parallel_keeps_order():
    assert map_parallel(lambda x: x * x, range(7), workers=3) == [x * x for x in range(7)]
