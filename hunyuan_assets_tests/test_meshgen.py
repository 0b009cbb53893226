"""The emulator's mesh synthesis: valid, closed, deterministic GLBs that look like the picture."""

from __future__ import annotations

import io
import json
import logging
import struct
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import trimesh
from gltf_validator import validate_glb
from PIL import Image, ImageDraw

from hunyuan_assets.emulator.meshgen import image_to_glb

RED, GREEN, BLUE, YELLOW = (200, 30, 30), (30, 170, 60), (30, 80, 210), (240, 200, 20)


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def transparent_tall_ellipse() -> bytes:
    """A cut-out (real alpha), tall and thin, with colour under the transparent pixels too."""
    image = Image.new("RGBA", (360, 480), (255, 255, 255, 0))
    ImageDraw.Draw(image).ellipse((140, 40, 220, 440), fill=(*RED, 255))
    return encode(image)


def plain_wide_bar() -> bytes:
    """A studio shot: one object on a flat light background, wider than tall, no alpha."""
    image = Image.new("RGB", (500, 400), (235, 235, 235))
    ImageDraw.Draw(image).rounded_rectangle((60, 150, 440, 250), radius=20, fill=BLUE)
    return encode(image)


def quadrants() -> bytes:
    """A square in four colours: shows whether the mesh is mirrored or upside down."""
    image = Image.new("RGB", (400, 400), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    draw.rectangle((80, 80, 199, 199), fill=RED)
    draw.rectangle((200, 80, 319, 199), fill=GREEN)
    draw.rectangle((80, 200, 199, 319), fill=BLUE)
    draw.rectangle((200, 200, 319, 319), fill=YELLOW)
    return encode(image)


def photo_like() -> bytes:
    """A JPEG with gradients and noise everywhere and no clean background."""
    y, x = np.mgrid[0:384, 0:512].astype(np.float32)
    rgb = np.stack([x / 2, y / 1.5, 255 - (x + y) / 4], axis=-1)
    rgb += np.random.default_rng(7).normal(0, 12, rgb.shape)
    image = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
    return encode(image, "JPEG", quality=85)


IMAGES = {
    "transparent": transparent_tall_ellipse,
    "plain": plain_wide_bar,
    "quadrants": quadrants,
    "photo": photo_like,
}


@cache
def image_bytes(name: str) -> bytes:
    return IMAGES[name]()


@cache
def glb_for(name: str) -> bytes:
    return image_to_glb(image_bytes(name))


def load_mesh(glb: bytes) -> trimesh.Trimesh:
    scene = trimesh.load(io.BytesIO(glb), file_type="glb", process=False)
    assert isinstance(scene, trimesh.Scene)
    assert len(scene.geometry) == 1
    return next(iter(scene.geometry.values()))


def gltf_json(glb: bytes) -> dict:
    magic, version, length = struct.unpack_from("<4sII", glb)
    assert (magic, version, length) == (b"glTF", 2, len(glb))
    chunk_length, chunk_type = struct.unpack_from("<I4s", glb, 12)
    assert chunk_type == b"JSON"
    return json.loads(glb[20 : 20 + chunk_length])


def welded(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Merge vertices by position only (the raw list is split at UV and normal seams)."""
    copy = mesh.copy()
    copy.merge_vertices(merge_tex=True, merge_norm=True)
    return copy


def texture_colour_at(mesh: trimesh.Trimesh, uv: np.ndarray) -> np.ndarray:
    texture = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB"), np.float64)
    h, w = texture.shape[:2]
    rows = np.round((1 - uv[:, 1]) * (h - 1)).astype(int)  # trimesh hands UVs back v-up
    cols = np.round(uv[:, 0] * (w - 1)).astype(int)
    return texture[rows, cols]


@pytest.mark.parametrize("name", IMAGES)
def test_khronos_validator_reports_no_errors(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.glb"
    path.write_bytes(glb_for(name))
    report = validate_glb(path)
    assert report["issues"]["numErrors"] == 0
    assert report["issues"]["numWarnings"] == 0
    assert report["info"]["hasTextures"] is True
    assert report["info"]["drawCallCount"] == 1


@pytest.mark.parametrize("name", IMAGES)
def test_one_textured_pbr_mesh_of_a_sensible_size(name: str) -> None:
    glb = glb_for(name)
    tree = gltf_json(glb)
    assert len(tree["meshes"]) == 1 and len(tree["meshes"][0]["primitives"]) == 1
    attributes = tree["meshes"][0]["primitives"][0]["attributes"]
    assert {"POSITION", "NORMAL", "TEXCOORD_0"} <= set(attributes)
    pbr = tree["materials"][0]["pbrMetallicRoughness"]
    assert pbr["metallicFactor"] == 0.0 and pbr["roughnessFactor"] == pytest.approx(0.8)
    image = tree["images"][tree["textures"][pbr["baseColorTexture"]["index"]]["source"]]
    assert image["mimeType"] == "image/png"

    mesh = load_mesh(glb)
    assert isinstance(mesh.visual, trimesh.visual.TextureVisuals)
    material = mesh.visual.material
    assert isinstance(material, trimesh.visual.material.PBRMaterial)
    assert isinstance(material.baseColorTexture, Image.Image)
    assert max(material.baseColorTexture.size) <= 512
    assert 2_000 <= len(mesh.faces) <= 40_000
    # Y up, facing +Z, centred, one unit across
    low, high = mesh.bounds
    assert np.allclose((low + high) / 2, 0, atol=1e-6)
    assert max(high[:2] - low[:2]) == pytest.approx(1.0, abs=1e-6)
    assert 0 < high[2] - low[2] < 1


@pytest.mark.parametrize("name", IMAGES)
def test_welded_by_position_the_mesh_is_closed(name: str) -> None:
    mesh = load_mesh(glb_for(name))
    closed = welded(mesh)
    assert len(closed.vertices) < len(mesh.vertices)  # front and back share the outline
    assert closed.is_watertight
    assert closed.is_winding_consistent
    assert closed.volume > 0  # normals point outwards
    assert len(closed.split(only_watertight=False)) == 1


def test_same_input_gives_the_same_bytes() -> None:
    data = image_bytes("plain")
    assert image_to_glb(data) == image_to_glb(data) == glb_for("plain")
    assert image_to_glb(data, seed=1) == image_to_glb(data, seed=1)
    assert image_to_glb(data, seed=1) != glb_for("plain")
    assert image_to_glb(data, seed=-1) != glb_for("plain")  # the CLI accepts any int


def test_different_images_give_different_meshes() -> None:
    meshes = [load_mesh(glb_for(name)) for name in IMAGES]
    shapes = {(len(m.faces), round(float(m.extents[1] / m.extents[0]), 3)) for m in meshes}
    assert len(shapes) == len(IMAGES)
    assert len({glb_for(name) for name in IMAGES}) == len(IMAGES)


def test_silhouette_follows_the_picture() -> None:
    tall = load_mesh(glb_for("transparent")).extents
    assert tall[1] > 3 * tall[0]  # the ellipse is 80 x 400 px
    wide = load_mesh(glb_for("plain")).extents
    assert wide[0] > 2.5 * wide[1]  # the bar is 380 x 100 px
    # the photo has no separable object: the whole 4:3 frame becomes the slab
    photo = load_mesh(glb_for("photo")).extents
    assert photo[0] / photo[1] == pytest.approx(4 / 3, rel=0.08)


@pytest.mark.parametrize(("name", "colour"), [("transparent", RED), ("plain", BLUE)])
def test_texture_is_the_object_without_background_halo(name: str, colour: tuple) -> None:
    texture = np.asarray(load_mesh(glb_for(name)).visual.material.baseColorTexture.convert("RGB"))
    pixels = texture.reshape(-1, 3).astype(np.float64)
    assert np.allclose(np.median(pixels, axis=0), colour, atol=12)
    # the background (white under the alpha, light grey around the bar) was painted over
    assert np.linalg.norm(pixels - colour, axis=1).max() < 60


def test_front_shows_the_picture_upright_and_unmirrored() -> None:
    mesh = load_mesh(glb_for("quadrants"))
    front = mesh.vertices[:, 2] > 0.05
    for x_sign, y_sign, colour in [(-1, 1, RED), (1, 1, GREEN), (-1, -1, BLUE), (1, -1, YELLOW)]:
        picked = front & (mesh.vertices[:, 0] * x_sign > 0.2) & (mesh.vertices[:, 1] * y_sign > 0.2)
        assert picked.sum() > 50
        seen = np.median(texture_colour_at(mesh, mesh.visual.uv[picked]), axis=0)
        assert np.allclose(seen, colour, atol=20), (colour, seen)


def test_nothing_separates_gives_a_slab_of_the_whole_frame() -> None:
    glb = image_to_glb(encode(Image.new("RGB", (300, 150), GREEN)))
    mesh = load_mesh(glb)
    assert mesh.extents[0] / mesh.extents[1] == pytest.approx(2.0, rel=0.08)
    assert welded(mesh).is_watertight


@pytest.mark.parametrize("size", [(1, 1), (1, 300), (7, 3)])
def test_tiny_and_degenerate_pictures_still_give_closed_meshes(size: tuple[int, int]) -> None:
    mesh = load_mesh(image_to_glb(encode(Image.new("L", size, 90))))
    assert len(mesh.faces) > 0
    assert welded(mesh).is_watertight


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + bytes(64), plain_wide_bar()[:300]],
    ids=["empty", "text", "png-magic-only", "truncated-png"],
)
def test_non_images_raise_value_error(data: bytes) -> None:
    with pytest.raises(ValueError, match="^input is not a decodable image: "):
        image_to_glb(data)


def test_a_512px_picture_takes_trimeshs_fast_paths(caplog: pytest.LogCaptureFixture) -> None:
    """Without scipy, trimesh computes vertex normals on a pure-numpy fallback (mesh synthesis
    ~50x slower) and logs 'unable to use sparse matrix, falling back!' with a traceback: no
    warning from trimesh means the fast paths were taken. Timings are bench/'s business."""
    image = Image.new("RGB", (512, 512), (240, 240, 240))
    ImageDraw.Draw(image).ellipse((60, 30, 450, 480), fill=YELLOW)
    caplog.set_level(logging.WARNING, logger="trimesh")
    assert image_to_glb(encode(image))[:4] == b"glTF"
    fallbacks = [r.getMessage() for r in caplog.records if r.name.startswith("trimesh")]
    assert fallbacks == []


def test_the_validator_catches_a_broken_glb(tmp_path: Path) -> None:
    """Guards the guard: a validator that always passed would make the tests above vacuous."""
    glb = glb_for("plain")
    tree = gltf_json(glb)
    json_length = struct.unpack_from("<I", glb, 12)[0]
    binary_chunk = glb[20 + json_length :]
    position = tree["meshes"][0]["primitives"][0]["attributes"]["POSITION"]
    tree["accessors"][position]["max"] = [9.0, 9.0, 9.0]  # the data says otherwise
    text = json.dumps(tree).encode()
    text += b" " * (-len(text) % 4)
    header = struct.pack("<4sII", b"glTF", 2, 12 + 8 + len(text) + len(binary_chunk))
    path = tmp_path / "broken.glb"
    path.write_bytes(header + struct.pack("<I4s", len(text), b"JSON") + text + binary_chunk)
    with pytest.raises(AssertionError, match="ACCESSOR_MAX_MISMATCH"):
        validate_glb(path)


def test_outline_takes_the_objects_colour_not_the_old_background() -> None:
    """A red disc anti-aliased onto white: the texels along the mesh's outline are red, not
    the pink blend of the edge pixels (which shows as a pale rim on the mesh)."""
    big = Image.new("RGB", (1024, 1024), "white")
    ImageDraw.Draw(big).ellipse((112, 112, 912, 912), fill=(200, 20, 20))
    small = big.resize((256, 256), Image.Resampling.LANCZOS)  # soft, blended edge pixels
    mesh = load_mesh(image_to_glb(encode(small)))
    rim = np.abs(mesh.vertices[:, 2]) < 1e-6  # the outline, where front and back sheets meet
    colours = texture_colour_at(mesh, mesh.visual.uv[rim]).astype(float)
    assert rim.sum() > 50
    pale = (colours[:, 1] > 80) | (colours[:, 2] > 80)
    assert pale.mean() < 0.02, f"{pale.mean():.0%} of outline texels are background-tinted"


# ------------------------------------------------------------------- the realistic profile


@cache
def realistic_glb(name: str) -> bytes:
    return image_to_glb(image_bytes(name), profile="realistic")


def image_chunk(glb: bytes, image: dict) -> bytes:
    tree = gltf_json(glb)
    json_length = struct.unpack_from("<I", glb, 12)[0]
    binary = glb[20 + json_length + 8 :]
    view = tree["bufferViews"][image["bufferView"]]
    return binary[view["byteOffset"] : view["byteOffset"] + view["byteLength"]]


@pytest.mark.parametrize("name", ["transparent", "photo"])
def test_realistic_outputs_pass_the_khronos_validator(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.glb"
    path.write_bytes(realistic_glb(name))
    report = validate_glb(path)
    assert report["issues"]["numErrors"] == 0
    assert report["issues"]["numWarnings"] == 0
    assert report["info"]["hasTextures"] is True


@pytest.mark.parametrize("name", IMAGES)
def test_realistic_outputs_are_sized_like_the_real_models(name: str) -> None:
    glb = realistic_glb(name)
    tree = gltf_json(glb)
    pbr = tree["materials"][0]["pbrMetallicRoughness"]
    textures = {key: pbr[key]["index"] for key in ("baseColorTexture", "metallicRoughnessTexture")}
    for index in textures.values():
        image = tree["images"][tree["textures"][index]["source"]]
        assert image["mimeType"] == "image/jpeg"  # what upstream's pipeline writes
        with Image.open(io.BytesIO(image_chunk(glb, image))) as texture:
            assert (texture.format, texture.size) == ("JPEG", (2048, 2048))
    assert textures["baseColorTexture"] != textures["metallicRoughnessTexture"]
    assert 30_000 <= len(load_mesh(glb).faces) <= 50_000  # ~40k, whatever the object's size
    assert 2 * 2**20 < len(glb) < 8 * 2**20
    closed = welded(load_mesh(glb))
    assert closed.is_watertight and closed.is_winding_consistent and closed.volume > 0


def test_realistic_outputs_look_like_the_small_ones() -> None:
    """The same picture, the same shape: the profile changes the resolution, not the mesh."""
    small, big = load_mesh(glb_for("quadrants")), load_mesh(realistic_glb("quadrants"))
    assert np.allclose(small.extents, big.extents, rtol=0.05)
    front = big.vertices[:, 2] > 0.05
    picked = front & (big.vertices[:, 0] < -0.2) & (big.vertices[:, 1] > 0.2)  # upper left
    colour = np.median(texture_colour_at(big, big.visual.uv[picked]), axis=0)
    assert np.allclose(colour, RED, atol=25), colour


def test_realistic_outputs_are_deterministic() -> None:
    data = image_bytes("plain")
    assert image_to_glb(data, profile="realistic") == realistic_glb("plain")
    assert image_to_glb(data, profile="realistic", seed=3) != realistic_glb("plain")


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="output profile"):
        image_to_glb(image_bytes("plain"), profile="medium")


def test_the_server_knows_the_same_profiles() -> None:
    from hunyuan_assets.emulator import meshgen, server

    assert server.OUTPUT_PROFILES == meshgen.OUTPUT_PROFILES
