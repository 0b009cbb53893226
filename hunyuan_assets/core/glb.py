"""Inspecting GLB meshes and rendering preview images, with numpy only: no GPU, no display.

`analyse_glb` does what the pipeline needs for one mesh from one parse: the facts asset
checks use (`MeshInfo`), a shaded, textured 3/4 view as a PNG and a small JPEG thumbnail
of it. It is a top-level function of picklable values, so it can run in a worker process.
`inspect_glb` and `render_preview` are its two halves, for callers that need only one.

The GLB is read straight into numpy (accessors, the node tree, materials) rather than
through a trimesh Scene, and the base-colour texture is decoded only at the resolution the
preview needs (JPEG's DCT scaling): building the Scene and decoding a 2048 px texture in
full cost more than all the rest together.
"""

from __future__ import annotations

import base64
import io
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
from PIL import Image, ImageFilter

__all__ = [
    "MeshAnalysis",
    "MeshError",
    "MeshInfo",
    "thumbnail_of",
    "analyse_glb",
    "inspect_glb",
    "render_preview",
]

_GLB_MAGIC = b"glTF"
_CHUNK_JSON = 0x4E4F534A
_CHUNK_BIN = 0x004E4942

# Positions closer than extent / 2**20 are one vertex once welded; the 21-bit grid
# per axis packs a position into one int64 key, so welding is a 1-D np.unique.
_WELD_BITS = 20

_COMPONENT_TYPES: dict[Any, np.dtype] = {
    5120: np.dtype("<i1"),
    5121: np.dtype("<u1"),
    5122: np.dtype("<i2"),
    5123: np.dtype("<u2"),
    5125: np.dtype("<u4"),
    5126: np.dtype("<f4"),
}
_TYPE_WIDTHS: dict[Any, int] = {
    "SCALAR": 1,
    "VEC2": 2,
    "VEC3": 3,
    "VEC4": 4,
    "MAT2": 4,
    "MAT3": 9,
    "MAT4": 16,
}
_TRIANGLES, _TRIANGLE_STRIP, _TRIANGLE_FAN = 4, 5, 6
_CLAMP_TO_EDGE = 33071
# Extensions that change how geometry is stored: without a decoder the accessors are empty.
_GEOMETRY_EXTENSIONS = ("KHR_draco_mesh_compression", "EXT_meshopt_compression")


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
class MeshAnalysis:
    """`analyse_glb`'s answer: the inspection, the preview PNG and its JPEG thumbnail."""

    info: MeshInfo
    preview_png: bytes
    thumbnail_jpeg: bytes


def analyse_glb(
    source: Path | bytes, *, preview_size: int = 256, thumbnail_edge: int = 192
) -> MeshAnalysis:
    """Inspect the GLB and render its preview from one parse, plus a JPEG thumbnail of at
    most `thumbnail_edge` px (small enough to inline in every event's metadata).

    Raises MeshError like `inspect_glb`, ValueError for a silly size."""
    _check_size(preview_size)
    if thumbnail_edge < 8:
        raise ValueError(f"thumbnail_edge must be at least 8 pixels, got {thumbnail_edge}")
    scene = _load(source)
    info = _inspect(scene)
    rgb = _render(scene, preview_size)
    return MeshAnalysis(info, _png(rgb), _thumbnail(rgb, thumbnail_edge))


def inspect_glb(source: Path | bytes) -> MeshInfo:
    """Check that `source` is binary glTF 2.0 with triangles and describe it.

    Raises MeshError (a ValueError) for anything that is not glTF 2.0 binary, cannot be
    parsed, or has no triangles.
    """
    return _inspect(_load(source))


def render_preview(source: Path | bytes, *, size: int = 256) -> bytes:
    """Render a shaded, textured 3/4 view of the GLB as a `size` x `size` RGB PNG.

    Software rasteriser (z-buffered triangles, barycentric UVs, Lambert + ambient light),
    deterministic for the same input. Raises MeshError like `inspect_glb`.
    """
    _check_size(size)
    return _png(_render(_load(source), size))


def _check_size(size: int) -> None:
    if not 8 <= size <= 2048:
        raise ValueError(f"size must be between 8 and 2048 pixels, got {size}")


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class _Glb:
    file_bytes: int
    label: str
    gltf: Mapping[str, Any]
    bin_chunk: memoryview | None


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
            bin_chunk = memoryview(data)[offset + 8 : offset + 8 + bin_length]
    return _Glb(file_bytes=len(data), label=label, gltf=gltf, bin_chunk=bin_chunk)


class _Malformed(Exception):
    """Raised inside the parser; `_load` turns it into a MeshError naming the file."""


class _Document:
    """Typed, checked access to the glTF JSON and its buffers; accessors decoded once."""

    def __init__(self, glb: _Glb) -> None:
        self.glb = glb
        self.gltf = glb.gltf
        self._accessors: dict[int, np.ndarray] = {}

    def item(self, key: str, index: Any) -> dict[str, Any]:
        item = _json_item(self.gltf, key, index)
        if item is None:
            raise _Malformed(f"{key}[{index!r}] does not exist")
        return item

    def buffer(self, index: Any) -> memoryview:
        buffer = self.item("buffers", index)
        uri = buffer.get("uri")
        if isinstance(uri, str):
            blob = _data_uri(uri)
            if blob is None:
                raise _Malformed(f"buffers[{index}] is an external file, which a GLB cannot use")
            return memoryview(blob)
        if index != 0 or self.glb.bin_chunk is None:
            raise _Malformed(f"buffers[{index}] has no data (no BIN chunk)")
        return self.glb.bin_chunk

    def accessor(self, index: Any) -> np.ndarray:
        """(count, width) array of the accessor's components, as stored."""
        if isinstance(index, int) and index in self._accessors:
            return self._accessors[index]
        spec = self.item("accessors", index)
        dtype = _COMPONENT_TYPES.get(spec.get("componentType"))
        width = _TYPE_WIDTHS.get(spec.get("type"))
        count = spec.get("count")
        if dtype is None or width is None or not _is_count(count):
            raise _Malformed(f"accessors[{index}] has an invalid componentType/type/count")
        if "bufferView" in spec:
            array = self._view_data(spec, dtype, width, count)
        else:
            array = np.zeros((count, width), dtype)
        if isinstance(spec.get("sparse"), dict):
            array = self._sparse(spec["sparse"], array, index)
        self._accessors[index] = array
        return array

    def _view_data(self, spec: Mapping[str, Any], dtype: np.dtype, width: int, count: int):
        view = self.item("bufferViews", spec["bufferView"])
        data = self.buffer(view.get("buffer"))
        view_start, view_length = view.get("byteOffset", 0), view.get("byteLength")
        offset = spec.get("byteOffset", 0)
        if not (_is_count(view_start) and _is_count(view_length) and _is_count(offset)):
            raise _Malformed(f"bufferViews[{spec['bufferView']}] has an invalid range")
        if view_start + view_length > len(data):
            raise _Malformed(f"bufferViews[{spec['bufferView']}] runs past its buffer")
        item = dtype.itemsize * width
        stride = view.get("byteStride") or item
        if not _is_count(stride) or stride < item:
            raise _Malformed(f"bufferViews[{spec['bufferView']}] has an invalid byteStride")
        needed = (count - 1) * stride + item if count else 0
        if offset + needed > view_length:
            raise _Malformed(f"an accessor on bufferViews[{spec['bufferView']}] runs past it")
        start = view_start + offset
        if stride == item:
            return np.frombuffer(data, dtype, count * width, start).reshape(count, width)
        rows = np.lib.stride_tricks.as_strided(
            np.frombuffer(data, np.uint8, needed, start), (count, item), (stride, 1)
        )
        return np.ascontiguousarray(rows).view(dtype).reshape(count, width)

    def _sparse(self, sparse: Mapping[str, Any], array: np.ndarray, index: Any) -> np.ndarray:
        count = sparse.get("count")
        where, values = sparse.get("indices"), sparse.get("values")
        if not _is_count(count) or not isinstance(where, dict) or not isinstance(values, dict):
            raise _Malformed(f"accessors[{index}] has an invalid sparse block")
        index_type = _COMPONENT_TYPES.get(where.get("componentType"))
        if index_type is None:
            raise _Malformed(f"accessors[{index}] has invalid sparse indices")
        rows = self._view_data(where, index_type, 1, count).reshape(-1).astype(np.int64)
        patch = self._view_data(values, array.dtype, array.shape[1], count)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(array)):
            raise _Malformed(f"accessors[{index}] has sparse indices out of range")
        array = array.copy()
        array[rows] = patch
        return array

    def floats(self, index: Any) -> np.ndarray:
        """The accessor as float64, normalised integers scaled to [0, 1] / [-1, 1]."""
        array = self.accessor(index)
        if array.dtype.kind == "f":
            return array.astype(np.float64)
        if self.item("accessors", index).get("normalized"):
            scale = float(np.iinfo(array.dtype).max)
            return np.maximum(array / scale, -1.0)
        return array.astype(np.float64)


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass
class _Primitive:
    """One triangle primitive of one mesh, in the mesh's own space."""

    spec: Mapping[str, Any]
    positions: np.ndarray  # (V, 3) float64
    faces: np.ndarray  # (F, 3) int64


@dataclass
class _Scene:
    """A parsed GLB: every primitive once (for the counts) and the placed instances."""

    doc: _Document
    primitives: list[_Primitive]
    vertices: np.ndarray  # (N, 3) world space, all placed instances
    faces: np.ndarray  # (F, 3) into `vertices`
    parts: list[tuple[_Primitive, int, int]]  # (primitive, first vertex, first face)
    matrices: list[np.ndarray]  # each part's 4x4 world matrix
    _welded: tuple[np.ndarray, int] | None = field(default=None, repr=False)
    _topology: tuple[bool, bool] | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return self.doc.glb.label

    def welded(self) -> tuple[np.ndarray, int]:
        """Position class of each vertex and how many classes (computed once, shared by the
        inspection and the preview's normals)."""
        if self._welded is None:
            self._welded = _weld_by_position(self.vertices)
        return self._welded

    def topology(self) -> tuple[bool, bool]:
        """(closed, consistently wound) once welded by position; computed once."""
        if self._topology is None:
            self._topology = _edge_topology(self.welded()[0][self.faces])
        return self._topology

    def cullable(self) -> bool:
        """One placed mesh, closed and consistently wound: every face turned away from the
        viewer is hidden by a nearer one, so the preview may skip them. (Several parts could
        be wound opposite ways, e.g. a mirrored instance; they are drawn in full.)"""
        closed, consistent = self.topology()
        return len(self.parts) == 1 and closed and consistent

    def stored_normals(self) -> np.ndarray | None:
        """World-space NORMAL per vertex when every placed part has them, else None."""
        normals = []
        for (primitive, _, _), matrix in zip(self.parts, self.matrices, strict=True):
            index = primitive.spec["attributes"].get("NORMAL")
            if index is None:
                return None
            stored = self.doc.floats(index)
            if stored.shape != primitive.positions.shape:
                return None
            # Normals transform with the inverse transpose (non-uniform scale, mirroring).
            linear = matrix[:3, :3]
            det = np.linalg.det(linear)
            if abs(det) < 1e-300:
                return None
            normals.append(_times(stored, np.linalg.inv(linear).T))
        return np.concatenate(normals)


def _load(source: Path | bytes) -> _Scene:
    glb = _read_glb(source)
    doc = _Document(glb)
    try:
        return _scene(doc)
    except MeshError:
        raise
    except _Malformed as exc:
        raise MeshError(f"{glb.label} could not be parsed as glTF: {exc}") from None
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        # Malformed JSON values the checks above did not foresee (wrong types, huge counts).
        raise MeshError(f"{glb.label} could not be parsed as glTF: {exc!r}") from exc


def _scene(doc: _Document) -> _Scene:
    required = _json_list(doc.gltf, "extensionsRequired")
    unsupported = [name for name in _GEOMETRY_EXTENSIONS if name in required]
    if unsupported:
        raise MeshError(f"{doc.glb.label} uses {', '.join(unsupported)}, which is not supported")
    meshes: dict[int, list[_Primitive]] = {}
    for index, mesh in enumerate(_json_list(doc.gltf, "meshes")):
        if not isinstance(mesh, dict):
            raise _Malformed(f"meshes[{index}] is not an object")
        meshes[index] = [
            p for spec in _json_list(mesh, "primitives") if (p := _primitive(doc, spec))
        ]
    primitives = [p for group in meshes.values() for p in group]
    if not any(len(p.faces) for p in primitives):
        raise MeshError(f"{doc.glb.label} has no geometry: no triangle meshes in the scene")
    placed = _placements(doc, meshes)
    if not any(len(p.faces) for p, _ in placed):  # nothing placed: each mesh once, unmoved
        placed = [(p, np.eye(4)) for p in primitives]
    parts, matrices, vertices, faces = [], [], [], []
    first_vertex = first_face = 0
    for primitive, matrix in placed:
        if not len(primitive.faces):
            continue
        vertices.append(_times(primitive.positions, matrix[:3, :3]) + matrix[:3, 3])
        faces.append(primitive.faces + first_vertex)
        parts.append((primitive, first_vertex, first_face))
        matrices.append(matrix)
        first_vertex += len(primitive.positions)
        first_face += len(primitive.faces)
    return _Scene(doc, primitives, np.concatenate(vertices), np.concatenate(faces), parts, matrices)


def _primitive(doc: _Document, spec: Any) -> _Primitive | None:
    """The primitive's triangles, or None for points and lines (not a surface)."""
    if not isinstance(spec, dict):
        raise _Malformed("a mesh primitive is not an object")
    mode = spec.get("mode", _TRIANGLES)
    attributes = spec.get("attributes")
    if mode not in (_TRIANGLES, _TRIANGLE_STRIP, _TRIANGLE_FAN):
        return None
    if not isinstance(attributes, dict) or "POSITION" not in attributes:
        raise _Malformed("a triangle primitive has no POSITION attribute")
    positions = doc.floats(attributes["POSITION"])
    if positions.shape[1] != 3:
        raise _Malformed("POSITION is not a VEC3 accessor")
    if "indices" in spec:
        indices = doc.accessor(spec["indices"])
        if indices.shape[1] != 1 or indices.dtype.kind != "u":
            raise _Malformed("indices are not unsigned integer scalars")
        corners = indices.reshape(-1).astype(np.int64)
    else:
        corners = np.arange(len(positions), dtype=np.int64)
    if len(corners) and int(corners.max()) >= len(positions):
        raise _Malformed("indices point past the end of the vertex list")
    return _Primitive(spec, positions, _triangles(corners, mode))


def _triangles(corners: np.ndarray, mode: int) -> np.ndarray:
    if mode == _TRIANGLES:
        return corners[: len(corners) - len(corners) % 3].reshape(-1, 3)
    n = max(0, len(corners) - 2)
    i = np.arange(n)
    if mode == _TRIANGLE_FAN:
        return np.stack([np.full(n, corners[0]), corners[i + 1], corners[i + 2]], axis=1)
    odd = i % 2 == 1  # every other strip triangle is wound the other way round
    first = np.where(odd, corners[i + 1], corners[i])
    second = np.where(odd, corners[i], corners[i + 1])
    return np.stack([first, second, corners[i + 2]], axis=1)


def _placements(
    doc: _Document, meshes: Mapping[int, list[_Primitive]]
) -> list[tuple[_Primitive, np.ndarray]]:
    """Every primitive of every mesh node of the default scene, with its world matrix."""
    scene = _json_item(doc.gltf, "scenes", doc.gltf.get("scene", 0))
    if scene is None:
        return []
    nodes = _json_list(doc.gltf, "nodes")
    placed: list[tuple[_Primitive, np.ndarray]] = []
    stack = [(root, np.eye(4), 0) for root in reversed(_json_list(scene, "nodes"))]
    while stack:
        index, parent, depth = stack.pop()
        if depth > len(nodes):
            raise _Malformed("the node hierarchy has a cycle")
        node = doc.item("nodes", index)
        matrix = parent @ _local_matrix(node)
        if "mesh" in node:
            if node["mesh"] not in meshes:
                raise _Malformed(f"nodes[{index}] points at meshes[{node['mesh']!r}], missing")
            placed += [(p, matrix) for p in meshes[node["mesh"]]]
        stack += [(child, matrix, depth + 1) for child in reversed(_json_list(node, "children"))]
    return placed


def _local_matrix(node: Mapping[str, Any]) -> np.ndarray:
    if "matrix" in node:
        return np.asarray(node["matrix"], dtype=np.float64).reshape(4, 4).T  # column-major
    x, y, z, w = np.asarray(node.get("rotation", (0.0, 0.0, 0.0, 1.0)), dtype=np.float64)
    rotation = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    matrix = np.eye(4)
    matrix[:3, :3] = rotation * np.asarray(node.get("scale", (1.0, 1.0, 1.0)), dtype=np.float64)
    matrix[:3, 3] = np.asarray(node.get("translation", (0.0, 0.0, 0.0)), dtype=np.float64)
    return matrix


def _times(points: np.ndarray, linear: np.ndarray) -> np.ndarray:
    """`points @ linear.T` for (N, 3) points, without BLAS: OpenBLAS runs a product this
    small on all its threads, which then spin, doubling the CPU time of the whole preview."""
    return np.einsum("nj,ij->ni", points, linear)


def _json_list(gltf: Mapping[str, Any], key: str) -> list[Any]:
    value = gltf.get(key)
    return value if isinstance(value, list) else []


def _json_item(gltf: Mapping[str, Any], key: str, index: Any) -> dict[str, Any] | None:
    items = _json_list(gltf, key)
    if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(items):
        item = items[index]
        return item if isinstance(item, dict) else None
    return None


def _data_uri(uri: str) -> bytes | None:
    if not uri.startswith("data:") or ";base64," not in uri:
        return None
    try:
        return base64.b64decode(uri.split(";base64,", 1)[1], validate=False)
    except ValueError:
        return None


# ------------------------------------------------------------------------ inspection


def _inspect(scene: _Scene) -> MeshInfo:
    gltf = scene.doc.gltf
    finite_rows = _finite_rows(scene.vertices)
    finite = scene.vertices if finite_rows is None else scene.vertices[finite_rows]
    if len(finite) == 0:
        raise MeshError(f"{scene.label} has no geometry: no finite vertex positions")
    lo, hi = _bounds(finite)
    welded, welded_count = scene.welded()
    materials = _json_list(gltf, "materials")
    return MeshInfo(
        file_bytes=scene.doc.glb.file_bytes,
        vertices=sum(len(p.positions) for p in scene.primitives),
        faces=sum(len(p.faces) for p in scene.primitives),
        welded_vertices=welded_count,
        watertight=scene.topology()[0],
        materials=len(materials),
        textures=len(_json_list(gltf, "textures")),
        has_pbr_material=any(
            isinstance(m, dict) and isinstance(m.get("pbrMetallicRoughness"), dict)
            for m in materials
        ),
        has_base_color_texture=any(
            _base_color_image(scene.doc, m, check=_is_image) is not None for m in materials
        ),
        bounds=(
            (float(lo[0]), float(lo[1]), float(lo[2])),
            (float(hi[0]), float(hi[1]), float(hi[2])),
        ),
    )


def _base_color_image(doc: _Document, material: Any, check: Any) -> Any:
    """baseColorTexture -> texture -> image -> embedded bytes, the first for which
    `check(bytes)` is not None (the texture's own source, then extension sources such as
    EXT_texture_webp)."""
    if not isinstance(material, dict):
        return None
    pbr = material.get("pbrMetallicRoughness")
    ref = pbr.get("baseColorTexture") if isinstance(pbr, dict) else None
    texture = _json_item(doc.gltf, "textures", ref.get("index") if isinstance(ref, dict) else None)
    if texture is None:
        return None
    sources = [texture.get("source")]
    extensions = texture.get("extensions")
    if isinstance(extensions, dict):
        sources += [e.get("source") for e in extensions.values() if isinstance(e, dict)]
    for index in sources:
        image = _json_item(doc.gltf, "images", index)
        blob = _image_bytes(doc, image) if image is not None else None
        if blob:
            found = check(blob)
            if found is not None:
                return found
    return None


def _image_bytes(doc: _Document, image: Mapping[str, Any]) -> bytes | None:
    """Embedded image bytes; external URIs cannot be resolved from a GLB, so None."""
    uri = image.get("uri")
    if isinstance(uri, str):
        return _data_uri(uri)
    view = _json_item(doc.gltf, "bufferViews", image.get("bufferView"))
    if view is None:
        return None
    try:
        blob = doc.buffer(view.get("buffer"))
    except _Malformed:
        return None
    start, size = view.get("byteOffset", 0), view.get("byteLength")
    if not _is_count(start) or not _is_count(size) or size == 0 or start + size > len(blob):
        return None
    return bytes(blob[start : start + size])


def _is_image(blob: bytes) -> bool | None:
    """True when Pillow recognises the bytes (the header only: no decoding), else None."""
    try:
        with Image.open(io.BytesIO(blob)) as image:
            return True if image.width > 0 and image.height > 0 else None
    except Exception:  # Pillow raises several types for unknown or corrupt data
        return None


def _finite_rows(points: np.ndarray) -> np.ndarray | None:
    """Which rows of an (N, k) array are all finite, or None when every one is: the usual
    case, told ~30x cheaper than the row mask, which numpy reduces slowly over short rows."""
    finite = np.isfinite(points)
    return None if finite.all() else finite.all(axis=1)


def _bounds(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column (min, max) of an (N, k) array, one column at a time: numpy's axis=0
    reductions over short rows are ~9x slower."""
    columns = range(points.shape[1])
    lo = np.array([points[:, k].min() for k in columns], dtype=points.dtype)
    hi = np.array([points[:, k].max() for k in columns], dtype=points.dtype)
    return lo, hi


def _weld_by_position(vertices: np.ndarray) -> tuple[np.ndarray, int]:
    """Map each vertex to a position class (UV seams split vertices, positions do not)."""
    finite = _finite_rows(vertices)
    good = vertices if finite is None else vertices[finite]
    grid_key = None
    if len(good):
        lo, hi = _bounds(good)
        extent = float((hi - lo).max())
        step = extent / (1 << _WELD_BITS) if extent > 0 else 1.0
        grid = np.rint((good - lo) / step).astype(np.int64)
        grid_key = (grid[:, 0] << 42) | (grid[:, 1] << 21) | grid[:, 2]
    if finite is None and grid_key is not None:
        key = grid_key
    else:
        key = -1 - np.arange(len(vertices), dtype=np.int64)  # NaN/inf: each its own class
        if grid_key is not None:
            key[finite] = grid_key
    return _classes(key)


def _classes(key: np.ndarray) -> tuple[np.ndarray, int]:
    """`np.unique(key, return_inverse=True)` as (inverse, count), by a stable argsort: a
    mesh's vertices come in runs of nearby positions, which a merge sort takes as they are
    (0.86 -> 0.21 ms on 22k vertices; 0.27 -> 0.25 ms shuffled)."""
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    new = np.empty(len(key), dtype=bool)
    new[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    inverse = np.empty(len(key), dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return inverse, int(new.sum())


def _edge_topology(faces: np.ndarray) -> tuple[bool, bool]:
    """(closed, consistently wound): closed when every edge is shared by exactly two faces
    (trimesh's definition of watertight), consistent when those two run it in opposite
    directions. Degenerate faces (a repeated vertex) are left out. One sort of the edges."""
    faces = faces[
        (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])
    ]
    if len(faces) == 0:
        return False, False
    start, end = faces.reshape(-1), faces[:, [1, 2, 0]].reshape(-1)
    low, high = np.minimum(start, end), np.maximum(start, end)
    # The edge's key, with its direction in the lowest bit. Sorted by a merge sort: faces
    # come in runs of neighbours, so their keys do too (5.8 -> 2.1 ms on a 40k-face mesh).
    # On shuffled faces it is slower than numpy's default sort by what the pair checks
    # below save by taking flat slices instead of (E/2, 2) rows: 5.8 -> 5.7 ms.
    keys = ((low * (int(faces.max()) + 1) + high) << 1) | (start > end)
    keys.sort(kind="stable")
    if len(keys) % 2:
        return False, False
    first, second = keys[0::2], keys[1::2]
    edge_first, edge_second = first >> 1, second >> 1
    # Sorted, every edge must come exactly twice: pairs agree, neighbouring pairs differ.
    closed = bool(
        np.array_equal(edge_first, edge_second) and np.all(edge_first[1:] != edge_second[:-1])
    )
    consistent = closed and not bool((first & 1).any()) and bool((second & 1).all())
    return closed, consistent


# -------------------------------------------------------------------------- preview

_MARGIN = 0.08  # of the image size, on each side
_YAW = math.radians(-35.0)  # turn the front to the viewer's left, showing the right side
_PITCH = math.radians(22.0)  # look down onto the top
_LIGHT = np.array([-0.5, 0.7, 0.55]) / np.linalg.norm([-0.5, 0.7, 0.55])  # upper left
_AMBIENT = 0.28
_BACKGROUND = np.array([236, 237, 238], dtype=np.uint8)  # sRGB, light neutral
_NEUTRAL = np.array([0.72, 0.72, 0.72])  # sRGB, meshes with no colour at all
_CREASE_COS = math.cos(math.radians(50.0))  # sharper edges keep flat-shaded faces
_TEXELS_PER_PIXEL = 2  # textures are decoded at about twice the render's width (a mipmap)
_MAX_TEXTURE = 1024
_RASTER_BUDGET = 1 << 20  # candidate pixels per vectorised batch
_BIG_TRIANGLE = 2048  # bounding-box pixels above which a triangle is rasterised on its own
_EDGE_EPS = 1e-9  # inclusive edges: neighbours both claim a shared edge, so no cracks
_NO_FACE = np.iinfo(np.int64).max
_THUMBNAIL_QUALITY = 82
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


def _render(scene: _Scene, size: int, supersample: int = 1) -> np.ndarray:
    """The shaded, textured view as a (size, size, 3) sRGB uint8 array.

    Rendered at the output size (supersampling would cost 4x the pixels for every step
    below), then the silhouette's staircase is softened, which is where aliasing shows."""
    width = size * supersample
    vertices, faces = scene.vertices, scene.faces
    finite = _finite_rows(vertices)
    rotation = _rotation(_YAW, _PITCH)
    if finite is None:
        kept, kept_faces = np.arange(len(faces)), faces
        view = _times(vertices, rotation)
    else:
        kept = np.flatnonzero(finite[faces].all(axis=1))  # NaN corners would wreck the raster
        kept_faces = faces[kept]
        view = _times(np.where(finite[:, None], vertices, 0.0), rotation)
    if len(kept) == 0:
        raise MeshError(f"{scene.label} has no geometry: no triangles with finite positions")
    screen = _fit_to_screen(view, kept_faces, width)
    candidates, coefficients, face_id = _rasterize(
        screen, view[:, 2], kept_faces, width, cull=scene.cullable()
    )
    pixels = np.flatnonzero(face_id >= 0)
    winner = face_id[pixels]
    bary = _barycentrics(coefficients, winner, pixels, width)
    fid = kept[candidates[winner]]  # index into scene.faces

    stored = scene.stored_normals()
    if stored is not None:
        n = _interpolated_normals(_times(stored, rotation), faces, fid, bary)
    else:
        welded, count = scene.welded()
        n = _pixel_normals(view, faces, welded, count, fid, bary)
    lambert = np.clip(n[:, 0] * _LIGHT[0] + n[:, 1] * _LIGHT[1] + n[:, 2] * _LIGHT[2], 0.0, None)
    sky = 0.85 + 0.15 * n[:, 1]  # a little more ambient from above reads as depth
    light = _AMBIENT * sky + (1.0 - _AMBIENT) * lambert
    colour = _albedo(scene, fid, bary, width) * light[:, None]

    rgb = np.empty((width * width, 3), dtype=np.uint8)
    rgb[:] = _BACKGROUND
    rgb[pixels] = _linear_to_srgb8(colour)
    image = Image.fromarray(rgb.reshape(width, width, 3), "RGB")
    if supersample > 1:
        return np.asarray(image.reduce(supersample))  # box filter: antialiased edges
    covered = np.zeros((width, width), dtype=bool)
    covered.reshape(-1)[pixels] = True
    return _soften_silhouette(rgb.reshape(width, width, 3), covered)


def _soften_silhouette(rgb: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Blend the pixels on either side of the outline with their 3x3 neighbourhood: the
    staircase reads as a smooth edge, the inside stays sharp. About a millisecond."""
    padded = np.pad(covered, 1, mode="edge")
    shifted = [padded[1:-1, :-2], padded[1:-1, 2:], padded[:-2, 1:-1], padded[2:, 1:-1]]
    outline = np.logical_or.reduce([s != covered for s in shifted])
    if not outline.any():
        return rgb
    blurred = np.asarray(Image.fromarray(rgb, "RGB").filter(ImageFilter.BoxBlur(1)))
    return np.where(outline[:, :, None], blurred, rgb)


def _png(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    # Level 1: a third of the time of the default level 6, for a few percent more bytes
    # (the flat background compresses well at any level).
    Image.fromarray(rgb, "RGB").save(out, format="PNG", compress_level=1)
    return out.getvalue()


def thumbnail_of(png: bytes, edge: int = 192) -> bytes:
    """The JPEG thumbnail `analyse_glb` makes, from a stored preview PNG."""
    with Image.open(io.BytesIO(png)) as image:
        return _thumbnail(np.asarray(image.convert("RGB")), edge)


def _thumbnail(rgb: np.ndarray, edge: int) -> bytes:
    image = Image.fromarray(rgb, "RGB")
    image.thumbnail((edge, edge))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=_THUMBNAIL_QUALITY)
    return out.getvalue()


def _rotation(yaw: float, pitch: float) -> np.ndarray:
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    around_y = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    around_x = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    return around_x @ around_y


def _fit_to_screen(view: np.ndarray, faces: np.ndarray, width: int) -> np.ndarray:
    """Orthographic: x right, y down, the used vertices' box centred with a margin."""
    in_use = np.zeros(len(view), dtype=bool)
    in_use[faces.reshape(-1)] = True
    lo, hi = _bounds(view[:, :2] if in_use.all() else view[in_use, :2])
    extent = float((hi - lo).max())
    scale = width * (1.0 - 2.0 * _MARGIN) / extent if extent > 0 else 1.0
    centre = (lo + hi) / 2.0
    screen = np.empty((len(view), 2))
    screen[:, 0] = (view[:, 0] - centre[0]) * scale + width / 2.0
    screen[:, 1] = width / 2.0 - (view[:, 1] - centre[1]) * scale
    return screen


_Plane = tuple[np.ndarray, np.ndarray, np.ndarray]  # (a, b, c): a * x + b * y + c per face


def _rasterize(
    screen: np.ndarray, depth: np.ndarray, faces: np.ndarray, width: int, cull: bool = False
) -> tuple[np.ndarray, tuple[_Plane, _Plane], np.ndarray]:
    """(candidates, their barycentric planes, winner per pixel): `candidates` indexes the
    faces that may cover a pixel centre, the winner (-1 = background) indexes `candidates`,
    and the planes give each candidate's b1 and b2 at any pixel position. `cull` (for a
    closed, consistently wound surface) leaves out the faces turned away from the viewer:
    a nearer face always hides them, and they are half the work.

    Each candidate pixel's key packs (quantised depth << 32 | candidate index), so keeping
    the minimum key is the whole z-test and ties resolve to the lower face index, whatever
    order the work is done in. Small triangles (the bulk of a dense mesh) are done in
    vectorised batches of candidate pixels; big ones one by one over their bounding box.
    Per-face values live in flat arrays, one per quantity: numpy is several times slower
    on the short rows of a (faces, 3) array.
    """
    if len(faces) >= 1 << 32:
        raise MeshError("too many faces to render a preview")
    xs, ys, zs = screen[:, 0][faces.T], screen[:, 1][faces.T], depth[faces.T]  # (3, F) each
    x_lo = np.ceil(np.minimum(np.minimum(xs[0], xs[1]), xs[2]) - 0.5).clip(0, width)
    x_hi = np.floor(np.maximum(np.maximum(xs[0], xs[1]), xs[2]) - 0.5).clip(-1, width - 1)
    y_lo = np.ceil(np.minimum(np.minimum(ys[0], ys[1]), ys[2]) - 0.5).clip(0, width)
    y_hi = np.floor(np.maximum(np.maximum(ys[0], ys[1]), ys[2]) - 0.5).clip(-1, width - 1)
    ex1, ey1, ex2, ey2 = xs[1] - xs[0], ys[1] - ys[0], xs[2] - xs[0], ys[2] - ys[0]
    area = ex1 * ey2 - ey1 * ex2  # screen y points down: front faces are negative
    # A dense mesh's triangles are about a pixel big: many cover no pixel centre at all,
    # and everything below is done for the others only.
    drawn = (x_hi >= x_lo) & (y_hi >= y_lo) & (np.abs(area) > 1e-12)
    if cull:
        # Which way round "away" is: the sign of the enclosed volume, sum(mean z * area in
        # the view plane) by the divergence theorem (screen y is flipped, hence the minus).
        volume = -float(((zs[0] + zs[1] + zs[2]) * area).sum())
        if volume != 0:
            drawn &= area * volume < 0
    candidates = np.flatnonzero(drawn)
    inv = 1.0 / area[candidates]
    a1, b1 = ey2[candidates] * inv, -ex2[candidates] * inv
    a2, b2 = -ey1[candidates] * inv, ex1[candidates] * inv
    x0, y0 = xs[0][candidates], ys[0][candidates]
    plane1 = (a1, b1, -(x0 * a1 + y0 * b1))
    plane2 = (a2, b2, -(x0 * a2 + y0 * b2))
    x_lo, y_lo = x_lo[candidates].astype(np.int64), y_lo[candidates].astype(np.int64)
    spans = x_hi[candidates].astype(np.int64) - x_lo + 1
    heights = y_hi[candidates].astype(np.int64) - y_lo + 1
    counts = spans * heights

    z0 = zs[0][candidates]
    dz1, dz2 = zs[1][candidates] - z0, zs[2][candidates] - z0
    z_near = float(zs[:, candidates].max()) if len(candidates) else 1.0
    z_far = float(zs[:, candidates].min()) if len(candidates) else 0.0
    z_scale = ((1 << 31) - 1) / max(z_near - z_far, 1e-12)

    def keyed(face: np.ndarray, pixel: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
        """Test the pixel centres (x, y) against their faces and z-test the ones inside."""
        u = plane1[0][face] * x + plane1[1][face] * y + plane1[2][face]
        v = plane2[0][face] * x + plane2[1][face] * y + plane2[2][face]
        inside = np.flatnonzero((u >= -_EDGE_EPS) & (v >= -_EDGE_EPS) & (u + v <= 1.0 + _EDGE_EPS))
        face, u, v = face[inside], u[inside], v[inside]
        z = z0[face] + u * dz1[face] + v * dz2[face]
        quantised = np.clip((z_near - z) * z_scale, 0, (1 << 31) - 1).astype(np.int64)
        np.minimum.at(keys, pixel[inside], (quantised << 32) | face)

    keys = np.full(width * width, _NO_FACE, dtype=np.int64)
    small = np.flatnonzero(counts <= _BIG_TRIANGLE)
    cumulative = np.cumsum(counts[small])
    total = int(cumulative[-1]) if len(small) else 0
    cuts = np.searchsorted(cumulative, np.arange(_RASTER_BUDGET, total, _RASTER_BUDGET))
    for batch in np.split(small, cuts) if total else []:
        n = counts[batch]
        face = np.repeat(batch, n)
        local = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        py, px = np.divmod(local, spans[face])
        px += x_lo[face]
        py += y_lo[face]
        keyed(face, py * width + px, px + 0.5, py + 0.5)

    for f in np.flatnonzero(counts > _BIG_TRIANGLE):
        columns = np.arange(x_lo[f], x_lo[f] + spans[f])
        rows_per_band = max(1, _RASTER_BUDGET // len(columns))
        for top in range(y_lo[f], y_lo[f] + heights[f], rows_per_band):
            rows = np.arange(top, min(top + rows_per_band, y_lo[f] + heights[f]))
            px, py = np.tile(columns, len(rows)), np.repeat(rows, len(columns))
            keyed(np.full(len(px), f), py * width + px, px + 0.5, py + 0.5)
    winner = np.where(keys == _NO_FACE, -1, keys & 0xFFFFFFFF)
    return candidates, (plane1, plane2), winner


def _barycentrics(
    planes: tuple[_Plane, _Plane], fid: np.ndarray, pixels: np.ndarray, width: int
) -> np.ndarray:
    """(P, 3) weights of the winning face's corners at each covered pixel centre."""
    cy, cx = np.divmod(pixels, width)
    cx, cy = cx + 0.5, cy + 0.5
    (a1, b1, c1), (a2, b2, c2) = planes
    u = np.clip(a1[fid] * cx + b1[fid] * cy + c1[fid], 0.0, 1.0)
    v = np.clip(a2[fid] * cx + b2[fid] * cy + c2[fid], 0.0, 1.0)
    w = np.clip(1.0 - u - v, 0.0, 1.0)
    total = np.maximum(w + u + v, 1e-12)
    return np.stack([w / total, u / total, v / total], axis=1)


def _pixel_normals(
    view: np.ndarray,
    faces: np.ndarray,
    welded: np.ndarray,
    count: int,
    fid: np.ndarray,
    bary: np.ndarray,
) -> np.ndarray:
    """Unit view-space normal per covered pixel, facing the viewer: smooth across UV seams
    (vertices welded by position), flat across sharp creases."""
    corners = view[faces]  # (F, 3, 3)
    edges = np.roll(corners, -1, axis=1) - corners  # corner k -> corner k+1
    cross = np.cross(edges[:, 0], -edges[:, 2])
    face_n = cross / np.maximum(np.linalg.norm(cross, axis=1, keepdims=True), 1e-12)
    # Weight by the corner angle, so how a flat side is triangulated does not tilt the normal.
    edges /= np.maximum(np.linalg.norm(edges, axis=2, keepdims=True), 1e-12)
    cos = -np.einsum("fcd,fcd->fc", edges, np.roll(edges, 1, axis=1))
    angle = np.arccos(np.clip(cos, -1.0, 1.0))
    ids = welded[faces]  # (F, 3)
    weighted = face_n[:, None, :] * angle[:, :, None]
    vertex_n: np.ndarray = np.stack(
        [np.bincount(ids.reshape(-1), weighted[..., k].reshape(-1), count) for k in range(3)],
        axis=1,
    ).astype(np.float64)
    vertex_n /= np.maximum(np.linalg.norm(vertex_n, axis=1, keepdims=True), 1e-12)
    # Only the pixels' winning faces from here on: a fraction of a dense mesh.
    corner_n = vertex_n[ids[fid]]  # (P, 3, 3)
    flat = face_n[fid]  # (P, 3)
    smooth = np.einsum("pcd,pd->pc", corner_n, flat) >= _CREASE_COS
    n = np.einsum("pc,pcd->pd", bary, np.where(smooth[:, :, None], corner_n, flat[:, None, :]))
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    n[n[:, 2] < 0] *= -1.0  # two-sided: open or inside-out surfaces still catch the light
    return n


def _interpolated_normals(
    normals: np.ndarray, faces: np.ndarray, fid: np.ndarray, bary: np.ndarray
) -> np.ndarray:
    """The file's own vertex normals (view space) interpolated per pixel, facing the viewer;
    the view direction where they are degenerate."""
    n = _interpolate(normals, faces[fid], bary)
    length = np.sqrt(n[:, 0] ** 2 + n[:, 1] ** 2 + n[:, 2] ** 2)
    bad = ~(length > 1e-9)  # also NaN
    n /= np.where(bad, 1.0, length)[:, None]
    n[bad] = [0.0, 0.0, 1.0]
    n[n[:, 2] < 0] *= -1.0  # two-sided: open or inside-out surfaces still catch the light
    return n


def _interpolate(values: np.ndarray, corners: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Per pixel, the barycentric mix of a per-vertex attribute at its face's corners, one
    attribute column at a time (~3x faster than broadcasting over (P, 3) rows; the same sums)."""
    b0, b1, b2 = bary[:, 0], bary[:, 1], bary[:, 2]
    c0, c1, c2 = corners[:, 0], corners[:, 1], corners[:, 2]
    columns = [v[c0] * b0 + v[c1] * b1 + v[c2] * b2 for v in np.ascontiguousarray(values.T)]
    return np.stack(columns, axis=1)


# ------------------------------------------------------------------------- colour


@dataclass(frozen=True)
class _Texture:
    texels: np.ndarray  # (H, W, 3) sRGB, uint8
    clamp_s: bool
    clamp_t: bool


def _albedo(scene: _Scene, fid: np.ndarray, bary: np.ndarray, width: int) -> np.ndarray:
    """Linear RGB base colour per covered pixel: baseColorFactor x texture x COLOR_0."""
    albedo = np.empty((len(fid), 3))
    starts = np.array([first for _, _, first in scene.parts])
    owner = np.searchsorted(starts, fid, side="right") - 1
    textures: dict[int, _Texture | None] = {}  # per material, decoded once
    for index, (primitive, _, first_face) in enumerate(scene.parts):
        mine = np.flatnonzero(owner == index)
        if len(mine) == 0:
            continue
        corners = primitive.faces[fid[mine] - first_face]  # (P, 3) primitive's own vertices
        albedo[mine] = _part_albedo(scene.doc, primitive, corners, bary[mine], width, textures)
    return albedo


def _part_albedo(
    doc: _Document,
    primitive: _Primitive,
    corners: np.ndarray,
    bary: np.ndarray,
    width: int,
    textures: dict[int, _Texture | None],
) -> np.ndarray:
    attributes = primitive.spec["attributes"]
    colours = None
    if "COLOR_0" in attributes:
        values = doc.floats(attributes["COLOR_0"])
        if values.shape[1] in (3, 4) and len(values) == len(primitive.positions):
            colours = _interpolate(values[:, :3], corners, bary)  # linear
    index = primitive.spec.get("material")
    material = _json_item(doc.gltf, "materials", index)
    if material is None:
        if colours is not None:
            return colours
        return np.broadcast_to(_srgb_to_linear(_NEUTRAL), (len(bary), 3))
    pbr = material.get("pbrMetallicRoughness")
    pbr = pbr if isinstance(pbr, dict) else {}
    factor = pbr.get("baseColorFactor")
    base = np.asarray(factor, dtype=np.float64)[:3] if isinstance(factor, list) else None
    assert isinstance(index, int)
    if index not in textures:
        textures[index] = _base_color_texture(doc, material, width)
    texture = textures[index]
    ref = pbr.get("baseColorTexture")
    uv_set = ref.get("texCoord", 0) if isinstance(ref, dict) else 0
    uv_key = f"TEXCOORD_{uv_set}"
    if texture is not None and uv_key in attributes:
        uv = doc.floats(attributes[uv_key])
        if uv.shape[1] == 2 and len(uv) == len(primitive.positions):
            texel_uv = _interpolate(uv, corners, bary)
            colour = _sample_texture(texture, texel_uv)
            colour = colour * (1.0 if base is None else base)
            return colour if colours is None else colour * colours
    if base is None and colours is None:
        return np.broadcast_to(_srgb_to_linear(_NEUTRAL), (len(bary), 3))
    colour = np.ones((len(bary), 3)) if colours is None else colours
    return colour * (1.0 if base is None else base)


def _base_color_texture(doc: _Document, material: Mapping[str, Any], width: int) -> _Texture | None:
    """The material's base-colour texture decoded at about the size the render samples it:
    JPEG decodes straight at 1/2..1/8 scale (DCT scaling), other formats are box-reduced."""
    target = min(_MAX_TEXTURE, _TEXELS_PER_PIXEL * width)
    texels = _base_color_image(doc, material, check=lambda blob: _decode_texture(blob, target))
    if texels is None:
        return None  # absent or undecodable: the factor (or neutral grey) instead
    pbr = material["pbrMetallicRoughness"]
    texture = _json_item(doc.gltf, "textures", pbr["baseColorTexture"].get("index")) or {}
    sampler = _json_item(doc.gltf, "samplers", texture.get("sampler")) or {}
    return _Texture(
        texels,
        clamp_s=sampler.get("wrapS") == _CLAMP_TO_EDGE,
        clamp_t=sampler.get("wrapT") == _CLAMP_TO_EDGE,
    )


def _decode_texture(blob: bytes, target: int) -> np.ndarray | None:
    try:
        with Image.open(io.BytesIO(blob)) as image:
            if image.format == "JPEG":
                image.draft("RGB", (target, target))  # the smallest scale still >= target
            image.load()
            factor = max(image.size) // target
            rgb = image.convert("RGB")
    except Exception:  # Pillow raises several types for unknown or corrupt data
        return None
    if factor >= 2:
        rgb = rgb.reduce(factor)  # box filter: a cheap mipmap
    return np.asarray(rgb)


def _sample_texture(texture: _Texture, uv: np.ndarray) -> np.ndarray:
    """Bilinear; repeating (glTF's default) or clamped, as the sampler says. glTF's UV
    origin is the image's top-left corner."""
    texels = texture.texels
    height, width = texels.shape[:2]
    x = uv[:, 0] * width - 0.5
    y = uv[:, 1] * height - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    x0i, y0i = x0.astype(np.int64), y0.astype(np.int64)
    x0i, x1i = _wrap(x0i, width, texture.clamp_s), _wrap(x0i + 1, width, texture.clamp_s)
    y0i, y1i = _wrap(y0i, height, texture.clamp_t), _wrap(y0i + 1, height, texture.clamp_t)
    corners = (y0i * width + x0i, y0i * width + x1i, y1i * width + x0i, y1i * width + x1i)
    # Linear light is what filtering should mix: the four texels go through the table. One
    # channel at a time, by one flat index: ~3x faster than (P, 3) rows, the same sums.
    lut, gx, gy = _SRGB_TO_LINEAR, 1 - fx, 1 - fy
    channels = []
    for plane in np.moveaxis(texels, 2, 0):
        flat = plane.ravel()  # a contiguous copy of the channel
        t00, t01, t10, t11 = (lut[flat[i]] for i in corners)
        channels.append((t00 * gx + t01 * fx) * gy + (t10 * gx + t11 * fx) * fy)
    return np.stack(channels, axis=1)


def _wrap(index: np.ndarray, size: int, clamp: bool) -> np.ndarray:
    return np.clip(index, 0, size - 1) if clamp else index % size


def _srgb_to_linear(values: np.ndarray) -> np.ndarray:
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb8(values: np.ndarray) -> np.ndarray:
    index = np.rint(np.clip(values, 0.0, 1.0) * (len(_LINEAR_TO_SRGB8) - 1)).astype(np.int64)
    return _LINEAR_TO_SRGB8[index]
