"""The tile plan: full-size tiles, the inward-shifted edge rule, stable ids, block-friendly processing order."""

from dataclasses import replace

import numpy as np
import pytest

from spectral_llava.scene.tiling import batches_of, owned_windows, plan_tiles, processing_order, spread_tiles, tile_id


def test_edge_tiles_are_shifted_inward_and_cover_the_scene():
    tiles = plan_tiles(120, 100, 32, 32)
    assert sorted({tile.y for tile in tiles}) == [0, 32, 64, 88]
    assert sorted({tile.x for tile in tiles}) == [0, 32, 64, 68]
    assert len(tiles) == 16 and all(tile.size == 32 for tile in tiles)
    assert sum(tile.shifted for tile in tiles) == 7  # last row (4) + last column (4) - the shared corner
    covered = np.zeros((120, 100), dtype=int)
    for tile in tiles:
        assert 0 <= tile.y <= 120 - 32 and 0 <= tile.x <= 100 - 32
        covered[tile.y:tile.y + 32, tile.x:tile.x + 32] += 1
    assert covered.min() >= 1
    assert [(tile.row, tile.col) for tile in tiles[:5]] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]


def test_exact_fit_and_overlapping_stride():
    tiles = plan_tiles(128, 128, 64, 64)
    assert len(tiles) == 4 and not any(tile.shifted for tile in tiles)
    overlapping = plan_tiles(1068, 1068, 128, 64)
    offsets = sorted({tile.x for tile in overlapping})
    assert offsets[:3] == [0, 64, 128] and offsets[-1] == 1068 - 128 and len(offsets) == 16


def test_scene_smaller_than_one_tile_is_refused():
    with pytest.raises(ValueError, match=r"scene.tif is 64x64 pixels, smaller than one 128x128 tile"):
        plan_tiles(64, 64, 128, 128, where="scene.tif")
    with pytest.raises(ValueError, match="positive"):
        plan_tiles(64, 64, 32, 0)


def test_tile_ids_are_stable_and_unique():
    tiles = plan_tiles(300, 300, 128, 100)
    ids = [tile_id("S2A_X", 128, 100, tile.row, tile.col) for tile in tiles]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "S2A_X_t128s100_r0_c0"
    assert ids == [tile_id("S2A_X", 128, 100, tile.row, tile.col) for tile in plan_tiles(300, 300, 128, 100)]


def test_processing_order_walks_strips_column_by_column():
    tiles = plan_tiles(2048, 2048, 128, 128)
    order = processing_order(tiles)
    assert sorted(tile.index for tile in order) == list(range(len(tiles)))
    assert [(tile.row, tile.col) for tile in order[:9]] == [(r, 0) for r in range(8)] + [(0, 1)]
    assert order[8 * 16].row == 8  # the second 1024-px strip starts after the first one's 8 x 16 tiles
    batches = batches_of(tiles, 6)
    assert [len(batch) for batch in batches] == [6] * 42 + [4]
    assert [index for batch in batches for index in batch] == [tile.index for tile in order]


def test_max_tiles_keeps_an_evenly_spaced_sub_grid_over_the_whole_scene():
    full = plan_tiles(10980, 10980, 128, 128)  # a whole Sentinel-2 tile: 86 x 86 tiles, the last shifted inward
    spread = plan_tiles(10980, 10980, 128, 128, max_tiles=64)
    assert len(full) == 7396 and len(spread) == 64
    assert sorted({tile.row for tile in spread}) == sorted({tile.col for tile in spread}) == [0, 12, 24, 36, 49, 61,
                                                                                                73, 85]
    assert [tile.index for tile in spread] == list(range(64))  # positions in the plan, as the engines index them
    by_position = {(tile.row, tile.col): tile for tile in full}
    assert all(tile == replace(by_position[tile.row, tile.col], index=tile.index) for tile in spread)
    assert spread[-1].y == spread[-1].x == 10980 - 128 and spread[-1].shifted
    tall = spread_tiles(plan_tiles(10980, 2000, 128, 128), 50)  # 86 x 16 tiles: rows and columns in proportion
    assert len(tall) == 48 and len({tile.row for tile in tall}) == 16 and len({tile.col for tile in tall}) == 3
    assert [(tile.row, tile.col) for tile in plan_tiles(1068, 1068, 128, 128, max_tiles=1)] == [(4, 4)]
    assert plan_tiles(256, 256, 128, 128, max_tiles=5) == plan_tiles(256, 256, 128, 128)
    with pytest.raises(ValueError, match="max_tiles must be positive, got 0"):
        spread_tiles(full, 0)


def test_owned_windows_split_overlaps_halfway_and_cover_the_scene():
    """Edge tiles shifted inward share their overlap with their neighbour, halfway between the tiles' centres; with a
    stride below the tile size every overlap is split the same way. The windows tile the scene exactly."""
    tiles = plan_tiles(120, 120, 50, 50)  # columns and rows at 0, 50, 70: centres 25, 75, 95
    windows = {(t.row, t.col): window for t, window in zip(tiles, owned_windows(tiles))}
    assert windows[(0, 0)] == (0, 0, 50, 50) and windows[(0, 1)] == (50, 0, 85, 50)
    assert windows[(0, 2)] == (85, 0, 120, 50) and windows[(2, 2)] == (85, 85, 120, 120)
    for height, width, size, stride in ((120, 120, 50, 50), (100, 100, 40, 20), (90, 130, 32, 32)):
        tiles = plan_tiles(height, width, size, stride)
        covered = np.zeros((height, width), int)
        for (x0, y0, x1, y1), tile in zip(owned_windows(tiles), tiles):
            assert tile.x <= x0 < x1 <= tile.x + size and tile.y <= y0 < y1 <= tile.y + size
            covered[int(y0):int(y1), int(x0):int(x1)] += 1
        assert (covered == 1).all()  # every pixel in exactly one window
