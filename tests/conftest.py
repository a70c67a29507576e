import os
import sys
from pathlib import Path

from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

# Property tests draw the same examples on every run (a seed derived from each test's name),
# so CI cannot fail on a rare draw that a local run never saw. Set HYPOTHESIS_PROFILE=explore
# to search with fresh random examples instead.
settings.register_profile("reproducible", derandomize=True)
settings.register_profile("explore", derandomize=False, max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "reproducible"))
