import os

import pytest

# Keep test runs predictable on small CI machines.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def shared_data():
    """The real-data folder (../shared/data); skips the test with a reason when absent."""
    from shared.paths import shared_data_dir

    root = shared_data_dir()
    if root is None:
        pytest.skip("real data folder ../shared/data (or $UNTRAINED_DATA) is absent")
    return root
