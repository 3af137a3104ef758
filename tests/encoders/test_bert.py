"""The numpy BERT encoder's maths (its vectors against sentence-transformers' are pinned in
`tests/knowledge_base/test_resources.py`, on the packaged model through `EmbedderResource`)."""

import numpy as np
import pytest

from llm_assets.encoders.bert import gelu_

pytestmark = [pytest.mark.unit]


def test_the_numpy_gelu_is_the_exact_erf_gelu():
    import math

    x = np.linspace(-12, 12, 48_001, dtype=np.float32)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    assert np.abs(gelu_(x.copy()) - exact).max() < 5e-7
    # Large negative inputs give tiny outputs, not 0 or a cancellation error.
    assert np.allclose(gelu_(np.array([-6.0], dtype=np.float32)), -6.0 * 0.5 * math.erfc(6 / math.sqrt(2)), rtol=1e-2)
