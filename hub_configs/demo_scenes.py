"""Synthetic scenes for `mmhub demo`: coloured shapes in the quarters of a picture, with long captions.

Every caption starts with the same long description of the picture set (`PREAMBLE`, more than 77 tokens), and only
then lists what each quarter holds. A model that reads 77 tokens sees the shared part only, so every caption looks
the same to it; a model that reads 248 tokens sees the details that tell the pictures apart.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

COLOURS = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 90, 220),
    "yellow": (240, 200, 20),
    "purple": (148, 60, 189),
    "orange": (255, 127, 14),
}
SHAPES = ("circle", "square", "triangle")
# Quarter name -> (column, row); captions list the quarters in this order.
QUARTERS = {"top left": (0, 0), "top right": (1, 0), "bottom left": (0, 1), "bottom right": (1, 1)}
BACKGROUND = (200, 200, 200)
PREAMBLE = (
    "A flat, simple picture from a synthetic test set, drawn by a small program on a light grey square canvas with "
    "no texture, no shading, no text, no border and no people. The canvas is split into four equal quarters, and each "
    "quarter holds at most one plain coloured shape (a circle, a square or a triangle) drawn large in its middle. "
    "Quarter by quarter, this picture shows:"
)
MIN_OBJECTS, MAX_OBJECTS = 2, 4


@dataclass(frozen=True)
class Scene:
    """A picture: `objects` maps quarter names to `(colour, shape)`; quarters not listed are empty."""

    objects: tuple[tuple[str, str, str], ...]  # (quarter, colour, shape), in QUARTERS order

    def details(self) -> str:
        """The part of the caption that tells this scene apart from the others."""
        held = {quarter: (colour, shape) for quarter, colour, shape in self.objects}
        parts = []
        for quarter in QUARTERS:
            if quarter in held:
                colour, shape = held[quarter]
                content = f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape}"
            else:
                content = "nothing"
            parts.append(f"{quarter.capitalize()}: {content}.")
        return " ".join(parts)

    def caption(self) -> str:
        return f"{PREAMBLE} {self.details()}"

    def render(self, size: int):
        """Draw the scene as a `size` x `size` RGB PIL image."""
        from PIL import Image, ImageDraw

        image = Image.new("RGB", (size, size), BACKGROUND)
        draw = ImageDraw.Draw(image)
        half = size / 2
        margin = size / 16
        for quarter, colour, shape in self.objects:
            column, row = QUARTERS[quarter]
            left, top = column * half + margin, row * half + margin
            right, bottom = (column + 1) * half - margin - 1, (row + 1) * half - margin - 1
            fill = COLOURS[colour]
            if shape == "circle":
                draw.ellipse((left, top, right, bottom), fill=fill)
            elif shape == "square":
                draw.rectangle((left, top, right, bottom), fill=fill)
            else:
                draw.polygon([((left + right) / 2, top), (left, bottom), (right, bottom)], fill=fill)
        return image


def generate_scenes(count: int, seed: int) -> list[Scene]:
    """`count` distinct random scenes with 2-4 objects each, the same for the same seed.

    Distinct, so that no two captions of a retrieval set describe the same picture.
    """
    if count < 1:
        raise ValueError(f"count must be positive, got {count}")
    rng = random.Random(seed)
    scenes: list[Scene] = []
    seen: set[Scene] = set()
    while len(scenes) < count:
        quarters = rng.sample(list(QUARTERS), rng.randint(MIN_OBJECTS, MAX_OBJECTS))
        objects = tuple(
            (quarter, rng.choice(list(COLOURS)), rng.choice(SHAPES)) for quarter in QUARTERS if quarter in quarters
        )
        scene = Scene(objects)
        if scene not in seen:
            seen.add(scene)
            scenes.append(scene)
    return scenes


def first_detail_token(tokenizer) -> int:
    """Index (begin token = 0) of the first caption token after the shared preamble."""
    # The preamble ends with ":" and the details start with a new word, so its tokens are the same on its own.
    return len(tokenizer(PREAMBLE)["input_ids"]) - 1
