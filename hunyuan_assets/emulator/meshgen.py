"""Turn a picture into a small textured GLB, shaped like what Hunyuan3D v2.1 returns.

The upstream model removes the background, works on a 512 px square crop and paints a mesh
with PBR textures. We do the same in spirit, cheaply and deterministically: cut the object
out, inflate its silhouette into a closed "balloon" relief (front and back sheets meeting
at z=0 on the outline) and map the cropped picture on it. No scipy: the few image
operations needed are written in numpy.
"""

from __future__ import annotations

import io

import numpy as np
import trimesh
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

GRID = 100  # cells across the square crop: at most 4 * GRID**2 faces, ~20-35k for a blob
TEXTURE_PX = 512  # upstream works on a 512 px crop
MARGIN = 1.08  # crop side / object side, so the outline never touches the crop's edge
_BOX = Image.Resampling.BOX


def image_to_glb(image_bytes: bytes, *, seed: int = 0) -> bytes:
    """A textured GLB derived from the picture, byte-identical for the same bytes and seed
    (the seed only varies the thickness a little, as a new upstream run would).

    Raises ValueError when the bytes are not an image Pillow can decode."""
    rgba = _decode(image_bytes)
    keep, box = _locate_object(_foreground(rgba))
    crop = Image.fromarray(np.dstack([rgba[..., :3], keep * np.uint8(255)]), "RGBA").crop(box)
    inside = _repair(_clean(_grid(crop.getchannel("A")) >= 128))
    if not inside.any():  # nothing usable separates: the whole picture becomes a slab
        whole = Image.new("L", (rgba.shape[1], rgba.shape[0]), 255).crop(box)
        inside = _repair(_dilate(_grid(whole) > 0))  # >= 3 cells even for 1 px
    texture = _texture(crop)
    lum = np.asarray(texture.convert("L").resize((GRID + 1, GRID + 1), _BOX), np.float32) / 255
    return _export(inside, lum, texture, seed)


def _decode(data: bytes) -> np.ndarray:
    try:
        img: Image.Image = Image.open(io.BytesIO(data))
        if img.format == "JPEG":
            img.draft("RGB", (TEXTURE_PX, TEXTURE_PX))  # big JPEGs: decode at 1/2..1/8 scale
        img = ImageOps.exif_transpose(img)
        img.load()
    except Exception as exc:  # PIL raises many types (UnidentifiedImageError, OSError, ...)
        why = "unknown format" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise ValueError(f"input is not a decodable image: {why} ({len(data)} bytes)") from exc
    if img.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grey: Pillow would clip, not scale
        img = Image.fromarray((np.asarray(img, np.float64) / 257).clip(0, 255).astype(np.uint8))
    has_alpha = {"A", "a"} & set(img.getbands()) or "transparency" in img.info
    img = img.convert("RGBA") if has_alpha else img.convert("RGB").convert("RGBA")
    if max(img.size) > TEXTURE_PX:
        scale = TEXTURE_PX / max(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.convert("RGBa").resize(size, Image.Resampling.LANCZOS).convert("RGBA")
    return np.asarray(img)


def _foreground(rgba: np.ndarray) -> np.ndarray:
    """Object mask: the alpha channel when it holds real transparency, else colour distance
    from the border's median colour (what a studio photo or a render usually has)."""
    alpha = rgba[..., 3]
    if (alpha < 128).mean() > 0.01 and (alpha >= 128).any():
        return alpha >= 128
    rgb = rgba[..., :3].astype(np.float32)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background = np.median(border, axis=0)
    spread = np.percentile(np.linalg.norm(border - background, axis=1), 90)
    return np.linalg.norm(rgb - background, axis=2) > max(30.0, 2.5 * spread)


def _locate_object(mask: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Largest clean blob (found on a coarse copy) and a square crop box padded around it."""
    h, w = mask.shape
    scale = min(1.0, 128 / max(h, w))
    coarse_size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = Image.fromarray(mask.astype(np.uint8) * 255).resize(coarse_size, _BOX)
    blob = _clean(np.asarray(small) >= 128)
    if not blob.any():
        keep, (y0, y1, x0, x1) = np.ones_like(mask), (0, h, 0, w)
    else:
        # a bilinear upsample, thresholded at >0, is the blob grown by about a coarse cell
        grown = Image.fromarray(blob.astype(np.uint8) * 255).resize(
            (w, h), Image.Resampling.BILINEAR
        )
        keep = mask & (np.asarray(grown) > 0)
        rows, cols = np.nonzero(keep.any(axis=1))[0], np.nonzero(keep.any(axis=0))[0]
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    side = max(y1 - y0, x1 - x0) * MARGIN + 4
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    box = (round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2))
    return keep, box


def _grid(channel: Image.Image) -> np.ndarray:
    return np.asarray(channel.resize((GRID, GRID), _BOX))


def _components(mask: np.ndarray) -> np.ndarray:
    """4-connected labels (the smallest flat index in each blob; mask.size outside), by
    min-propagation with pointer jumping, which converges in a few dozen numpy passes."""
    n = mask.size
    labels = np.where(mask, np.arange(n).reshape(mask.shape), n)
    while True:
        new = labels.copy()
        np.minimum(new[1:], labels[:-1], out=new[1:])
        np.minimum(new[:-1], labels[1:], out=new[:-1])
        np.minimum(new[:, 1:], labels[:, :-1], out=new[:, 1:])
        np.minimum(new[:, :-1], labels[:, 1:], out=new[:, :-1])
        new = np.where(mask, new, n)
        new = np.append(new.ravel(), n)[new]  # jump to the label of the cell we point at
        if np.array_equal(new, labels):
            return labels
        labels = new


def _windows(a: np.ndarray) -> list[np.ndarray]:
    """The nine 3x3-neighbourhood shifts of `a` (zero/False outside), row by row."""
    padded, (h, w) = np.pad(a, 1), a.shape
    return [padded[i : i + h, j : j + w] for i in range(3) for j in range(3)]


def _erode(mask: np.ndarray) -> np.ndarray:
    return np.logical_and.reduce(_windows(mask))


def _dilate(mask: np.ndarray) -> np.ndarray:
    return np.logical_or.reduce(_windows(mask))


def _clean(mask: np.ndarray) -> np.ndarray:
    """Fill pinholes, drop threads thinner than 3 cells, keep the largest blob."""
    holes = _components(~mask)
    border = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
    sizes = np.bincount(holes.ravel(), minlength=mask.size + 1)
    small = (sizes < 0.01 * max(1, mask.sum())) & ~np.isin(np.arange(sizes.size), border)
    mask = mask | (small[holes] & ~mask)
    mask = _dilate(_erode(mask))
    if not mask.any():
        return mask
    labels = _components(mask)
    return labels == np.argmax(np.bincount(labels[mask]))


def _corners(inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid corners (one more each way than cells) with all four cells around them inside,
    the only corners lifted off z=0, and with any of the four inside, the corners in use."""
    p = np.pad(inside, 1)
    quad = [p[:-1, :-1], p[:-1, 1:], p[1:, :-1], p[1:, 1:]]
    return np.logical_and.reduce(quad), np.logical_or.reduce(quad)


def _repair(inside: np.ndarray) -> np.ndarray:
    """Drop cells that would make front and back touch away from the outline (a cell with
    no lifted corner, or a one-edge-wide neck), so the welded mesh stays 2-manifold."""
    while inside.any():
        core = _corners(inside)[0]
        bad = inside & ~(core[:-1, :-1] | core[:-1, 1:] | core[1:, :-1] | core[1:, 1:])
        bad[:-1] |= inside[:-1] & inside[1:] & ~core[1:-1, :-1] & ~core[1:-1, 1:]
        bad[:, :-1] |= inside[:, :-1] & inside[:, 1:] & ~core[:-1, 1:-1] & ~core[1:, 1:-1]
        if not bad.any():
            break
        inside = inside & ~bad
    return inside


def _chamfer(core: np.ndarray) -> np.ndarray:
    """Chamfer (1, sqrt 2) distance from each lifted corner to the nearest outline corner."""
    dist = np.where(core, np.float32(np.inf), np.float32(0))
    costs = [np.float32(np.hypot(i - 1, j - 1)) for i in range(3) for j in range(3)]
    while True:
        new = np.minimum.reduce([w + cost for w, cost in zip(_windows(dist), costs, strict=True)])
        if np.array_equal(new, dist):
            return dist
        dist = new


def _texture(crop: Image.Image) -> Image.Image:
    """The crop as RGB with the background painted in the object's nearby colour, so that
    texels bleeding over the outline (filtering, mip-maps) show no background halo."""
    rgb = np.asarray(crop.convert("RGB"), np.float32)
    alpha = np.asarray(crop.getchannel("A")) >= 128
    # The outermost pixels are anti-aliased against the old background (a pale rim on the
    # mesh's outline): trust colours only a few pixels inside the outline.
    core = np.asarray(crop.getchannel("A").filter(ImageFilter.MinFilter(7))) >= 128
    if core.sum() >= 0.25 * alpha.sum():
        alpha = core
    if alpha.any():  # average object colour per coarse cell, smoothly spread outwards
        weight = _resized(alpha, (32, 32), _BOX)
        sums = np.stack([_resized(rgb[..., k] * alpha, (32, 32), _BOX) for k in range(3)], -1)
        coarse = sums / np.maximum(weight, 1e-3)[..., None]
        coarse[weight <= 1e-3] = rgb[alpha].mean(axis=0)  # far from the object: its mean
        fill = np.stack(
            [_resized(coarse[..., k], crop.size, Image.Resampling.BILINEAR) for k in range(3)], -1
        )
        rgb = np.where(alpha[..., None], rgb, fill)
    side = min(TEXTURE_PX, 1 << max(0, crop.width - 1).bit_length())  # a power of two
    texture = Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8), "RGB")
    return texture.resize((side, side), Image.Resampling.LANCZOS)


def _resized(a: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    return np.asarray(Image.fromarray(a.astype(np.float32), "F").resize(size, resample))


def _export(inside: np.ndarray, lum: np.ndarray, texture: Image.Image, seed: int) -> bytes:
    core, used = _corners(inside)
    dist = _chamfer(core)
    for _ in range(3):  # soften the ridges a distance transform leaves along the medial axis
        dist = np.where(core, sum(_windows(dist)) / 9, 0)
    # a circular arc over the local half-width: round like a balloon, thin parts stay thin
    depth = 0.55 + 0.1 * np.random.default_rng(seed & (2**64 - 1)).random()
    height = depth * np.sqrt(dist * (2 * dist.max() - dist)) * (1 + 0.3 * (lum - 0.5))
    rows, cols = np.nonzero(used)
    x, y, z = cols / GRID - 0.5, 0.5 - rows / GRID, height[rows, cols] / GRID
    n = rows.size
    index = np.full(used.shape, -1, np.int64)
    index[rows, cols] = np.arange(n)
    r, c = np.nonzero(inside)
    tl, tr, bl, br = index[r, c], index[r, c + 1], index[r + 1, c], index[r + 1, c + 1]
    # split each cell along a diagonal that has a lifted end, so no triangle lies flat at z=0
    flip = ~core[r, c] & ~core[r + 1, c + 1]
    a = np.where(flip, np.stack([tl, bl, tr]), np.stack([tl, bl, br]))
    b = np.where(flip, np.stack([tr, bl, br]), np.stack([tl, br, tr]))
    front = np.concatenate([a.T, b.T])
    vertices = np.concatenate([np.stack([x, y, z], 1), np.stack([x, y, 0.0 - z], 1)])
    low, high = vertices.min(0), vertices.max(0)
    vertices = (vertices - (low + high) / 2) / (high - low)[:2].max()  # centred, 1 unit across
    faces = np.concatenate([front, front[:, ::-1] + n])
    uv = np.tile(np.stack([cols / GRID, 1 - rows / GRID], 1), (2, 1))
    material = trimesh.visual.material.PBRMaterial(
        name="baseColor",
        baseColorTexture=texture,
        metallicFactor=0.0,
        roughnessFactor=0.8,
    )
    mesh = trimesh.Trimesh(
        vertices=vertices,
        faces=faces,
        visual=trimesh.visual.TextureVisuals(uv=uv, material=material),
        process=False,
    )
    scene = trimesh.Scene()
    scene.add_geometry(mesh, geom_name="relief", node_name="relief")
    return scene.export(file_type="glb", include_normals=True, tree_postprocessor=_tidy_tree)


def _tidy_tree(tree: dict) -> None:
    """Say who made the file, and give buffer views the GPU targets the validator hints at."""
    tree["asset"]["generator"] = "hunyuan_assets emulator (trimesh)"
    views, accessors = tree["bufferViews"], tree["accessors"]
    for mesh in tree["meshes"]:
        mesh.pop("extras", None)  # trimesh writes an empty one
        for primitive in mesh["primitives"]:
            for accessor in primitive["attributes"].values():
                views[accessors[accessor]["bufferView"]]["target"] = 34962  # ARRAY_BUFFER
            views[accessors[primitive["indices"]]["bufferView"]]["target"] = 34963  # ELEMENT_...
