"""Test-wide settings.

Hypothesis runs derandomized (examples derived from each test, not from a random seed), so a
CI run is repeatable: a property failure reproduces on every machine, and a green run is not
luck. `deadline=None` because these 2-core machines are shared and timing is noisy.
"""

from hypothesis import settings

settings.register_profile("mmbot", derandomize=True, deadline=None)
settings.load_profile("mmbot")
