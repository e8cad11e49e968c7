"""p1 test fixtures: every transport test runs over a pseudo-terminal and over TCP."""

import pytest


@pytest.fixture(params=["pty", "tcp"])
def transport(request) -> str:
    return request.param
