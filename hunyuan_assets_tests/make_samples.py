"""Regenerate the sample images: ``python hunyuan_assets_tests/make_samples.py [OUT_DIR]``.

It lives beside the tests, not in the samples folder: the demo takes every file in that folder
as an image and would report this script as skipped.

Small, shaded renders of everyday objects so the emulator's relief mesh has something to
inflate: three on transparent backgrounds (RGBA PNG) and three on plain backgrounds (one PNG,
two JPEGs). Pure numpy ray casting with a z-buffer, 3x supersampling, no randomness, so the
output is byte-identical for a given numpy/Pillow build.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "hunyuan_assets" / "samples"
SS = 3  # supersampling factor per axis

Array = np.ndarray
Vec3 = tuple[float, float, float]
Albedo = Vec3 | Array


def _unit(v: Array) -> Array:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _rgb(hex_colour: str) -> Vec3:
    h = hex_colour.lstrip("#")
    return tuple(int(h[i : i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]


class Scene:
    """An orthographic view: x right, y down, z towards the viewer (larger z is nearer)."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        ys, xs = np.mgrid[0 : height * SS, 0 : width * SS].astype(np.float64)
        self.x = (xs + 0.5) / SS
        self.y = (ys + 0.5) / SS
        shape = self.x.shape
        self.depth = np.full(shape, -np.inf)
        self.normal = np.zeros((*shape, 3))
        self.normal[..., 2] = 1.0
        self.albedo = np.zeros((*shape, 3))
        self.gloss = np.zeros(shape)
        self.shininess = np.ones(shape)

    def window(self, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice]:
        """The supersampled pixels a primitive can touch: drawing only there is much faster."""
        height, width = self.x.shape
        cols = slice(max(0, int(np.floor((x0 - 1) * SS))), min(width, int(np.ceil((x1 + 1) * SS))))
        rows = slice(max(0, int(np.floor((y0 - 1) * SS))), min(height, int(np.ceil((y1 + 1) * SS))))
        return rows, cols

    def put(
        self,
        sl: tuple[slice, slice],
        mask: Array,
        z: Array,
        normal: Array,
        albedo: Albedo,
        *,
        gloss: float = 0.25,
        shininess: float = 30.0,
    ) -> None:
        """Keep the parts of a surface that are nearer than what is already drawn."""
        depth = self.depth[sl]  # basic slices are views: writing to them draws
        win = mask & (z > depth)
        depth[win] = z[win]
        self.normal[sl][win] = _unit(normal[win])
        colour = np.asarray(albedo, dtype=np.float64)
        if colour.ndim == 3 and colour.shape[:2] == self.x.shape:
            colour = colour[sl]  # a whole-canvas texture
        self.albedo[sl][win] = np.broadcast_to(colour, (*mask.shape, 3))[win]
        self.gloss[sl][win] = gloss
        self.shininess[sl][win] = shininess

    # -- primitives -----------------------------------------------------------------------

    def ellipsoid(self, c: Vec3, r: Vec3, albedo: Albedo, **kw: float) -> None:
        sl = self.window(c[0] - r[0], c[0] + r[0], c[1] - r[1], c[1] + r[1])
        dx, dy = (self.x[sl] - c[0]) / r[0], (self.y[sl] - c[1]) / r[1]
        q = dx * dx + dy * dy
        mask = q < 1.0
        h = np.sqrt(np.clip(1.0 - q, 0.0, None))
        normal = np.stack([dx / r[0], dy / r[1], h / r[2]], axis=-1)
        self.put(sl, mask, c[2] + r[2] * h, normal, albedo, **kw)

    def torus(
        self,
        c: Vec3,
        major: tuple[float, float],
        tube: float,
        albedo: Albedo,
        *,
        keep: Callable[[Array, Array], Array] | None = None,
        **kw: float,
    ) -> None:
        """A ring facing the viewer (axis along z), elliptical when major radii differ."""
        ex, ey = major[0] + tube, major[1] + tube
        sl = self.window(c[0] - ex, c[0] + ex, c[1] - ey, c[1] + ey)
        x, y = self.x[sl], self.y[sl]
        ux, uy = (x - c[0]) / major[0], (y - c[1]) / major[1]
        rho = np.sqrt(ux * ux + uy * uy)
        scale = np.sqrt((ux * major[0]) ** 2 + (uy * major[1]) ** 2) / np.maximum(rho, 1e-9)
        off = (rho - 1.0) * scale  # approximate distance from the ring's centre line
        mask = np.abs(off) < tube
        if keep is not None:
            mask &= keep(x, y)
        h = np.sqrt(np.clip(tube * tube - off * off, 0.0, None))
        radial = np.stack([ux, uy], axis=-1) / np.maximum(rho, 1e-9)[..., None]
        normal = np.concatenate([radial * off[..., None], h[..., None]], axis=-1)
        self.put(sl, mask, c[2] + h, normal, albedo, **kw)

    def disc(
        self,
        c: Vec3,
        n: Vec3,
        r_in: float,
        r_out: float,
        albedo: Albedo | Callable[[Array], Array],
        **kw: float,
    ) -> None:
        """A flat annulus through ``c`` with normal ``n`` (in view coordinates)."""
        nx, ny, nz = _unit(np.asarray(n, dtype=np.float64))
        sl = self.window(c[0] - r_out, c[0] + r_out, c[1] - r_out, c[1] + r_out)
        x, y = self.x[sl], self.y[sl]
        z = c[2] - (nx * (x - c[0]) + ny * (y - c[1])) / nz
        p = np.stack([x - c[0], y - c[1], z - c[2]], axis=-1)
        dist = np.linalg.norm(p, axis=-1)
        mask = (dist >= r_in) & (dist <= r_out)
        normal = np.broadcast_to(np.array([nx, ny, nz]) * np.sign(nz), p.shape).copy()
        colour = albedo(dist) if callable(albedo) else albedo
        self.put(sl, mask, z, normal, colour, **kw)

    def lathe(
        self,
        axis_x: float,
        axis_z: float,
        y0: float,
        y1: float,
        radius: Callable[[Array], Array],
        albedo: Albedo | Callable[[Array, Array], Array],
        *,
        pitch: float = 0.0,
        inside: bool = False,
        **kw: float,
    ) -> None:
        """A surface of revolution about a vertical axis, seen from ``pitch`` radians above.

        World height Y runs y0..y1 (down); ``inside`` draws the far inner wall instead of the
        near outer one (what you see through an opening).
        """
        sp, cp = np.sin(pitch), np.cos(pitch)
        r_max = float(radius(np.linspace(y0, y1, 1024)).max()) + 1.0
        sl = self.window(axis_x - r_max, axis_x + r_max, y0 * cp - r_max * sp, y1 * cp + r_max * sp)
        screen_y = self.y[sl]
        big_x = self.x[sl] - axis_x
        sign = -1.0 if inside else 1.0
        big_y = screen_y / cp
        # Solve screen y = Y cos p + Z(Y) sin p for the height Y by fixed-point iteration,
        # only for pixels within reach of the axis and only until each one has converged.
        todo = np.flatnonzero(np.abs(big_x) < r_max)
        flat_x, flat_sy, flat_y = big_x.ravel(), screen_y.ravel(), big_y.ravel()
        for _ in range(30):
            r = radius(np.clip(flat_y[todo], y0, y1))
            z = sign * np.sqrt(np.clip(r * r - flat_x[todo] ** 2, 0.0, None))
            new_y = (flat_sy[todo] - z * sp) / cp
            moved = np.abs(new_y - flat_y[todo]) > 1e-9
            flat_y[todo] = new_y
            todo = todo[moved]
            if not todo.size:
                break
        r = radius(np.clip(big_y, y0, y1))
        big_z = sign * np.sqrt(np.clip(r * r - big_x * big_x, 0.0, None))
        mask = (big_y >= y0) & (big_y <= y1) & (np.abs(big_x) < r)
        eps = 0.05
        slope = (radius(np.clip(big_y + eps, y0, y1)) - radius(np.clip(big_y - eps, y0, y1))) / (
            2 * eps
        )
        world_n = np.stack([big_x / np.maximum(r, 1e-9), -slope, big_z / np.maximum(r, 1e-9)], -1)
        if inside:
            world_n[..., 0] *= -1.0
            world_n[..., 2] *= -1.0
        normal = np.stack(
            [
                world_n[..., 0],
                world_n[..., 1] * cp + world_n[..., 2] * sp,
                world_n[..., 2] * cp - world_n[..., 1] * sp,
            ],
            axis=-1,
        )
        depth = axis_z + big_z * cp - big_y * sp
        colour = albedo(big_y, np.arctan2(big_z, big_x)) if callable(albedo) else albedo
        self.put(sl, mask, depth, normal, colour, **kw)

    def box(
        self, centre: Vec3, half: Vec3, rot: Array, albedo: Callable[[Array], Array], **kw: float
    ) -> None:
        """An oriented box (``rot`` maps box axes to view axes); albedo sees local hit points."""
        far = 1e4
        h = np.asarray(half)
        corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        projected = (corners * h) @ rot.T + centre
        lo, hi = projected.min(axis=0), projected.max(axis=0)
        sl = self.window(lo[0], hi[0], lo[1], hi[1])
        x = self.x[sl]
        origin = np.stack([x, self.y[sl], np.full_like(x, far)], axis=-1) - centre
        o_local = origin @ rot  # rot is orthonormal: inverse = transpose
        d_local = np.array([0.0, 0.0, -1.0]) @ rot
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / np.where(np.abs(d_local) < 1e-12, 1e-12, d_local)
            t1, t2 = (-h - o_local) * inv, (h - o_local) * inv
        t_near, t_far = np.minimum(t1, t2), np.maximum(t1, t2)
        t_min, t_max = t_near.max(axis=-1), t_far.min(axis=-1)
        mask = (t_min <= t_max) & (t_min > 0)
        face = t_near.argmax(axis=-1)
        n_local = np.zeros_like(o_local)
        np.put_along_axis(n_local, face[..., None], -np.sign(d_local)[face][..., None], axis=-1)
        hit_local = o_local + t_min[..., None] * d_local
        self.put(sl, mask, far - t_min, n_local @ rot.T, albedo(hit_local), **kw)

    # -- output ---------------------------------------------------------------------------

    def render(self, background: Vec3 | None) -> Image.Image:
        light = _unit(np.array([-0.55, -0.75, 0.9]))
        fill = _unit(np.array([0.8, -0.1, 0.6]))
        half = _unit(light + np.array([0.0, 0.0, 1.0]))
        n = self.normal
        diffuse = np.clip(n @ light, 0.0, None)
        fill_d = np.clip(n @ fill, 0.0, None)
        spec = np.clip(n @ half, 0.0, None) ** self.shininess * self.gloss
        rgb = self.albedo * (0.22 + 0.85 * diffuse + 0.18 * fill_d)[..., None] + spec[..., None]
        rgb = np.clip(rgb, 0.0, 1.0)
        alpha = np.isfinite(self.depth).astype(np.float64)
        premult = np.concatenate([rgb * alpha[..., None], alpha[..., None]], axis=-1)
        h, w = self.height, self.width
        small = premult.reshape(h, SS, w, SS, 4).mean(axis=(1, 3))
        a = small[..., 3:4]
        colour = np.where(a > 0, small[..., :3] / np.maximum(a, 1e-9), 0.0)
        if background is None:
            out = np.concatenate([colour, a], axis=-1)
            return Image.fromarray(np.round(out * 255).astype(np.uint8), "RGBA")
        out = colour * a + np.asarray(background) * (1.0 - a)
        return Image.fromarray(np.round(out * 255).astype(np.uint8), "RGB")


def _rotation(yaw: float, pitch: float) -> Array:
    """World (x right, y down, z to viewer) turned by yaw about y, then tilted by pitch."""
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    turn = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    tilt = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
    return tilt @ turn


# -- the objects ---------------------------------------------------------------------------


def mug() -> Image.Image:
    """A red ceramic mug, seen from a little above, transparent background."""
    s = Scene(320, 320)
    pitch = np.radians(18)
    red, inner = _rgb("#c8242b"), _rgb("#9c1b20")
    cx, top, bottom = 150.0, 92.0, 262.0

    def outer_r(y: Array) -> Array:
        t = (y - top) / (bottom - top)
        return 78.0 - 6.0 * t + 4.0 * np.exp(-(((y - bottom) / 6.0) ** 2))

    s.lathe(cx, 0.0, top, bottom, outer_r, red, pitch=pitch, gloss=0.45, shininess=60)
    s.lathe(
        cx, 0.0, top, bottom, lambda y: outer_r(y) - 7.0, inner, pitch=pitch, inside=True, gloss=0.2
    )
    rim_y = top * np.cos(pitch)
    up = (0.0, -np.cos(pitch), np.sin(pitch))
    s.disc((cx, rim_y, -top * np.sin(pitch)), up, 71.0, 78.0, _rgb("#d8353a"), gloss=0.4)
    # Coffee fills the inside to a lower level.
    level = top + 22.0
    s.disc(
        (cx, level * np.cos(pitch), -level * np.sin(pitch)),
        up,
        0.0,
        70.0,
        _rgb("#3b2314"),
        gloss=0.6,
        shininess=80,
    )
    s.torus(
        (cx + 82.0, 172.0, 0.0),
        (34.0, 44.0),
        11.0,
        red,
        keep=lambda x, y: x > cx + 60.0,
        gloss=0.45,
        shininess=60,
    )
    return s.render(None)


def plant() -> Image.Image:
    """A potted plant: terracotta pot, soil, a round leafy crown; transparent background."""
    s = Scene(288, 384)
    pitch = np.radians(14)
    cx = 144.0
    clay = _rgb("#c4673a")
    s.lathe(
        cx, 0.0, 250.0, 360.0, lambda y: 62.0 - 0.16 * (y - 250.0), clay, pitch=pitch, gloss=0.1
    )
    s.lathe(
        cx,
        0.0,
        236.0,
        262.0,
        lambda y: np.full_like(y, 70.0),
        _rgb("#cf7344"),
        pitch=pitch,
        gloss=0.1,
    )
    up = (0.0, -np.cos(pitch), np.sin(pitch))
    s.disc((cx, 236.0 * np.cos(pitch), -236.0 * np.sin(pitch)), up, 0.0, 70.0, _rgb("#4a2f1d"))
    s.lathe(cx, 0.0, 150.0, 240.0, lambda y: 7.0 - 0.02 * (150.0 - y), _rgb("#6b4423"))
    # The crown: a dark core covered by leaf clumps on a Fibonacci spiral (evenly spread,
    # deterministic), so the silhouette is bumpy and every clump catches the light.
    centre, crown = np.array([144.0, 112.0, 0.0]), 74.0
    s.ellipsoid(tuple(centre), (crown, crown * 0.92, crown), _rgb("#1f5a22"), gloss=0.05)
    greens = [_rgb(c) for c in ("#2f7a30", "#3f8f3a", "#4a9b40", "#358334", "#56a646")]
    count, golden = 90, np.pi * (3.0 - np.sqrt(5.0))
    for i in range(count):
        z = 1.0 - 2.0 * (i + 0.5) / count
        ring, theta = np.sqrt(1.0 - z * z), golden * i
        direction = np.array([ring * np.cos(theta), z * 0.92, ring * np.sin(theta)])
        if direction[2] < -0.3:
            continue  # hidden behind the crown anyway
        r = 15.0 + 5.0 * ((i * 7) % 5) / 4.0
        pos = centre + direction * (crown - 6.0)
        s.ellipsoid(tuple(pos), (r, r, r), greens[i % len(greens)], gloss=0.12, shininess=20)
    return s.render(None)


def planet() -> Image.Image:
    """A banded gas giant with a tilted ring; transparent background."""
    s = Scene(256, 256)
    c, r = (128.0, 128.0, 0.0), 74.0
    # Bands follow latitude; a gentle wobble keeps them from looking ruled.
    lat = (s.y - c[1]) / r + 0.04 * np.sin((s.x - c[0]) / 9.0)
    band = 0.5 + 0.5 * np.sin(lat * 17.0) * np.cos(lat * 5.0)
    tan, cream = np.array(_rgb("#c98f4f")), np.array(_rgb("#f0dcb0"))
    albedo = tan + (cream - tan) * band[..., None]
    s.ellipsoid(c, (r, r, r), albedo, gloss=0.05)
    tilt = np.radians(16)  # the ring plane, seen from a little above it
    n = (0.12, -np.cos(tilt), np.sin(tilt))

    def ring_colour(d: Array) -> Array:
        t = 0.6 + 0.4 * np.cos(d * 0.55) * np.cos(d * 0.13)
        return np.array(_rgb("#d8c49a")) * t[..., None]

    s.disc(c, n, 92.0, 124.0, ring_colour, gloss=0.05)
    return s.render(None)


def duck() -> Image.Image:
    """A yellow rubber duck on a plain pale-blue background (opaque PNG)."""
    s = Scene(352, 320)
    yellow, orange = _rgb("#f6c915"), _rgb("#f07a12")
    s.ellipsoid((170.0, 212.0, 0.0), (122.0, 78.0, 90.0), yellow, gloss=0.5, shininess=50)
    s.ellipsoid((266.0, 170.0, -10.0), (34.0, 30.0, 40.0), yellow, gloss=0.5, shininess=50)
    s.ellipsoid((150.0, 104.0, 20.0), (62.0, 60.0, 60.0), yellow, gloss=0.5, shininess=50)
    s.ellipsoid((92.0, 122.0, 40.0), (34.0, 13.0, 30.0), orange, gloss=0.5, shininess=40)
    s.ellipsoid((96.0, 134.0, 34.0), (28.0, 9.0, 26.0), _rgb("#d9600c"), gloss=0.3)
    s.ellipsoid((128.0, 88.0, 70.0), (9.0, 11.0, 8.0), _rgb("#151515"), gloss=0.9, shininess=120)
    s.ellipsoid((184.0, 214.0, 88.0), (56.0, 34.0, 12.0), _rgb("#f2bd10"), gloss=0.4)  # wing
    return s.render(_rgb("#dfeaf2"))


def vase() -> Image.Image:
    """A glossy blue vase on a plain warm-grey background (JPEG)."""
    s = Scene(288, 384)
    pitch = np.radians(12)
    top, bottom, cx = 40.0, 360.0, 144.0

    def radius(y: Array) -> Array:
        t = (y - top) / (bottom - top)
        belly = 92.0 * np.exp(-(((t - 0.66) / 0.27) ** 2))
        neck = 30.0 + 14.0 * np.exp(-((t / 0.05) ** 2))  # flared lip
        k = 0.25  # smooth maximum: no crease where the neck meets the belly
        return np.logaddexp(k * neck, k * belly) / k + 2.0 * np.sin(t * np.pi)

    def glaze(y: Array, _angle: Array) -> Array:
        t = np.clip((y - top) / (bottom - top), 0.0, 1.0)
        dark, light = np.array(_rgb("#143c8c")), np.array(_rgb("#3d7fd6"))
        return dark + (light - dark) * (0.5 + 0.5 * np.cos(t * 9.0))[..., None] ** 2

    s.lathe(cx, 0.0, top, bottom, radius, glaze, pitch=pitch, gloss=0.8, shininess=90)
    s.lathe(
        cx,
        0.0,
        top,
        top + 60.0,
        lambda y: radius(y) - 5.0,
        _rgb("#0c2556"),
        pitch=pitch,
        inside=True,
        gloss=0.1,
    )
    up = (0.0, -np.cos(pitch), np.sin(pitch))
    s.disc(
        (cx, top * np.cos(pitch), -top * np.sin(pitch)), up, 39.0, 44.5, _rgb("#2d62b8"), gloss=0.6
    )
    return s.render(_rgb("#ece6dc"))


def chair() -> Image.Image:
    """A wooden chair in three-quarter view on a plain background (JPEG)."""
    s = Scene(320, 320)
    rot = _rotation(np.radians(-32), np.radians(18))
    wood, dark = np.array(_rgb("#b07a45")), np.array(_rgb("#7a4f2a"))

    def grain(along: int) -> Callable[[Array], Array]:
        across = (along + 1) % 3

        def colour(p: Array) -> Array:
            u, v = p[..., along], p[..., across]
            rings = 0.5 + 0.5 * np.sin(v * 1.7 + 3.0 * np.sin(u * 0.045) + 0.6 * np.sin(u * 0.31))
            return wood + (dark - wood) * (rings**3)[..., None]

        return colour

    origin = np.array([160.0, 150.0, 0.0])

    def part(centre: Vec3, half: Vec3) -> None:
        along = int(np.argmax(half))
        s.box(origin + rot @ np.asarray(centre), half, rot, grain(along), gloss=0.15)

    seat_y, leg, depth, width = 20.0, 5.0, 48.0, 54.0
    part((0.0, seat_y, 0.0), (width, 5.0, depth))  # seat
    for x in (-width + leg, width - leg):
        for z in (-depth + leg, depth - leg):
            part((x, seat_y + 62.0, z), (leg, 57.0, leg))  # legs
        part((x, seat_y - 70.0, -depth + leg), (leg, 66.0, leg))  # back posts
        part((x, seat_y + 84.0, 0.0), (3.0, 3.0, depth - 2 * leg))  # side stretchers
    for y in (-120.0, -90.0, -60.0):
        part((0.0, seat_y + y, -depth + leg), (width - 2 * leg, 9.0, 3.0))  # back slats
    return s.render(_rgb("#f3f1ec"))


SAMPLES: dict[str, tuple[Callable[[], Image.Image], dict[str, Any]]] = {
    "mug.png": (mug, {"optimize": True}),
    "plant.png": (plant, {"optimize": True}),
    "planet.png": (planet, {"optimize": True}),
    "duck.png": (duck, {"optimize": True}),
    "vase.jpg": (vase, {"quality": 88, "optimize": True}),
    "chair.jpg": (chair, {"quality": 88, "optimize": True}),
}


def main(out_dir: Path = SAMPLES_DIR) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, (draw, options) in SAMPLES.items():
        path = out_dir / name
        draw().save(path, **options)
        print(f"{name}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    # An optional folder argument writes elsewhere (the tests compare it with this folder).
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else SAMPLES_DIR)
