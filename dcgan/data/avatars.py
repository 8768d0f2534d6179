"""Procedural cartoon avatar faces, drawn with PIL.

Each avatar is a function of (seed, index) only: `draw_avatar(seed, index)`
seeds `np.random.default_rng((seed, index))`, samples one class per attribute
of `ATTRIBUTES` plus some unlabelled nuisance variation (position, size, clothes
and accessory colours, blush, bang shape), draws at `SUPERSAMPLE` times the
final size and downsamples (2x box, then LANCZOS) so that edges are smooth.

The labelled attributes are drawn large and in distinct colours so that each
one can be read off a 48x48 copy; they serve to measure mode collapse.
"""

import dataclasses
import functools
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 96
SUPERSAMPLE = 4
# Bump when the drawing changes, so that cached datasets are rebuilt.
DRAWING_VERSION = 1

Color = tuple[int, int, int]

SKIN_TONES: dict[str, Color] = {
    'porcelain': (255, 232, 220),
    'light': (250, 214, 184),
    'tan': (226, 176, 130),
    'brown': (176, 118, 80),
    'dark': (112, 72, 50),
}
HAIR_COLORS: dict[str, Color] = {
    'black': (42, 38, 48),
    'brown': (122, 74, 40),
    'blonde': (246, 210, 100),
    'red': (200, 40, 42),
    'orange': (246, 132, 36),
    'pink': (250, 142, 188),
    'purple': (140, 82, 200),
    'blue': (52, 102, 220),
    'green': (60, 170, 80),
    'silver': (210, 214, 226),
}
EYE_COLORS: dict[str, Color] = {
    'brown': (130, 76, 38),
    'blue': (40, 110, 235),
    'green': (40, 170, 70),
    'red': (225, 30, 40),
    'purple': (150, 60, 210),
    'gold': (240, 180, 20),
    'cyan': (20, 200, 210),
    'pink': (245, 90, 170),
}
BACKGROUNDS: dict[str, Color] = {
    'white': (250, 250, 250),
    'sky': (170, 214, 250),
    'mint': (176, 238, 200),
    'peach': (255, 200, 170),
    'lavender': (212, 190, 250),
    'lemon': (252, 242, 160),
    'rose': (252, 190, 214),
    'gray': (140, 140, 150),
}
FACE_SHAPES = ('round', 'oval', 'pointed', 'square')
HAIR_STYLES = ('short', 'bob', 'long', 'twin_tails', 'bun', 'spiky')
MOUTHS = ('smile', 'grin', 'neutral', 'cat', 'open')
ACCESSORIES = ('none', 'glasses', 'hat', 'bow', 'flower', 'cat_ears')

# Attribute name -> class names; a label is an index into its tuple.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    'face_shape': FACE_SHAPES,
    'skin_tone': tuple(SKIN_TONES),
    'hair_style': HAIR_STYLES,
    'hair_color': tuple(HAIR_COLORS),
    'eye_color': tuple(EYE_COLORS),
    'mouth': MOUTHS,
    'accessory': ACCESSORIES,
    'background': tuple(BACKGROUNDS),
}

# Unlabelled colours: they vary but carry no label.
_CLOTHES = ((70, 90, 160), (200, 60, 80), (60, 140, 110), (240, 240, 240),
            (60, 60, 70), (240, 170, 60), (150, 100, 190))
_ACCENTS = ((235, 40, 70), (255, 110, 170), (60, 120, 240), (250, 200, 40),
            (120, 200, 90), (250, 250, 250), (160, 80, 220))
_LINE = (60, 36, 36)  # dark brown: softer than black for outlines
_MOUTH_INSIDE = (150, 40, 50)
_TONGUE = (240, 120, 130)


def sample_attributes(rng: np.random.Generator) -> dict[str, int]:
  """Draws one class index per attribute, uniformly."""
  return {name: int(rng.integers(len(classes)))
          for name, classes in ATTRIBUTES.items()}


def draw_avatar(seed: int, index: int,
                size: int = IMAGE_SIZE) -> tuple[np.ndarray, dict[str, int]]:
  """Draws avatar `index` of the set with drawing seed `seed`.

  Args:
    seed: the drawing seed (non-negative).
    index: the avatar's index (non-negative).
    size: output side in pixels; the drawing is the same at every size.

  Returns:
    (image, labels): a uint8 array (size, size, 3) and {attribute: class
    index}.
  """
  rng = np.random.default_rng((seed, index))
  labels = sample_attributes(rng)
  return render(labels, rng, size), labels


def draw_avatars(seed: int, indices: Sequence[int],
                 size: int = IMAGE_SIZE) -> np.ndarray:
  """Images of `draw_avatar(seed, i)` for i in indices, (N, size, size, 3)."""
  return np.stack([draw_avatar(seed, i, size)[0] for i in indices])


def render(labels: dict[str, int], rng: np.random.Generator,
           size: int = IMAGE_SIZE) -> np.ndarray:
  """Draws the avatar with these labels; `rng` supplies the nuisances.

  Returns:
    A uint8 array (size, size, 3).
  """
  names = {k: ATTRIBUTES[k][v] for k, v in labels.items()}
  canvas = size * SUPERSAMPLE
  image = Image.new('RGB', (canvas, canvas), BACKGROUNDS[names['background']])
  # Geometry is in 96x96 units whatever the size.
  pen = _Pen(ImageDraw.Draw(image), canvas / IMAGE_SIZE)
  face = _Face.sample(names, rng)
  _draw_background_glow(pen, names['background'])
  _draw_body(pen, face, _CLOTHES[rng.integers(len(_CLOTHES))])
  _draw_hair_back(pen, face, names['hair_style'])
  if names['accessory'] == 'cat_ears':
    _draw_cat_ears(pen, face)
  _draw_face(pen, face)
  _draw_eyes(pen, face, EYE_COLORS[names['eye_color']])
  _draw_mouth(pen, face, names['mouth'])
  if rng.random() < 0.7:
    _draw_blush(pen, face)
  _draw_hair_front(pen, face, names['hair_style'])
  _draw_accessory(pen, face, names['accessory'], rng)
  return np.asarray(_downsample(image, size))


def _downsample(image: Image.Image, size: int) -> Image.Image:
  # A box reduce to 2x then LANCZOS: the quality of LANCZOS all the way (what
  # PIL's `reducing_gap` does) at under half the cost.
  image = image.reduce(SUPERSAMPLE // 2)
  return image.resize((size, size), Image.LANCZOS)


class _Pen:
  """ImageDraw in 96x96 units: coordinates and widths are scaled."""

  def __init__(self, draw: ImageDraw.ImageDraw, scale: float):
    self.draw, self.s = draw, scale

  def _pts(self, points) -> list[tuple[float, float]]:
    return [(x * self.s, y * self.s) for x, y in points]

  def _w(self, width: float) -> int:
    return max(1, round(width * self.s))

  def ellipse(self, cx, cy, rx, ry, fill=None, outline=None, width=1.0):
    s = self.s
    self.draw.ellipse(((cx - rx) * s, (cy - ry) * s, (cx + rx) * s,
                       (cy + ry) * s), fill=fill, outline=outline,
                      width=self._w(width))

  def polygon(self, points, fill=None, outline=None, width=1.0):
    self.draw.polygon(self._pts(points), fill=fill, outline=outline,
                      width=self._w(width))

  def line(self, points, fill, width=1.0):
    self.draw.line(self._pts(points), fill=fill, width=self._w(width),
                   joint='curve')

  def arc(self, cx, cy, rx, ry, start, end, fill, width=1.0):
    s = self.s
    self.draw.arc(((cx - rx) * s, (cy - ry) * s, (cx + rx) * s,
                   (cy + ry) * s), start, end, fill=fill, width=self._w(width))


@dataclasses.dataclass(frozen=True)
class _Face:
  """Geometry of one face, in 96x96 units, with its colours."""
  cx: float  # face centre
  cy: float
  a: float  # half-width
  b_up: float  # half-height of the upper half (forehead)
  shape: str  # one of FACE_SHAPES
  skin: Color
  skin_line: Color
  hair: Color
  hair_dark: Color  # hair outlines
  hair_light: Color  # the hair highlight
  eye_dx: float  # eye centres at cx +- eye_dx, cy + eye_dy
  eye_dy: float
  eye_scale: float
  bang_tips: int  # locks in the bangs
  bang_seed: float  # wobble of the lock tips
  accent: Color  # bows, hats, hair ties: never close to the hair colour

  @classmethod
  def sample(cls, names: dict[str, str], rng: np.random.Generator) -> '_Face':
    scale = rng.uniform(1.07, 1.17)
    hair = HAIR_COLORS[names['hair_color']]
    skin = SKIN_TONES[names['skin_tone']]
    return cls(
        cx=48 + rng.uniform(-2.5, 2.5), cy=51 + rng.uniform(-2, 2),
        a=24 * scale, b_up=25 * scale, shape=names['face_shape'],
        skin=skin, skin_line=_shade(skin, 0.62),
        hair=hair, hair_dark=_shade(hair, 0.62), hair_light=_tint(hair, 0.45),
        eye_dx=11.5 * scale, eye_dy=3.5 * scale, eye_scale=scale,
        bang_tips=int(rng.integers(4, 7)), bang_seed=rng.random(),
        accent=_pick_accent(hair, rng))

  @property
  def b_lo(self) -> float:
    """Half-height of the lower half of the face, by shape."""
    return {'round': 20, 'oval': 30, 'pointed': 29, 'square': 24}[
        self.shape] * self.a / 24

  def outline(self, n: int = 48) -> list[tuple[float, float]]:
    """Points around the face, clockwise from the right ear."""
    t_up = _angles(math.pi, 2 * math.pi, n, endpoint=False)
    t_lo = _angles(0, math.pi, n, endpoint=False)
    a = self.a * {'round': 1.08, 'oval': 0.86}.get(self.shape, 1.0)
    up = [(self.cx + a * math.cos(t), self.cy + self.b_up * math.sin(t))
          for t in t_up]
    # The lower half sets the jaw: cos^q with q near 2 gives a chin point,
    # a superellipse gives a square jaw.
    q = {'round': 1.0, 'oval': 1.0, 'pointed': 2.0, 'square': 0.4}[
        self.shape]
    p = 0.4 if self.shape == 'square' else 1.0
    lo = [(self.cx + math.copysign(a * abs(math.cos(t))**q, math.cos(t)),
           self.cy + self.b_lo * math.sin(t)**p) for t in t_lo]
    return lo + up


def _pick_accent(hair: Color, rng: np.random.Generator) -> Color:
  # Accessories must not vanish into the hair: keep colours far from it.
  far = [c for c in _ACCENTS
         if sum((x - y)**2 for x, y in zip(c, hair)) > 90**2]
  return far[rng.integers(len(far))]


@functools.cache
def _angles(start: float, stop: float, n: int,
            endpoint: bool = True) -> tuple[float, ...]:
  """np.linspace as a tuple of floats, cached: cheap in the drawing loops."""
  return tuple(float(t) for t in np.linspace(start, stop, n,
                                             endpoint=endpoint))


def _shade(color: Color, factor: float) -> Color:
  return tuple(int(c * factor) for c in color)


def _tint(color: Color, amount: float) -> Color:
  return tuple(int(c + (255 - c) * amount) for c in color)


def _mix(a: Color, b: Color, t: float) -> Color:
  return tuple(int(x * (1 - t) + y * t) for x, y in zip(a, b))


def _draw_background_glow(pen: _Pen, background: str) -> None:
  # A soft lighter disc behind the head: reads as a portrait backdrop.
  color = BACKGROUNDS[background]
  pen.ellipse(48, 46, 44, 44, fill=_tint(color, 0.35))


def _draw_body(pen: _Pen, f: _Face, clothes: Color) -> None:
  top = f.cy + f.b_lo + 5
  pen.ellipse(f.cx, top + 22, 34, 24, fill=clothes,
              outline=_shade(clothes, 0.6), width=1.2)
  # The neck goes over the shirt so that it ends in a V collar; only its sides
  # get an outline.
  neck_top = f.cy + f.b_lo - 8
  left = [(f.cx - 7, neck_top), (f.cx - 7.5, top + 1)]
  right = [(f.cx + 7.5, top + 1), (f.cx + 7, neck_top)]
  pen.polygon(left + [(f.cx, top + 9)] + right, fill=f.skin)
  pen.line(left, fill=f.skin_line, width=1.0)
  pen.line(right, fill=f.skin_line, width=1.0)


def _draw_hair_back(pen: _Pen, f: _Face, style: str) -> None:
  """Hair behind the face: sets the silhouette of each style."""
  cx, cy, a, b = f.cx, f.cy, f.a, f.b_up
  kw = dict(fill=f.hair, outline=f.hair_dark, width=1.2)
  if style == 'long':
    pen.polygon([(cx - a - 6, cy - 8), (cx - a - 13, 98), (cx + a + 13, 98),
                 (cx + a + 6, cy - 8)], **kw)
  elif style == 'bob':
    pen.polygon([(cx - a - 5, cy - 6), (cx - a - 7, cy + 20),
                 (cx - a + 2, cy + 24), (cx + a - 2, cy + 24),
                 (cx + a + 7, cy + 20), (cx + a + 5, cy - 6)], **kw)
  elif style == 'twin_tails':
    for side in (-1, 1):
      x = cx + side * (a + 11)
      pen.polygon([(x - side * 8, cy - 20), (x + side * 8, cy - 14),
                   (x + side * 12, cy + 4), (x + side * 9, cy + 26),
                   (x + side * 2, cy + 42), (x - side * 3, cy + 22),
                   (x - side * 6, cy + 2), (x - side * 10, cy - 8)], **kw)
  elif style == 'bun':
    pen.ellipse(cx, cy - b - 7, 11, 10, **kw)
  elif style == 'spiky':
    n = 11
    angles = _angles(math.pi * 0.93, math.pi * 2.07, 2 * n + 1)
    pts = []
    for i, t in enumerate(angles):
      r = 1.0 if i % 2 else 0.0
      rx, ry = a + 5 + 11 * r, b + 5 + 12 * r
      pts.append((cx + rx * math.cos(t), cy - 2 + ry * math.sin(t)))
    pen.polygon(pts, **kw)
  # Every style has the back of the skull, down to the ears.
  pen.polygon([(cx + (a + 5) * math.cos(t), cy - 3 + (b + 5) * math.sin(t))
               for t in _angles(math.pi - 0.3, 2 * math.pi + 0.3, 32)], **kw)


def _draw_cat_ears(pen: _Pen, f: _Face) -> None:
  top = f.cy - f.b_up - 2
  for side in (-1, 1):
    x = f.cx + side * 15
    pen.polygon([(x - 10, top + 8), (x + side * 6, top - 16),
                 (x + 10, top + 6)], fill=f.hair, outline=f.hair_dark,
                width=1.2)
    pen.polygon([(x - 5, top + 6), (x + side * 5, top - 9), (x + 5, top + 5)],
                fill=(250, 170, 190))


def _draw_face(pen: _Pen, f: _Face) -> None:
  # Ears first so that the face outline covers their inner edge.
  for side in (-1, 1):
    pen.ellipse(f.cx + side * (f.a - 1), f.cy + 4, 4.5, 6.5, fill=f.skin,
                outline=f.skin_line, width=1.0)
  pen.polygon(f.outline(), fill=f.skin, outline=f.skin_line, width=1.1)


def _draw_eyes(pen: _Pen, f: _Face, iris: Color) -> None:
  s = f.eye_scale
  y = f.cy + f.eye_dy
  for side in (-1, 1):
    x = f.cx + side * f.eye_dx
    pen.ellipse(x, y, 7.2 * s, 8.6 * s, fill=(255, 255, 255))
    pen.ellipse(x, y + 0.6, 6.0 * s, 8.0 * s, fill=_shade(iris, 0.65))
    pen.ellipse(x, y + 2.2 * s, 5.0 * s, 6.0 * s, fill=iris)
    pen.ellipse(x, y + 4.2 * s, 3.6 * s, 3.0 * s, fill=_tint(iris, 0.35))
    pen.ellipse(x, y + 1.0, 2.8 * s, 3.8 * s, fill=_shade(iris, 0.3))
    # Two highlights: the big one upper left, a small one lower right.
    pen.ellipse(x - 2.4 * s, y - 3.0 * s, 2.3 * s, 2.3 * s,
                fill=(255, 255, 255))
    pen.ellipse(x + 2.4 * s, y + 3.6 * s, 1.1 * s, 1.1 * s,
                fill=(255, 255, 255))
    # Upper lash: a thick arc with a flick at the outer corner.
    pen.arc(x, y + 0.5, 7.8 * s, 9.2 * s, 200, 340, fill=_LINE, width=2.0)
    outer = x + side * 7.4 * s
    pen.line([(outer - side * 0.5, y - 3.2 * s),
              (outer + side * 2.2, y - 5.2 * s)], fill=_LINE, width=1.5)


def _draw_mouth(pen: _Pen, f: _Face, mouth: str) -> None:
  x, y = f.cx, f.cy + 16 + (2 if f.shape in ('oval', 'pointed') else 0)
  # A tiny nose, just a short stroke.
  pen.line([(x + 0.6, y - 6.5), (x - 0.4, y - 5.0)], fill=f.skin_line,
           width=1.0)
  # Sizes are generous so that each mouth still reads at 48x48.
  if mouth == 'smile':
    pen.arc(x, y - 3.5, 7.0, 5.5, 25, 155, fill=_LINE, width=1.6)
  elif mouth == 'grin':
    pen.polygon([(x - 7, y - 1)] + [
        (x + 7 * math.cos(t), y - 1 + 7 * math.sin(t))
        for t in _angles(0, math.pi, 12)], fill=_MOUTH_INSIDE,
                outline=_LINE, width=1.0)
    pen.ellipse(x, y + 3.6, 3.8, 2.2, fill=_TONGUE)
  elif mouth == 'neutral':
    pen.line([(x - 5, y + 1), (x + 5, y + 1)], fill=_LINE, width=1.6)
  elif mouth == 'cat':
    for side in (-1, 1):
      pen.arc(x + side * 3.2, y - 1, 3.2, 3.2, 0, 180, fill=_LINE, width=1.5)
  elif mouth == 'open':
    pen.ellipse(x, y + 1, 3.6, 4.6, fill=_MOUTH_INSIDE, outline=_LINE,
                width=1.0)


def _draw_blush(pen: _Pen, f: _Face) -> None:
  color = _mix(f.skin, (255, 110, 130), 0.4)
  for side in (-1, 1):
    pen.ellipse(f.cx + side * 14.5, f.cy + 12, 4.2, 2.2, fill=color)


def _bezier(p0, p1, p2, n: int = 6) -> list[tuple[float, float]]:
  """Points of the quadratic Bezier curve p0 -> p2 with control p1, sans p0."""
  # Plain floats: numpy costs more than it saves on six points.
  points = []
  for i in range(1, n + 1):
    t = i / n
    u = 1 - t
    points.append((u * u * p0[0] + 2 * t * u * p1[0] + t * t * p2[0],
                   u * u * p0[1] + 2 * t * u * p1[1] + t * t * p2[1]))
  return points


def _bangs(f: _Face) -> list[tuple[float, float]]:
  """The hair over the forehead, from left temple over the top to right."""
  cx, cy, a, b = f.cx, f.cy, f.a, f.b_up
  top = [(cx + (a + 4) * math.cos(t), cy - 3 + (b + 4) * math.sin(t))
         for t in _angles(math.pi, 2 * math.pi, 24)]
  # Lower edge, right to left: locks that curve to a point, tips leaning
  # away from the parting like anime bangs.
  n = f.bang_tips
  valleys = [cx + a - 2 - (2 * a - 4) * i / n for i in range(n + 1)]
  valley_y = lambda x: cy - 18 + abs(x - cx) * 0.25
  edge = [(cx + a + 2, cy + 8), (cx + a - 1, cy - 6)]
  for i in range(n):
    x0, x1 = valleys[i], valleys[i + 1]
    p0, p1 = (x0, valley_y(x0)), (x1, valley_y(x1))
    lean = 0.35 if (x0 + x1) / 2 > cx else 0.65
    tip_x = x0 + (x1 - x0) * lean
    tip = (tip_x, cy - 7 + 2.0 * math.sin(f.bang_seed * 20 + i))
    edge += _bezier(p0, (x0 + (x1 - x0) * 0.1, tip[1] - 2), tip)
    edge += _bezier(tip, (x1 - (x1 - x0) * 0.15, tip[1] - 6), p1)
  edge += [(cx - a + 1, cy - 6), (cx - a - 2, cy + 8)]
  return top + edge


def _draw_hair_front(pen: _Pen, f: _Face, style: str) -> None:
  """Side locks, bangs, the hair highlight and hair ties."""
  cx, cy, a = f.cx, f.cy, f.a
  kw = dict(fill=f.hair, outline=f.hair_dark, width=1.2)
  # Side locks in front of the cheeks frame the face; their length follows the
  # style.
  lock_end = {'short': 8, 'bob': 24, 'long': 46, 'twin_tails': 14,
              'bun': 10, 'spiky': 10}[style]
  for side in (-1, 1):
    x = cx + side * (a + 1)
    pen.polygon([(x - side * 6, cy - 10), (x + side * 4, cy - 8),
                 (x + side * 3, cy + lock_end - 4),
                 (x - side * 1, cy + lock_end),
                 (x - side * 4, cy + lock_end - 8)], **kw)
  pen.polygon(_bangs(f), **kw)
  # The 'angel ring' highlight that anime hair has.
  pen.arc(cx - 2, cy - 6, a - 2, f.b_up - 2, 205, 250, fill=f.hair_light,
          width=2.2)
  if style == 'twin_tails':
    for side in (-1, 1):
      pen.ellipse(cx + side * (a + 6), cy - 15, 3.2, 3.2, fill=f.accent,
                  outline=_shade(f.accent, 0.6), width=0.8)
  elif style == 'bun':
    pen.ellipse(cx, cy - f.b_up - 1, 4.5, 2.2, fill=f.accent)


def _draw_accessory(pen: _Pen, f: _Face, accessory: str,
                    rng: np.random.Generator) -> None:
  cx, cy, a, b = f.cx, f.cy, f.a, f.b_up
  color = f.accent
  line = _shade(color, 0.55)
  if accessory == 'glasses':
    y = cy + f.eye_dy + 0.5
    frame = (40, 40, 60) if rng.random() < 0.5 else (150, 30, 40)
    for side in (-1, 1):
      pen.ellipse(cx + side * f.eye_dx, y, 9.5, 9.0, outline=frame, width=1.5)
    pen.line([(cx - 3, y - 1.5), (cx + 3, y - 1.5)], fill=frame, width=1.5)
    pen.line([(cx - a + 1, y - 2), (cx - f.eye_dx - 9.5, y - 1.5)],
             fill=frame, width=1.3)
    pen.line([(cx + a - 1, y - 2), (cx + f.eye_dx + 9.5, y - 1.5)],
             fill=frame, width=1.3)
  elif accessory == 'hat':
    top = cy - b - 12
    pen.polygon([(cx - a - 6, cy - 12)] + [
        (cx + (a + 6) * math.cos(t), cy - 12 + (cy - 12 - top) * math.sin(t))
        for t in _angles(math.pi, 2 * math.pi, 20)], fill=color,
                outline=line, width=1.2)
    pen.polygon([(cx - a - 8, cy - 18), (cx + a + 8, cy - 18),
                 (cx + a + 8, cy - 11), (cx - a - 8, cy - 11)],
                fill=_shade(color, 0.8), outline=line, width=1.2)
    pen.ellipse(cx, top - 1, 5, 5, fill=_tint(color, 0.5), outline=line,
                width=1.0)
  elif accessory == 'bow':
    x, y = cx + 14, cy - b + 1
    for side in (-1, 1):
      pen.polygon([(x, y), (x + side * 15, y - 10), (x + side * 13, y),
                   (x + side * 15, y + 9)], fill=color, outline=line,
                  width=1.2)
    pen.ellipse(x, y, 3.8, 3.8, fill=_shade(color, 0.85), outline=line,
                width=1.0)
  elif accessory == 'flower':
    x, y = cx - 16, cy - b + 4
    for t in _angles(-math.pi / 2, 1.5 * math.pi, 5, endpoint=False):
      pen.ellipse(x + 6 * math.cos(t), y + 6 * math.sin(t), 4.8, 4.8,
                  fill=_tint(color, 0.2), outline=line, width=0.9)
    pen.ellipse(x, y, 3.4, 3.4, fill=(255, 220, 60), outline=(200, 150, 30),
                width=0.9)
