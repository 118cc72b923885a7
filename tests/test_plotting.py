"""Image grids and the model-space -> uint8 conversion."""

import numpy as np
import pytest

from scoresde_jax.io.images import image_grid, to_uint8


def test_image_grid_places_every_image():
    images = np.arange(5 * 2 * 3 * 3, dtype=np.uint8).reshape(5, 2, 3, 3)
    grid = image_grid(images, ncol=3, pad=1)
    assert grid.shape == (1 + 2 * 3, 1 + 3 * 4, 3)
    np.testing.assert_array_equal(grid[1:3, 1:4], images[0])
    np.testing.assert_array_equal(grid[1:3, 5:8], images[1])
    np.testing.assert_array_equal(grid[4:6, 1:4], images[3])
    # The empty sixth cell stays white.
    assert np.all(grid[4:6, 9:12] == 255)
    with pytest.raises(ValueError, match="uint8"):
        image_grid(images.astype(np.float32))


def test_to_uint8_inverts_the_data_scaling():
    k = np.arange(256, dtype=np.float32)
    np.testing.assert_array_equal(to_uint8(k / 255, centered=False), k.astype(np.uint8))
    np.testing.assert_array_equal(to_uint8(2 * k / 255 - 1, centered=True), k.astype(np.uint8))
    assert to_uint8(np.array([-3.0, 3.0]), centered=True).tolist() == [0, 255]
