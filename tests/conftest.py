"""Test-suite settings: hypothesis draws the same examples on every run (CI must not turn red by chance); set
PLANTSEEK_HYPOTHESIS=explore to draw fresh examples while developing."""
import os

from hypothesis import settings

settings.register_profile("plantseek-derandomized", derandomize=True, database=None)
settings.register_profile("plantseek-explore")
settings.load_profile("plantseek-explore" if os.environ.get("PLANTSEEK_HYPOTHESIS") == "explore"
                      else "plantseek-derandomized")
