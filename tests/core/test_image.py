"""avag_core.image's overlay against the tint blended pixel by pixel, as the overlay defines it."""
import numpy as np
import pytest

from avag_core.image import DEPENDENCY_TINT, FUNCTION_TINT, overlay


def blended(image: np.ndarray, function_mask: np.ndarray, dependency_mask: np.ndarray, alpha: float) -> np.ndarray:
    """The dependency's tint blended into its pixels, then the function's into its own, in float32, rounded once."""
    out = image.astype(np.float32)
    for mask, tint in ((dependency_mask, DEPENDENCY_TINT), (function_mask, FUNCTION_TINT)):
        out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(tint, dtype=np.float32)
    return out.round().astype(np.uint8)


@pytest.mark.parametrize("alpha", [0.55, 0.3])
def test_overlay_tints_each_region_and_the_function_over_the_dependency(alpha):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    image[0], image[1] = 0, 255  # the extreme levels too
    function_mask, dependency_mask = rng.random((48, 64)) < 0.4, rng.random((48, 64)) < 0.4
    assert (function_mask & dependency_mask).any() and not (function_mask | dependency_mask).all()
    tinted = overlay(image, function_mask, dependency_mask, alpha)
    assert tinted.dtype == np.uint8 and np.array_equal(tinted, blended(image, function_mask, dependency_mask, alpha))
    assert np.array_equal(tinted[~(function_mask | dependency_mask)], image[~(function_mask | dependency_mask)])
    empty = np.zeros((48, 64), bool)
    assert np.array_equal(overlay(image, empty, empty), image)
    assert overlay(image, empty, empty) is not image  # a copy: the caller's frame is left as it was
