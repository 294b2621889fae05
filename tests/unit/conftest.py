import pytest

from tests.unit.servicer_harness import TokenMint


@pytest.fixture(scope="session")
def mint() -> TokenMint:
    """One RSA signing key for every servicer test (generating one takes a while)."""
    return TokenMint.generate()
