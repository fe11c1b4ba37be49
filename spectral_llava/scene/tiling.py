"""The tile grid of a scene.

Rule for edges: tiles are `tile_size` x `tile_size` pixels of the 10 m grid, `stride` apart, starting at the top-left
corner. Where the last step leaves part of the scene uncovered, one more tile is placed flush with the right (bottom)
edge: it is shifted inward and overlaps its neighbour, so every tile is full size (the model sees 10 m pixels,
never a stretched or padded tile) and every pixel is covered. A scene smaller than one tile in either direction is
refused. Grid indices (`row`, `col`) count tiles, the shifted edge tile taking the next index. `max_tiles` keeps
at most that many tiles, an evenly spaced sub-grid spread over the whole scene (`spread_tiles`).

Drawn on a map, overlapping tiles would stack their fills; `owned_windows` gives each tile the part of it nearer its
own centre than its neighbours', so that each ground point shows one tile's colour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Tile:
    index: int  # position in the planned tiles (row-major order)
    row: int
    col: int
    y: int  # top pixel row on the 10 m grid
    x: int  # left pixel column
    size: int
    shifted: bool  # an edge tile moved inward to stay full size


def _offsets(length: int, tile_size: int, stride: int) -> tuple[list[int], bool]:
    offsets = list(range(0, length - tile_size + 1, stride))
    shifted = offsets[-1] + tile_size < length
    if shifted:
        offsets.append(length - tile_size)
    return offsets, shifted


def plan_tiles(height: int, width: int, tile_size: int, stride: int, where: str = "the scene",
               max_tiles: int | None = None) -> list[Tile]:
    """Tiles covering a height x width scene (see the module's edge rule), in row-major order; with `max_tiles`, at
    most that many of them spread over the whole scene (`spread_tiles`)."""
    if tile_size < 1 or stride < 1:
        raise ValueError(f"tile size and stride must be positive, got tile_size={tile_size}, stride={stride}")
    if height < tile_size or width < tile_size:
        raise ValueError(f"{where} is {height}x{width} pixels, smaller than one {tile_size}x{tile_size} tile; "
                         "pass a smaller --tile-size (the model resizes tiles to its image size)")
    rows, last_row_shifted = _offsets(height, tile_size, stride)
    cols, last_col_shifted = _offsets(width, tile_size, stride)
    tiles = []
    for row, y in enumerate(rows):
        for col, x in enumerate(cols):
            shifted = (last_row_shifted and row == len(rows) - 1) or (last_col_shifted and col == len(cols) - 1)
            tiles.append(Tile(len(tiles), row, col, y, x, tile_size, shifted))
    return tiles if max_tiles is None else spread_tiles(tiles, max_tiles)


def _evenly_spaced(count: int, keep: int) -> set[int]:
    """`keep` of the indices 0..count-1, evenly spaced, first and last included (the middle one when keep is 1)."""
    if keep == 1:
        return {(count - 1) // 2}
    return {(2 * i * (count - 1) + keep - 1) // (2 * (keep - 1)) for i in range(keep)}


def spread_tiles(tiles: list[Tile], max_tiles: int) -> list[Tile]:
    """At most `max_tiles` of a `plan_tiles` grid, spread over the whole scene: the tiles where an evenly spaced
    subset of the grid's rows meets an evenly spaced subset of its columns (first and last included, rows to
    columns in the grid's proportions), re-indexed in row-major order; grid positions (`row`, `col`, and so tile
    ids) are kept. All tiles when there are no more than `max_tiles`."""
    if max_tiles < 1:
        raise ValueError(f"max_tiles must be positive, got {max_tiles}")
    if len(tiles) <= max_tiles:
        return tiles
    rows, cols = tiles[-1].row + 1, tiles[-1].col + 1
    keep_rows = max(1, min(rows, math.isqrt(max_tiles * rows // cols)))
    keep_cols = max(1, min(cols, max_tiles // keep_rows))
    keep_rows = max(1, min(rows, max_tiles // keep_cols))
    picked_rows, picked_cols = _evenly_spaced(rows, keep_rows), _evenly_spaced(cols, keep_cols)
    picked = [tile for tile in tiles if tile.row in picked_rows and tile.col in picked_cols]
    return [replace(tile, index=index) for index, tile in enumerate(picked)]


def tile_id(product: str, tile_size: int, stride: int, row: int, col: int) -> str:
    """Stable id of a tile: the same product, tile size, stride and grid position give the same id in every run
    and engine."""
    return f"{product}_t{tile_size}s{stride}_r{row}_c{col}"


def processing_order(tiles: list[Tile], block_pixels: int = 1024) -> list[Tile]:
    """Tiles grouped in horizontal strips about `block_pixels` tall, column by column inside a strip: consecutive
    tiles then share the internal blocks of tiled GeoTIFFs / JPEG2000s (1024 px in Sentinel-2 products), so each
    block is decoded about once instead of once per tile row."""
    return sorted(tiles, key=lambda tile: (tile.y // block_pixels, tile.x, tile.y))


def batches_of(tiles: list[Tile], batch_size: int) -> list[list[int]]:
    """Tile indices in processing order, cut into batches of `batch_size` (the last may be shorter)."""
    order = [tile.index for tile in processing_order(tiles)]
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def owned_windows(tiles: list[Tile]) -> list[tuple[float, float, float, float]]:
    """(x0, y0, x1, y1), in pixels of the 10 m grid, of the part of each tile nearer its centre than the centre of
    the tiles beside it along the grid: an overlap (an edge tile shifted inward, a stride below the tile size) is
    split halfway between the tiles' centres. The parts cover the tiles without overlapping each other."""
    def cuts(offsets: list[int], size: int) -> dict[int, tuple[float, float]]:
        middles = [(a + b + size) / 2 for a, b in zip(offsets, offsets[1:])]
        edges = [offsets[0], *middles, offsets[-1] + size]
        return {offset: (max(offset, edges[k]), min(offset + size, edges[k + 1])) for k, offset in enumerate(offsets)}

    if not tiles:
        return []
    size = tiles[0].size
    columns, rows = cuts(sorted({t.x for t in tiles}), size), cuts(sorted({t.y for t in tiles}), size)
    return [(columns[t.x][0], rows[t.y][0], columns[t.x][1], rows[t.y][1]) for t in tiles]
