"""Shared test fixtures: the repository root on sys.path and the real data beside it."""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")
sys.path.insert(0, REPO)


@pytest.fixture
def shared_data():
    """``../shared/data`` (real images and weights); required, never copied into the repo."""
    if not os.path.isdir(SHARED_DATA):
        pytest.fail(f"{SHARED_DATA} is missing: the tests need the shared real data beside the repo")
    return SHARED_DATA
