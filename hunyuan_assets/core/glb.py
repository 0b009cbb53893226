"""Inspecting GLB meshes and rendering preview images, with numpy only: no GPU, no display.

`inspect_glb` answers "is this a usable textured mesh?" for asset checks and metadata;
`render_preview` draws a shaded, textured 3/4 view as a PNG thumbnail for the Dagster UI.
"""

from __future__ import annotations

import base64
import io
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from PIL import Image

__all__ = ["MeshError", "MeshInfo", "inspect_glb", "render_preview"]

_GLB_MAGIC = b"glTF"
_CHUNK_JSON = 0x4E4F534A
_CHUNK_BIN = 0x004E4942

# Positions closer than extent / 2**20 are one vertex once welded; the 21-bit grid
# per axis packs a position into one int64 key, so welding is a 1-D np.unique.
_WELD_BITS = 20


class MeshError(ValueError):
    """The data is not a usable glTF 2.0 binary mesh; the message says why."""


@dataclass(frozen=True)
class MeshInfo:
    """What a GLB holds. `vertices`/`faces` count each stored mesh once, as written
    (split at UV seams); `welded_vertices`/`watertight` describe the placed scene
    welded by position, which is what "closed" means for a textured mesh;
    `materials`/`textures` count the glTF JSON's entries; `bounds` is (min, max) xyz."""

    file_bytes: int
    vertices: int
    faces: int
    welded_vertices: int
    watertight: bool
    materials: int
    textures: int
    has_pbr_material: bool
    has_base_color_texture: bool
    bounds: tuple[tuple[float, float, float], tuple[float, float, float]]


@dataclass(frozen=True)
class _Glb:
    data: bytes  # up to the header's length, for trimesh
    file_bytes: int
    label: str
    gltf: Mapping[str, Any]
    bin_chunk: bytes | None


@dataclass(frozen=True)
class _Part:
    """One placed instance of a mesh: world-space vertices plus its source geometry."""

    vertices: np.ndarray
    faces: np.ndarray
    mesh: trimesh.Trimesh


def inspect_glb(source: Path | bytes) -> MeshInfo:
    """Check that `source` is binary glTF 2.0 with triangles and describe it.

    Raises MeshError (a ValueError) for anything that is not glTF 2.0 binary, cannot be
    parsed, or has no triangles.
    """
    glb = _read_glb(source)
    scene = _load_scene(glb)
    meshes = [g for g in scene.geometry.values() if isinstance(g, trimesh.Trimesh)]
    faces = sum(len(m.faces) for m in meshes)
    if faces == 0:
        raise MeshError(f"{glb.label} has no geometry: no triangle meshes in the scene")
    parts = _placed_parts(scene)
    vertices, tris = _concatenate(parts)
    welded, welded_count = _weld_by_position(vertices)
    gltf = glb.gltf
    materials = _json_list(gltf, "materials")
    finite = vertices[np.isfinite(vertices).all(axis=1)]
    if len(finite) == 0:
        raise MeshError(f"{glb.label} has no geometry: no finite vertex positions")
    lo, hi = finite.min(axis=0), finite.max(axis=0)
    return MeshInfo(
        file_bytes=glb.file_bytes,
        vertices=sum(len(m.vertices) for m in meshes),
        faces=faces,
        welded_vertices=welded_count,
        watertight=_is_closed(welded[tris]),
        materials=len(materials),
        textures=len(_json_list(gltf, "textures")),
        has_pbr_material=any(
            isinstance(m, dict) and isinstance(m.get("pbrMetallicRoughness"), dict)
            for m in materials
        ),
        has_base_color_texture=any(_has_real_base_color_texture(glb, m) for m in materials),
        bounds=(
            (float(lo[0]), float(lo[1]), float(lo[2])),
            (float(hi[0]), float(hi[1]), float(hi[2])),
        ),
    )


# --------------------------------------------------------------------------- parsing


def _read_glb(source: Path | bytes) -> _Glb:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        label = f"GLB data ({len(data)} bytes)"
    else:
        path = Path(source)
        data = path.read_bytes()
        label = str(path)
    if len(data) < 20:
        raise MeshError(f"{label} is too short to be a binary glTF (GLB) file")
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    if magic != _GLB_MAGIC:
        hint = " (it looks like JSON .gltf; a binary .glb is required)" if data[:1] == b"{" else ""
        raise MeshError(
            f"{label} is not a binary glTF file: magic {magic!r}, expected {_GLB_MAGIC!r}{hint}"
        )
    if version != 2:
        raise MeshError(f"{label} is glTF version {version}; only glTF 2.0 is supported")
    if length > len(data):
        raise MeshError(f"{label} is truncated: the header says {length} bytes, got {len(data)}")
    chunk_length, chunk_type = struct.unpack_from("<II", data, 12)
    if chunk_type != _CHUNK_JSON:
        raise MeshError(f"{label} does not start with a JSON chunk (type {chunk_type:#010x})")
    if 20 + chunk_length > length:
        raise MeshError(f"{label} is truncated inside its JSON chunk")
    try:
        gltf = json.loads(data[20 : 20 + chunk_length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MeshError(f"{label} has an unreadable JSON chunk: {exc}") from exc
    if not isinstance(gltf, dict):
        raise MeshError(f"{label} has a JSON chunk that is not an object")
    asset = gltf.get("asset")
    asset_version = asset.get("version") if isinstance(asset, dict) else None
    if asset_version != "2.0":
        raise MeshError(f"{label} declares asset.version {asset_version!r}; expected '2.0'")
    bin_chunk = None
    offset = 20 + chunk_length + (-chunk_length % 4)
    if offset + 8 <= length:
        bin_length, bin_type = struct.unpack_from("<II", data, offset)
        if bin_type == _CHUNK_BIN and offset + 8 + bin_length <= length:
            bin_chunk = data[offset + 8 : offset + 8 + bin_length]
    return _Glb(
        data=data[:length], file_bytes=len(data), label=label, gltf=gltf, bin_chunk=bin_chunk
    )


def _load_scene(glb: _Glb) -> trimesh.Scene:
    try:
        # force="scene" exists on trimesh 4 and 5 (load_scene only on newer releases).
        scene = trimesh.load(io.BytesIO(glb.data), file_type="glb", force="scene")
    except Exception as exc:  # trimesh raises anything from KeyError to struct.error
        raise MeshError(f"{glb.label} could not be parsed as glTF: {exc!r}") from exc
    if not isinstance(scene, trimesh.Scene):
        raise MeshError(f"{glb.label} did not load as a scene")
    return scene


def _json_list(gltf: Mapping[str, Any], key: str) -> list[Any]:
    value = gltf.get(key)
    return value if isinstance(value, list) else []


def _has_real_base_color_texture(glb: _Glb, material: Any) -> bool:
    """baseColorTexture -> texture -> image -> embedded bytes that Pillow recognises."""
    if not isinstance(material, dict):
        return False
    pbr = material.get("pbrMetallicRoughness")
    ref = pbr.get("baseColorTexture") if isinstance(pbr, dict) else None
    texture = _json_item(glb.gltf, "textures", ref.get("index") if isinstance(ref, dict) else None)
    if texture is None:
        return False
    sources = [texture.get("source")]
    extensions = texture.get("extensions")
    if isinstance(extensions, dict):  # EXT_texture_webp, KHR_texture_basisu, ...
        sources += [e.get("source") for e in extensions.values() if isinstance(e, dict)]
    for index in sources:
        image = _json_item(glb.gltf, "images", index)
        blob = _image_bytes(glb, image) if image is not None else None
        if blob and _is_image(blob):
            return True
    return False


def _json_item(gltf: Mapping[str, Any], key: str, index: Any) -> dict[str, Any] | None:
    items = _json_list(gltf, key)
    if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(items):
        item = items[index]
        return item if isinstance(item, dict) else None
    return None


def _image_bytes(glb: _Glb, image: Mapping[str, Any]) -> bytes | None:
    """Embedded image bytes; external URIs cannot be resolved from a GLB, so None."""
    uri = image.get("uri")
    if isinstance(uri, str):
        return _data_uri(uri)
    view = _json_item(glb.gltf, "bufferViews", image.get("bufferView"))
    if view is None:
        return None
    buffer_index = view.get("buffer")
    buffer = _json_item(glb.gltf, "buffers", buffer_index)
    if buffer is None:
        return None
    if isinstance(buffer.get("uri"), str):
        blob = _data_uri(buffer["uri"])
    else:
        blob = glb.bin_chunk if buffer_index == 0 else None
    start = view.get("byteOffset", 0)
    size = view.get("byteLength")
    if blob is None or not isinstance(start, int) or not isinstance(size, int):
        return None
    if start < 0 or size <= 0 or start + size > len(blob):
        return None
    return blob[start : start + size]


def _data_uri(uri: str) -> bytes | None:
    if not uri.startswith("data:") or ";base64," not in uri:
        return None
    try:
        return base64.b64decode(uri.split(";base64,", 1)[1], validate=False)
    except ValueError:
        return None


def _is_image(blob: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(blob)) as image:
            return image.width > 0 and image.height > 0
    except Exception:  # Pillow raises several types for unknown or corrupt data
        return False


# ------------------------------------------------------------------------- geometry


def _placed_parts(scene: trimesh.Scene) -> list[_Part]:
    """Every mesh instance in world space; unplaced geometry counts at the origin."""
    parts: list[_Part] = []
    for node in sorted(scene.graph.nodes_geometry, key=str):
        transform, name = scene.graph[node]
        mesh = scene.geometry.get(name)
        if isinstance(mesh, trimesh.Trimesh) and len(mesh.faces):
            matrix = np.asarray(transform, dtype=np.float64)
            world = np.asarray(mesh.vertices, dtype=np.float64) @ matrix[:3, :3].T + matrix[:3, 3]
            parts.append(_Part(world, np.asarray(mesh.faces, dtype=np.int64), mesh))
    if not parts:
        for mesh in scene.geometry.values():
            if isinstance(mesh, trimesh.Trimesh) and len(mesh.faces):
                vertices = np.asarray(mesh.vertices, dtype=np.float64)
                parts.append(_Part(vertices, np.asarray(mesh.faces, dtype=np.int64), mesh))
    return parts


def _concatenate(parts: list[_Part]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts])
    vertices = np.concatenate([p.vertices for p in parts])
    faces = np.concatenate([p.faces + offsets[i] for i, p in enumerate(parts)])
    return vertices, faces


def _weld_by_position(vertices: np.ndarray) -> tuple[np.ndarray, int]:
    """Map each vertex to a position class (UV seams split vertices, positions do not)."""
    finite = np.isfinite(vertices).all(axis=1)
    key = -1 - np.arange(len(vertices), dtype=np.int64)  # NaN/inf: each its own class
    if finite.any():
        good = vertices[finite]
        lo = good.min(axis=0)
        extent = float((good.max(axis=0) - lo).max())
        step = extent / (1 << _WELD_BITS) if extent > 0 else 1.0
        grid = np.rint((good - lo) / step).astype(np.int64)
        key[finite] = (grid[:, 0] << 42) | (grid[:, 1] << 21) | grid[:, 2]
    unique, inverse = np.unique(key, return_inverse=True)
    return inverse.reshape(-1), len(unique)


def _is_closed(faces: np.ndarray) -> bool:
    """Every edge shared by exactly two faces (trimesh's definition of watertight)."""
    faces = faces[
        (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])
    ]
    if len(faces) == 0:
        return False
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    keys = edges[:, 0] * (int(faces.max()) + 1) + edges[:, 1]
    _, counts = np.unique(keys, return_counts=True)
    return bool(np.all(counts == 2))


# -------------------------------------------------------------------------- preview

_MARGIN = 0.08  # of the image size, on each side
_YAW = math.radians(-35.0)  # turn the front to the viewer's left, showing the right side
_PITCH = math.radians(22.0)  # look down onto the top
_LIGHT = np.array([-0.5, 0.7, 0.55]) / np.linalg.norm([-0.5, 0.7, 0.55])  # upper left
_AMBIENT = 0.28
_BACKGROUND = np.array([236, 237, 238], dtype=np.uint8)  # sRGB, light neutral
_NEUTRAL = np.array([0.72, 0.72, 0.72])  # sRGB, meshes with no colour at all
_CREASE_COS = math.cos(math.radians(50.0))  # sharper edges keep flat-shaded faces
_MAX_TEXTURE = 1024  # larger textures are box-filtered down first (a cheap mipmap)
_RASTER_BUDGET = 1 << 20  # candidate pixels per vectorised batch
_BIG_TRIANGLE = 2048  # bounding-box pixels above which a triangle is rasterised on its own
_EDGE_EPS = 1e-9  # inclusive edges: neighbours both claim a shared edge, so no cracks
_NO_FACE = np.iinfo(np.int64).max
_LINEAR_TO_SRGB8 = np.rint(  # 16-bit linear in, 8-bit sRGB out: a table beats pow()
    255.0
    * np.where(
        np.linspace(0.0, 1.0, 1 << 16) <= 0.0031308,
        np.linspace(0.0, 1.0, 1 << 16) * 12.92,
        1.055 * np.linspace(0.0, 1.0, 1 << 16) ** (1 / 2.4) - 0.055,
    )
).astype(np.uint8)
_SRGB_TO_LINEAR = np.where(
    np.arange(256) / 255.0 <= 0.04045,
    np.arange(256) / 255.0 / 12.92,
    ((np.arange(256) / 255.0 + 0.055) / 1.055) ** 2.4,
)


def render_preview(source: Path | bytes, *, size: int = 256) -> bytes:
    """Render a shaded, textured 3/4 view of the GLB as a `size` x `size` RGB PNG.

    Software rasteriser (z-buffered triangles, barycentric UVs, Lambert + ambient light),
    deterministic for the same input. Raises MeshError like `inspect_glb`.
    """
    if not 8 <= size <= 2048:
        raise ValueError(f"size must be between 8 and 2048 pixels, got {size}")
    glb = _read_glb(source)
    parts = _placed_parts(_load_scene(glb))
    if not parts:
        raise MeshError(f"{glb.label} has no geometry: no triangle meshes in the scene")
    vertices, faces = _concatenate(parts)
    finite = np.isfinite(vertices).all(axis=1)
    kept = np.flatnonzero(finite[faces].all(axis=1))  # NaN corners would wreck fit and raster
    faces = faces[kept]
    if len(faces) == 0:
        raise MeshError(f"{glb.label} has no geometry: no triangles with finite positions")
    vertices = np.where(finite[:, None], vertices, 0.0)
    rotation = _rotation(_YAW, _PITCH)
    view = vertices @ rotation.T
    supersample = 2 if size <= 512 else 1  # big previews alias less; 4x the pixels costs
    width = size * supersample
    screen = _fit_to_screen(view, faces, width)
    coefficients = _edge_coefficients(screen, faces)
    face_id = _rasterize(screen, view[:, 2], faces, coefficients, width)
    pixels = np.flatnonzero(face_id >= 0)
    fid = face_id[pixels]
    bary = _barycentrics(coefficients, fid, pixels, width)

    normals = _corner_normals(view, faces)  # (F, 3, 3) per-corner, view space
    n = np.einsum("pc,pcd->pd", bary, np.take(normals, fid, axis=0))
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    n[n[:, 2] < 0] *= -1.0  # two-sided: open or inside-out surfaces still catch the light
    lambert = np.clip(n @ _LIGHT, 0.0, None)
    sky = 0.85 + 0.15 * n[:, 1]  # a little more ambient from above reads as depth
    light = _AMBIENT * sky + (1.0 - _AMBIENT) * lambert

    albedo = _albedo(parts, kept[fid], bary)  # linear RGB
    colour = albedo * light[:, None]

    rgb = np.empty((width * width, 3), dtype=np.uint8)
    rgb[:] = _BACKGROUND
    rgb[pixels] = _linear_to_srgb8(colour)
    png = Image.fromarray(rgb.reshape(width, width, 3), "RGB")
    if supersample > 1:
        png = png.reduce(supersample)  # box filter: antialiased edges
    out = io.BytesIO()
    png.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _rotation(yaw: float, pitch: float) -> np.ndarray:
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    around_y = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    around_x = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    return around_x @ around_y


def _fit_to_screen(view: np.ndarray, faces: np.ndarray, width: int) -> np.ndarray:
    """Orthographic: x right, y down, the used vertices' box centred with a margin."""
    used = view[np.unique(faces)]
    lo, hi = used[:, :2].min(axis=0), used[:, :2].max(axis=0)
    extent = float((hi - lo).max())
    scale = width * (1.0 - 2.0 * _MARGIN) / extent if extent > 0 else 1.0
    centre = (lo + hi) / 2.0
    screen = np.empty((len(view), 2))
    screen[:, 0] = (view[:, 0] - centre[0]) * scale + width / 2.0
    screen[:, 1] = width / 2.0 - (view[:, 1] - centre[1]) * scale
    return screen


def _edge_coefficients(screen: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per face, b1 and b2 as affine functions of the pixel position: (F, 3) each."""
    p0, p1, p2 = screen[faces[:, 0]], screen[faces[:, 1]], screen[faces[:, 2]]
    e1, e2 = p1 - p0, p2 - p0
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    inv = np.divide(1.0, area, out=np.zeros_like(area), where=np.abs(area) > 1e-12)
    a1, b1 = e2[:, 1] * inv, -e2[:, 0] * inv
    a2, b2 = -e1[:, 1] * inv, e1[:, 0] * inv
    c1 = -(p0[:, 0] * a1 + p0[:, 1] * b1)
    c2 = -(p0[:, 0] * a2 + p0[:, 1] * b2)
    return np.stack([a1, b1, c1], axis=1), np.stack([a2, b2, c2], axis=1)


def _rasterize(
    screen: np.ndarray,
    depth: np.ndarray,
    faces: np.ndarray,
    coefficients: tuple[np.ndarray, np.ndarray],
    width: int,
) -> np.ndarray:
    """Nearest face index per pixel (-1 = background).

    Each candidate pixel's key packs (quantised depth << 32 | face index), so keeping the
    minimum key is the whole z-test and ties resolve to the lower face index, whatever
    order the work is done in. Small triangles (the bulk of a dense mesh) are done in
    vectorised batches of candidate pixels; big ones one by one over their bounding box.
    """
    if len(faces) >= 1 << 32:
        raise MeshError("too many faces to render a preview")
    coeff1, coeff2 = coefficients
    valid = np.abs(coeff1).sum(axis=1) > 0
    tri = screen[faces]  # (F, 3, 2)
    x_lo = np.clip(np.ceil(tri[:, :, 0].min(axis=1) - 0.5), 0, width).astype(np.int64)
    x_hi = np.clip(np.floor(tri[:, :, 0].max(axis=1) - 0.5), -1, width - 1).astype(np.int64)
    y_lo = np.clip(np.ceil(tri[:, :, 1].min(axis=1) - 0.5), 0, width).astype(np.int64)
    y_hi = np.clip(np.floor(tri[:, :, 1].max(axis=1) - 0.5), -1, width - 1).astype(np.int64)
    spans = np.maximum(x_hi - x_lo + 1, 0)
    counts = spans * np.maximum(y_hi - y_lo + 1, 0) * valid

    zf = depth[faces]  # (F, 3)
    z_near, z_far = float(zf.max()), float(zf.min())
    z_scale = ((1 << 31) - 1) / max(z_near - z_far, 1e-12)
    z0, dz1, dz2 = zf[:, 0], zf[:, 1] - zf[:, 0], zf[:, 2] - zf[:, 0]

    def depth_keys(face: np.ndarray, b1: np.ndarray, b2: np.ndarray) -> np.ndarray:
        z = z0[face] + b1 * dz1[face] + b2 * dz2[face]
        quantised = np.clip((z_near - z) * z_scale, 0, (1 << 31) - 1).astype(np.int64)
        return (quantised << 32) | face

    keys = np.full(width * width, _NO_FACE, dtype=np.int64)
    small = np.flatnonzero((counts > 0) & (counts <= _BIG_TRIANGLE))
    cumulative = np.cumsum(counts[small])
    total = int(cumulative[-1]) if len(small) else 0
    cuts = np.searchsorted(cumulative, np.arange(_RASTER_BUDGET, total, _RASTER_BUDGET))
    for batch in np.split(small, cuts) if total else []:
        n = counts[batch]
        face = np.repeat(batch, n)
        local = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        span = spans[face]
        px = x_lo[face] + local % span
        py = y_lo[face] + local // span
        cx, cy = px + 0.5, py + 0.5
        c1, c2 = np.take(coeff1, face, axis=0), np.take(coeff2, face, axis=0)
        b1 = c1[:, 0] * cx + c1[:, 1] * cy + c1[:, 2]
        b2 = c2[:, 0] * cx + c2[:, 1] * cy + c2[:, 2]
        inside = (b1 >= -_EDGE_EPS) & (b2 >= -_EDGE_EPS) & (b1 + b2 <= 1.0 + _EDGE_EPS)
        keyed = depth_keys(face[inside], b1[inside], b2[inside])
        np.minimum.at(keys, py[inside] * width + px[inside], keyed)

    for f in np.flatnonzero(counts > _BIG_TRIANGLE):
        cx = np.arange(x_lo[f], x_hi[f] + 1) + 0.5
        rows_per_band = max(1, _RASTER_BUDGET // len(cx))
        for top in range(y_lo[f], y_hi[f] + 1, rows_per_band):
            cy = np.arange(top, min(top + rows_per_band, y_hi[f] + 1))[:, None] + 0.5
            b1 = coeff1[f, 0] * cx + (coeff1[f, 1] * cy + coeff1[f, 2])
            b2 = coeff2[f, 0] * cx + (coeff2[f, 1] * cy + coeff2[f, 2])
            inside = (b1 >= -_EDGE_EPS) & (b2 >= -_EDGE_EPS) & (b1 + b2 <= 1.0 + _EDGE_EPS)
            rows, cols = np.nonzero(inside)
            pixel = (rows + top) * width + cols + x_lo[f]
            keyed = depth_keys(np.full(len(rows), f), b1[inside], b2[inside])
            keys[pixel] = np.minimum(keys[pixel], keyed)  # one face: no repeated pixels
    return np.where(keys == _NO_FACE, -1, keys & 0xFFFFFFFF)


def _barycentrics(
    coefficients: tuple[np.ndarray, np.ndarray], fid: np.ndarray, pixels: np.ndarray, width: int
) -> np.ndarray:
    """(P, 3) weights of the winning face's corners at each covered pixel centre."""
    coeff1, coeff2 = np.take(coefficients[0], fid, axis=0), np.take(coefficients[1], fid, axis=0)
    cx, cy = pixels % width + 0.5, pixels // width + 0.5
    b1 = coeff1[:, 0] * cx + coeff1[:, 1] * cy + coeff1[:, 2]
    b2 = coeff2[:, 0] * cx + coeff2[:, 1] * cy + coeff2[:, 2]
    bary = np.clip(np.stack([1.0 - b1 - b2, b1, b2], axis=1), 0.0, 1.0)
    return bary / np.maximum(bary.sum(axis=1, keepdims=True), 1e-12)


def _corner_normals(view: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Smooth normals across UV seams (welded by position), flat across sharp creases."""
    welded, count = _weld_by_position(view)
    corners = view[faces]
    cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    face_n = cross / np.maximum(np.linalg.norm(cross, axis=1, keepdims=True), 1e-12)
    # Weight by the corner angle, so how a flat side is triangulated does not tilt the normal.
    edge_in = corners - np.roll(corners, 1, axis=1)
    edge_out = np.roll(corners, -1, axis=1) - corners
    edge_in /= np.maximum(np.linalg.norm(edge_in, axis=2, keepdims=True), 1e-12)
    edge_out /= np.maximum(np.linalg.norm(edge_out, axis=2, keepdims=True), 1e-12)
    angle = np.arccos(np.clip(-np.einsum("fcd,fcd->fc", edge_in, edge_out), -1.0, 1.0))
    ids = welded[faces].reshape(-1)
    weighted = (face_n[:, None, :] * angle[:, :, None]).reshape(-1, 3)
    vertex_n = np.stack(
        [np.bincount(ids, weights=weighted[:, k], minlength=count) for k in range(3)], axis=1
    )
    vertex_n = vertex_n / np.maximum(np.linalg.norm(vertex_n, axis=1, keepdims=True), 1e-12)
    corner_n = vertex_n[welded[faces]]  # (F, 3, 3)
    smooth = np.einsum("fcd,fd->fc", corner_n, face_n) >= _CREASE_COS
    return np.where(smooth[:, :, None], corner_n, face_n[:, None, :])


def _albedo(parts: list[_Part], fid: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Linear RGB base colour per covered pixel (`fid` indexes all parts' faces in order)."""
    albedo = np.empty((len(fid), 3))
    face_start = np.cumsum([0] + [len(p.faces) for p in parts])
    owner = np.searchsorted(face_start, fid, side="right") - 1
    for index, part in enumerate(parts):
        mine = np.flatnonzero(owner == index)
        if len(mine):
            local = fid[mine] - face_start[index]
            corners = np.take(part.faces, local, axis=0)
            albedo[mine] = _part_albedo(part.mesh, corners, bary[mine], local)
    return albedo


def _part_albedo(
    mesh: trimesh.Trimesh, corners: np.ndarray, bary: np.ndarray, local_faces: np.ndarray
) -> np.ndarray:
    visual = mesh.visual
    kind = getattr(visual, "kind", None)
    if kind == "texture":
        material = getattr(visual, "material", None)
        image = getattr(material, "baseColorTexture", None)
        if image is None:
            image = getattr(material, "image", None)  # SimpleMaterial
        factor = _material_factor(material)
        uv = getattr(visual, "uv", None)
        if image is not None and uv is not None and len(uv) == len(mesh.vertices):
            uv = np.asarray(uv, dtype=np.float64)
            texel_uv = np.einsum("pc,pcd->pd", bary, np.take(uv, corners, axis=0))
            return _sample_texture(image, texel_uv) * (1.0 if factor is None else factor)
        if factor is not None:
            return np.broadcast_to(factor, (len(bary), 3))
    elif isinstance(visual, trimesh.visual.ColorVisuals) and kind == "vertex":
        colours = _srgb8_to_linear(np.asarray(visual.vertex_colors)[:, :3])
        return np.einsum("pc,pcd->pd", bary, np.take(colours, corners, axis=0))
    elif isinstance(visual, trimesh.visual.ColorVisuals) and kind == "face":
        return _srgb8_to_linear(np.asarray(visual.face_colors)[local_faces, :3])
    return np.broadcast_to(_srgb_to_linear(_NEUTRAL), (len(bary), 3))


def _material_factor(material: Any) -> np.ndarray | None:
    """Linear RGB base colour: baseColorFactor (PBR) or diffuse (simple), if set."""
    for name in ("baseColorFactor", "diffuse"):
        value = getattr(material, name, None)
        if value is not None:
            rgba = np.asarray(value).reshape(-1)
            if rgba.size >= 3:
                # trimesh keeps colours as uint8 RGBA; glTF factors are linear already.
                scale = 255.0 if np.issubdtype(rgba.dtype, np.integer) else 1.0
                return rgba[:3].astype(np.float64) / scale
    return None


def _sample_texture(image: Image.Image, uv: np.ndarray) -> np.ndarray:
    """Bilinear, wrapping (glTF's default sampler); trimesh has flipped V to OBJ's convention."""
    if max(image.size) > _MAX_TEXTURE:
        ratio = _MAX_TEXTURE / max(image.size)
        image = image.resize(
            (max(1, round(image.width * ratio)), max(1, round(image.height * ratio))),
            Image.Resampling.BOX,
        )
    texels = np.asarray(image.convert("RGB"))
    height, width = texels.shape[:2]
    x = uv[:, 0] * width - 0.5
    y = (1.0 - uv[:, 1]) * height - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0 = x0.astype(np.int64) % width
    y0 = y0.astype(np.int64) % height
    x1, y1 = (x0 + 1) % width, (y0 + 1) % height
    lut = _SRGB_TO_LINEAR
    top = lut[texels[y0, x0]] * (1 - fx) + lut[texels[y0, x1]] * fx
    bottom = lut[texels[y1, x0]] * (1 - fx) + lut[texels[y1, x1]] * fx
    return top * (1 - fy) + bottom * fy


def _srgb8_to_linear(values: np.ndarray) -> np.ndarray:
    return _SRGB_TO_LINEAR[np.asarray(values, dtype=np.uint8)]


def _srgb_to_linear(values: np.ndarray) -> np.ndarray:
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb8(values: np.ndarray) -> np.ndarray:
    index = np.rint(np.clip(values, 0.0, 1.0) * (len(_LINEAR_TO_SRGB8) - 1)).astype(np.int64)
    return _LINEAR_TO_SRGB8[index]
