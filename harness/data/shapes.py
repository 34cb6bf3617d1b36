"""The built-in ``shapes`` benchmark: captioned scenes of coloured shapes with known attributes.

Each scene has one object (shape, colour, size, position on a 3 x 3 grid) on a coloured background,
optionally a second, smaller object. Scenes are sampled from ``(seed, scene_id)`` alone, so any
scene renders identically in any process, at any resolution: the Stage-I and Stage-II images of a
scene agree. Ten captions per scene come from varied templates and synonyms; some leave attributes
out, and each caption records which attributes it mentions so caption fidelity can be scored.
"""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
from PIL import Image, ImageDraw

# Attribute values and the words a caption may use for each. Object colours and background
# colours use disjoint words, so a caption never names one where it means the other.
SHAPES = {
    "circle": ["circle", "disc", "round dot"],
    "square": ["square", "box"],
    "triangle": ["triangle"],
    "star": ["star"],
    "hexagon": ["hexagon"],
    "cross": ["cross", "plus sign"],
}
COLOURS = {
    "red": ((220, 30, 30), ["red", "crimson", "scarlet"]),
    "orange": ((245, 140, 20), ["orange", "tangerine"]),
    "yellow": ((240, 220, 30), ["yellow", "golden"]),
    "green": ((40, 170, 60), ["green", "emerald"]),
    "cyan": ((40, 200, 220), ["cyan", "turquoise"]),
    "blue": ((40, 70, 220), ["blue", "cobalt"]),
    "purple": ((140, 50, 200), ["purple", "violet"]),
    "pink": ((245, 120, 190), ["pink", "rose"]),
}
BACKGROUNDS = {
    "black": ((15, 15, 15), ["black", "jet black", "dark"]),
    "white": ((245, 245, 245), ["white", "snowy"]),
    "grey": ((150, 150, 150), ["grey", "gray", "pale grey"]),
    "brown": ((110, 75, 45), ["brown", "chocolate"]),
}
SIZES = {  # radius as a fraction of the image side; a grid cell is 1/3 of the side
    "small": (0.075, ["small", "little", "tiny"]),
    "medium": (0.115, ["medium", "medium-sized", "mid-sized"]),
    "large": (0.16, ["large", "big", "huge"]),
}
ROWS = ["top", "middle", "bottom"]
COLS = ["left", "centre", "right"]
POSITIONS = [f"{r} {c}" for r in ROWS for c in COLS]
_ROW_WORDS = {"top": ["top", "upper"], "middle": ["middle"], "bottom": ["bottom", "lower"]}

ATTRIBUTES = ("shape", "colour", "size", "position", "background")
ATTRIBUTE_VALUES: dict[str, list[str]] = {
    "shape": list(SHAPES),
    "colour": list(COLOURS),
    "size": list(SIZES),
    "position": POSITIONS,
    "background": list(BACKGROUNDS),
}
CAPTIONS_PER_SCENE = 10
DATASET_VERSION = 1  # bump when rendering or captions change: judges are cached per version


@dataclasses.dataclass(frozen=True)
class ShapeObject:
    shape: str
    colour: str
    size: str
    position: str
    jitter: tuple[float, float]  # small offset from the cell centre, fraction of the side
    rotation: float  # radians; small, so a square stays a square and not a diamond


@dataclasses.dataclass(frozen=True)
class Scene:
    scene_id: int
    background: str
    objects: tuple[ShapeObject, ...]  # the first is the primary object the captions lead with

    @property
    def attributes(self) -> dict[str, str]:
        first = self.objects[0]
        return {
            "shape": first.shape,
            "colour": first.colour,
            "size": first.size,
            "position": first.position,
            "background": self.background,
        }

    @property
    def key(self) -> int:
        """Scenes with the same primary attributes share a key: mismatched captions avoid it."""
        a = self.attributes
        key = 0
        for name in ATTRIBUTES:
            values = ATTRIBUTE_VALUES[name]
            key = key * len(values) + values.index(a[name])
        return key


def sample_scene(seed: int, scene_id: int, second_object_prob: float = 0.0) -> Scene:
    rng = np.random.default_rng([seed, scene_id])

    def pick(options):
        return options[int(rng.integers(len(options)))]

    def obj(size_choices, position_choices):
        return ShapeObject(
            shape=pick(list(SHAPES)),
            colour=pick(list(COLOURS)),
            size=pick(size_choices),
            position=pick(position_choices),
            jitter=(float(rng.uniform(-0.02, 0.02)), float(rng.uniform(-0.02, 0.02))),
            rotation=float(rng.uniform(-0.15, 0.15)),
        )

    background = pick(list(BACKGROUNDS))
    primary = obj(list(SIZES), POSITIONS)
    objects = [primary]
    if second_object_prob > 0 and rng.random() < second_object_prob and primary.size != "small":
        # Strictly smaller and elsewhere, so the primary object stays identifiable.
        smaller = list(SIZES)[: list(SIZES).index(primary.size)]
        objects.append(obj(smaller, [p for p in POSITIONS if p != primary.position]))
    return Scene(scene_id, background, tuple(objects))


def _polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    def ring(n, radius, offset):
        return [
            (cx + radius * math.cos(offset + rot + 2 * math.pi * k / n),
             cy + radius * math.sin(offset + rot + 2 * math.pi * k / n))
            for k in range(n)
        ]

    if shape == "square":
        return ring(4, r * 1.05, math.pi / 4)
    if shape == "triangle":
        return ring(3, r * 1.15, -math.pi / 2)
    if shape == "hexagon":
        return ring(6, r, 0.0)
    if shape == "star":
        outer, inner = ring(5, r * 1.15, -math.pi / 2), ring(5, r * 0.48, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner) for p in pair]
    if shape == "cross":
        a, b = r, r * 0.36
        pts = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]
        c, s = math.cos(rot), math.sin(rot)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]
    raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene, size: int) -> Image.Image:
    """Anti-aliased RGB image of the scene, ``size`` x ``size``: drawn 4x larger, then downsampled."""
    big = size * 4
    img = Image.new("RGB", (big, big), BACKGROUNDS[scene.background][0])
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        row, col = o.position.split()
        cx = (COLS.index(col) + 0.5) / 3 + o.jitter[0]
        cy = (ROWS.index(row) + 0.5) / 3 + o.jitter[1]
        r = SIZES[o.size][0] * big
        fill = COLOURS[o.colour][0]
        if o.shape == "circle":
            draw.ellipse([cx * big - r, cy * big - r, cx * big + r, cy * big + r], fill=fill)
        else:
            draw.polygon(_polygon(o.shape, cx * big, cy * big, r, o.rotation), fill=fill)
    return img.resize((size, size), Image.Resampling.BOX)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # fast; flat-colour scenes compress well anyway
    return buf.getvalue()


def _position_phrase(position: str, pick) -> str:
    row, col = position.split()
    if position == "middle centre":
        return pick(["in the centre", "in the middle", "at the center"])
    if row == "middle":
        return pick([f"on the {col}", f"at the middle {col}", f"on the {col} side"])
    if col == "centre":
        return pick([f"at the {pick(_ROW_WORDS[row])}", f"at the {row} centre", f"{pick(_ROW_WORDS[row])} middle"])
    return pick([f"in the {pick(_ROW_WORDS[row])} {col} corner", f"near the {row} {col}", f"{pick(_ROW_WORDS[row])} {col}"])


# Templates name the attributes they mention; several leave some out, as real captions do.
_TEMPLATES: list[tuple[str, tuple[str, ...]]] = [
    ("a {size} {colour} {shape} {where} on a {bg} background", ATTRIBUTES),
    ("{bg} backdrop, {size} {colour} {shape}, {where}", ATTRIBUTES),
    ("a {colour} {shape} {where}", ("colour", "shape", "position")),
    ("a {shape} that is {colour} and {size}, against {bg}", ("shape", "colour", "size", "background")),
    ("{colour} {shape} on {bg}", ("colour", "shape", "background")),
    ("{where} there is a {size} {shape} coloured {colour}", ("position", "size", "shape", "colour")),
    ("a picture of a {size} {colour} {shape}", ("size", "colour", "shape")),
    ("one {colour} {shape} sits {where} of a {bg} canvas", ("colour", "shape", "position", "background")),
    ("{size} {shape}, {colour}, {where}, {bg} background", ATTRIBUTES),
    ("a {colour} shape {where} on {bg}", ("colour", "position", "background")),
]


def _fill(template: str, attributes: dict[str, str], pick) -> str:
    return template.format(
        size=pick(SIZES[attributes["size"]][1]),
        colour=pick(COLOURS[attributes["colour"]][1]),
        shape=pick(SHAPES[attributes["shape"]]),
        where=_position_phrase(attributes["position"], pick),
        bg=pick(BACKGROUNDS[attributes["background"]][1]),
    )


def canonical_caption(attributes: dict[str, str]) -> str:
    """The first template, naming every attribute with its first word: two attribute sets that differ
    in one value give captions that differ only in that value's words (for probes of a model)."""
    return _fill(_TEMPLATES[0][0], attributes, lambda options: options[0])


def attributes_of_key(key: int) -> dict[str, str]:
    """The primary object's attributes from ``Scene.key`` (its inverse)."""
    out = {}
    for name in reversed(ATTRIBUTES):
        values = ATTRIBUTE_VALUES[name]
        key, index = divmod(key, len(values))
        out[name] = values[index]
    if key:
        raise ValueError("key out of range")
    return {name: out[name] for name in ATTRIBUTES}


def captions(scene: Scene, seed: int) -> list[tuple[str, tuple[str, ...]]]:
    """Ten (caption, attributes it mentions) pairs; the first always mentions every attribute."""
    rng = np.random.default_rng([seed, scene.scene_id, 1])

    def pick(options):
        return options[int(rng.integers(len(options)))]

    order = [0] + list(rng.permutation(np.arange(1, len(_TEMPLATES))))
    out = []
    for i in range(CAPTIONS_PER_SCENE):
        template, mentions = _TEMPLATES[order[i % len(order)]]
        text = _fill(template, scene.attributes, pick)
        if len(scene.objects) > 1:
            o = scene.objects[1]
            text += (f" and a {pick(SIZES[o.size][1])} {pick(COLOURS[o.colour][1])} {pick(SHAPES[o.shape])} "
                     f"{_position_phrase(o.position, pick)}")
        out.append((text, mentions))
    return out
