"""pytest configuration: Hypothesis profiles and the ``--fuzz`` / ``--update-golden`` options.

* ``ci`` (the default profile): derandomized, so every run of the suite draws the
  same examples; no deadline (CI machines are noisy); no example database.
* ``--fuzz``: the ``fuzz`` profile -- random seeds and ``FUZZ_FACTOR`` times as
  many examples for every Hypothesis test.  Tests size themselves with
  ``n * settings.default.max_examples // 100``, which is ``n`` under ``ci``.
* ``--update-golden``: rewrite the golden files (tests/golden/) instead of
  comparing against them.
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

FUZZ_FACTOR = 50

settings.register_profile(
    "ci",
    max_examples=100,
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz",
    max_examples=100 * FUZZ_FACTOR,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def pytest_addoption(parser) -> None:
    parser.addoption("--fuzz", action="store_true", default=False,
                     help="run Hypothesis tests with random seeds and many more examples")
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite tests/golden/* from the current output instead of comparing")


def pytest_configure(config) -> None:
    profile = "fuzz" if config.getoption("--fuzz") else os.environ.get("HYPOTHESIS_PROFILE", "ci")
    settings.load_profile(profile)
