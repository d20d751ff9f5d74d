"""Fixtures of the challenge tests: small exports made once per session."""
import pytest

from challenge_helpers import SMALL

from plantseek.challenge import export, load_manifest


@pytest.fixture(scope="session")
def singleshot_export(tmp_path_factory):
    """circle depth 3 width 24, seeds 0-1, densities 0.2 and ticket, singleshot (safetensors)."""
    out = tmp_path_factory.mktemp("challenge") / "singleshot"
    export(out, seeds="0-1", densities=[0.2, "ticket"], protocol="singleshot", **SMALL)
    return load_manifest(out)


@pytest.fixture(scope="session")
def strong_export(tmp_path_factory):
    """The same networks under strong, seed 0 only, as npz."""
    out = tmp_path_factory.mktemp("challenge") / "strong"
    export(out, seeds=[0], densities=["ticket", 0.3], protocol="strong", fmt="npz", **SMALL)
    return load_manifest(out)
