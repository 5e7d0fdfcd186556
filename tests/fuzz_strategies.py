"""What the hypothesis fuzz tests share: the run settings and the strategy for values of any shape."""
from __future__ import annotations

import os

from hypothesis import HealthCheck
from hypothesis import strategies as st

#: FAIRGPTQ_FUZZ_SCALE multiplies every family's example count (CI runs 1)
SCALE = float(os.environ.get("FAIRGPTQ_FUZZ_SCALE", 1))
FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
#: any YAML/JSON-like value: None, bools, ints, floats (NaN included), short strings, and lists / dicts of them
anything = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True)
                        | st.text(max_size=8), lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=5)
