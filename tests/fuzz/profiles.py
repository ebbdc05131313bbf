"""Hypothesis budgets for the fuzz tests: a short reproducible one for CI, a long one.

``XFERD_FUZZ_PROFILE=ci`` (the default) runs a fixed, derandomised set of
examples — the same inputs on every run, no example database — so the whole
``tests/fuzz`` directory stays within about a minute on two cores.
``XFERD_FUZZ_PROFILE=long`` draws fresh random inputs, 100 times as many, and
remembers failing ones in ``.hypothesis/xferd-fuzz``. ``XFERD_FUZZ_EXAMPLES=N``
sets the number of examples per test for either profile; ``XFERD_FUZZ_NO_SHRINK=1``
reports a failure unshrunk (shrinking a big input can take minutes).
"""

from __future__ import annotations

import os
from datetime import timedelta

from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase

#: no "explain" phase: on Python 3.11 it traces every line and takes minutes
_PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
if os.environ.get("XFERD_FUZZ_NO_SHRINK"):      # report the first failure as found
    _PHASES.remove(Phase.shrink)
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
          HealthCheck.large_base_example]

settings.register_profile(
    "xferd-fuzz-ci", derandomize=True, database=None, deadline=timedelta(seconds=5),
    suppress_health_check=_QUIET, print_blob=True, phases=_PHASES)
settings.register_profile(
    "xferd-fuzz-long", derandomize=False, deadline=timedelta(seconds=10),
    database=DirectoryBasedExampleDatabase(".hypothesis/xferd-fuzz"),
    suppress_health_check=_QUIET, print_blob=True, phases=_PHASES)

PROFILE = os.environ.get("XFERD_FUZZ_PROFILE", "ci")
if PROFILE not in ("ci", "long"):
    raise RuntimeError(f"XFERD_FUZZ_PROFILE must be 'ci' or 'long', not {PROFILE!r}")
LONG = PROFILE == "long"

#: pytest-timeout for one fuzz test: the CI budget, or a long run's (0: none)
TIMEOUT = int(os.environ.get("XFERD_FUZZ_TIMEOUT", 0 if LONG else 120))


def fuzz(ci_examples: int) -> settings:
    """Settings for one property: *ci_examples* in CI, 100× that in a long run."""
    examples = os.environ.get("XFERD_FUZZ_EXAMPLES")
    count = int(examples) if examples else ci_examples * (100 if LONG else 1)
    return settings(settings.get_profile(f"xferd-fuzz-{PROFILE}"), max_examples=count)
