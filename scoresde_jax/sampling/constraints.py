"""Controllable generation without retraining: inpainting and colorization (paper, Section 5 and
Appendix I.2).

An unconditional score model also solves inverse problems whose observation is a part of the
image. Split ``x`` into a known part ``Omega(x) = y`` and an unknown part. The paper samples the
unknown part with the reverse SDE of the *unconditional* model and, after every update, overwrites
the known part of the state with a sample of the forward-perturbed observation,
``Omega(x_t) ~ p_0t(Omega(x_t) | Omega(x_0) = y) = N(alpha_t y, sigma_t^2 I)``, so that the score
network always sees a state whose known part is consistent with ``y`` at the current noise level.

* :func:`inpaint`: the known part is a set of pixels (a mask).
* :func:`colorize`: the known part is the gray level of every pixel. An orthogonal channel
  transform ``M`` (:data:`COLOR_TRANSFORM`, first row ``(1, 1, 1) / sqrt(3)``) turns the gray
  level into the first channel of ``y = M x``; colorization is inpainting of the two other
  channels in that space, where the score is ``M score(M^T y)`` (``M`` is orthogonal, and the
  three SDEs act on every coordinate alike, so the SDE in ``y`` has the same drift and
  diffusion).

Both are :func:`~scoresde_jax.sampling.pc_sample` with a
:class:`~scoresde_jax.sampling.pc.Constraint` that keeps the known part in place.

The replacement is an approximation, not an exact sampler of ``p(x_u | x_k = y)``. The unknown
part follows ``grad_u log p_t(x_u, x_k)`` at a random ``x_k ~ p_0t(. | y)``; averaged over that
draw (which is what many small steps do) this is the score of ``p_t(x_u | x_k(t) = alpha_t y)``,
not the conditional score ``grad_u log p_t(x_u | x_k(0) = y)``. The two agree as ``t -> 0``, and
everywhere when the known and unknown parts are independent, but not at intermediate times when
they are correlated. On an 8-dimensional correlated Gaussian (4 of the 8 coordinates known;
posterior std 0.47 to 0.54 against 0.71 a priori) with the exact score, predictor-only sampling
converges, as the step count grows, to a law whose mean is 0.4-0.8 posterior standard deviations
off and whose variances are 22-38 % too large, for VE, VP and sub-VP alike (tests/
test_constraints.py checks the sampler against the exact law of this discrete algorithm and
shows the gap to the true posterior). One Langevin corrector step per time step with
``snr=0.16`` shrinks the gap (at 200 steps, means within 0.08 std for VE and 0.31 for VP);
``snr=0.01`` does not. On images, completions may fit the surrounding pixels only loosely.

There is no probability-flow variant: replacing the known part between deterministic
probability-flow steps measured worse on the same problem (means 0.6-1.2 std off, variances
1.4-2.3 times too large).

Masks (:func:`make_mask`, :func:`load_mask_png`) are float32 ``[H, W, 1]`` arrays, ``1`` where a
pixel is known, broadcast over the channels.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.core.sde import SDE, ScoreFn
from scoresde_jax.sampling._common import SampleResult
from scoresde_jax.sampling.pc import Constraint, pc_sample

__all__ = [
    "COLOR_TRANSFORM",
    "MASK_KINDS",
    "colorize",
    "from_color_space",
    "inpaint",
    "load_mask_png",
    "make_mask",
    "resolve_mask",
    "to_color_space",
    "to_gray",
]


# ---------------------------------------------------------------------------------------------
# Inpainting.


def inpaint(
    sde: SDE,
    score_fn: ScoreFn,
    key: jax.Array,
    data: jax.Array,
    mask: jax.Array,
    *,
    predictor: str = "reverse_diffusion",
    corrector: str = "langevin",
    snr: float = 0.16,
    n_steps: int = 1,
    num_steps: int | None = None,
    eps: float = 1e-3,
    denoise: bool = True,
    perturb_known_init: bool = False,
) -> SampleResult:
    """Fills in the unknown part of ``data`` with the predictor-corrector sampler (paper, App. I.2).

    For each ``t_i`` of ``linspace(T, eps, num_steps)``: the corrector runs ``n_steps`` Langevin
    steps at ``t_i`` and the known part is replaced by a fresh sample of
    ``p_0t(x_t | data)`` at ``t_i``; then the predictor moves the state one step down the reverse
    SDE, to ``t_{i+1}`` (``0`` after the last step), and the known part is replaced by a sample of
    ``p_0t`` at that time. (The original code perturbs the known part to ``t_i`` after the
    predictor as well, one grid step behind the state; the two agree as the step count grows.)
    With ``denoise`` the unknown part of the result is the noise-free mean of the last predictor
    step. Either way the known part of the result is ``data`` itself, exactly.

    Initial state. The unknown part starts from a prior sample. The known part starts as

    * ``perturb_known_init=False`` (the original code's choice): the clean ``data``. The first
      score evaluation (the first corrector step, or the first predictor step when the corrector
      is ``"none"``) then sees clean pixels next to prior noise. For VE at ``T`` these clean
      pixels have a spread of order one next to noise of std ``sigma_max``; that state is not a
      plausible draw of ``p_T``, so the first update of the unknown part is computed at an
      inconsistent state. After that first update the known part is a sample of ``p_0t`` like
      in the other variant.
    * ``perturb_known_init=True``: a sample of ``p_0T(x_T | data)`` (``data + sigma_max z`` for
      VE, ``alpha_T data + sigma_T z`` for VP and sub-VP), so the whole initial state is
      consistent with ``p_T`` given the observation, as every later state is.

    The two differ only in the first update, whose effect on the unknown part is of order
    ``Cov_T(x_u, x_k) / sigma_T^4`` and decays along the reverse process; on Gaussian data the
    difference is far below sampling error for all three SDEs (tests/test_constraints.py).

    Args:
      sde: the forward SDE.
      score_fn: ``score_fn(x, t) -> score`` of the unconditional model, ``x: [B, ...]``.
      key: a PRNG key.
      data: the observations ``[B, ...]``; only the known part is read.
      mask: ``1`` where ``data`` is known and ``0`` where it is to be generated (values above 1/2
        count as known); any shape that broadcasts to ``data.shape``, e.g. ``[H, W, 1]`` for
        images ``[B, H, W, C]`` or ``[D]`` for vectors.
      predictor: one of :data:`~scoresde_jax.sampling.PREDICTORS`.
      corrector: one of :data:`~scoresde_jax.sampling.CORRECTORS`.
      snr: the corrector's target signal-to-noise ratio.
      n_steps: corrector steps per time step.
      num_steps: number of time steps; ``sde.N`` if None (the SDE is rebuilt with this ``N``).
      eps: the last time.
      denoise: return the noise-free mean of the last predictor step in the unknown part.
      perturb_known_init: start the known part from ``p_0T(x_T | data)`` instead of ``data``.

    Returns:
      ``SampleResult(x, nfe)`` with ``x`` shaped like ``data`` and
      ``nfe = num_steps * (p + c * n_steps)`` (``p``, ``c`` are 0 for ``"none"``, else 1).

    Raises:
      ValueError: for an unknown predictor or corrector, a mask that does not broadcast to
        ``data``, or a bad step count or ``eps``.
    """
    data = jnp.asarray(data)
    if data.ndim < 1 or data.shape[0] < 1:
        raise ValueError(f"data must be a non-empty batch [B, ...], got shape {data.shape}")
    try:
        known = jnp.broadcast_to(jnp.asarray(mask) > 0.5, data.shape)
    except ValueError as err:
        raise ValueError(
            f"mask of shape {jnp.shape(mask)} does not broadcast to data of shape {data.shape}; "
            "use e.g. [H, W, 1] for images [B, H, W, C]"
        ) from err
    return pc_sample(
        sde,
        score_fn,
        key,
        data.shape,
        predictor=predictor,
        corrector=corrector,
        snr=snr,
        n_steps=n_steps,
        denoise=denoise,
        eps=eps,
        num_steps=num_steps,
        constraint=Constraint(data, known, perturb_known_init),
    )


# ---------------------------------------------------------------------------------------------
# Colorization.

COLOR_TRANSFORM = np.array(
    [
        [1.0, 1.0, 1.0],
        [1.0, -1.0, 0.0],
        [1.0, 1.0, -2.0],
    ]
) / np.sqrt([[3.0], [2.0], [6.0]])
"""Orthogonal ``M`` (rows orthonormal): ``y = M x`` per pixel maps RGB to (``sqrt(3)`` x gray,
two chroma channels). Its first row ``(1, 1, 1) / sqrt(3)`` makes ``y_0 = sqrt(3) mean(x)``."""


def to_color_space(x: jax.Array) -> jax.Array:
    """``y = M x`` on the channel axis of ``[..., 3]`` images (see :data:`COLOR_TRANSFORM`)."""
    m = jnp.asarray(COLOR_TRANSFORM, x.dtype)
    return jnp.einsum("...c,dc->...d", x, m)


def from_color_space(y: jax.Array) -> jax.Array:
    """``x = M^T y``, the inverse of :func:`to_color_space`."""
    m = jnp.asarray(COLOR_TRANSFORM, y.dtype)
    return jnp.einsum("...d,dc->...c", y, m)


def to_gray(images: jax.Array) -> jax.Array:
    """The gray level used by :func:`colorize`: the mean of the channels, ``[..., 1]``.

    The mean (not the luma ``0.299 R + 0.587 G + 0.114 B``) is what an orthogonal transform can
    split off: it is the projection on ``(1, 1, 1)``. A one-channel input is returned as is.
    """
    return jnp.mean(images, axis=-1, keepdims=True)


def colorize(
    sde: SDE,
    score_fn: ScoreFn,
    key: jax.Array,
    gray: jax.Array,
    *,
    predictor: str = "reverse_diffusion",
    corrector: str = "langevin",
    snr: float = 0.16,
    n_steps: int = 1,
    num_steps: int | None = None,
    eps: float = 1e-3,
    denoise: bool = True,
    perturb_known_init: bool = False,
) -> SampleResult:
    """Colors grayscale images with a model of RGB images (paper, Section 5 and Appendix I.2).

    In ``y = M x`` (:data:`COLOR_TRANSFORM`) the first channel is ``sqrt(3)`` times the gray
    level ``mean(R, G, B)`` and is known; :func:`inpaint` samples the two others with the score
    ``M score(M^T y)``. The result's channel mean equals the input gray level (up to float
    rounding); pixels may leave the data range, as with any sample.

    Args:
      sde: the forward SDE.
      score_fn: ``score_fn(x, t)`` of a model of 3-channel images ``[B, H, W, 3]``.
      key: a PRNG key.
      gray: ``[B, H, W, 1]`` gray levels, or ``[B, H, W, 3]`` images whose channel mean is taken
        (a gray image repeated over three channels gives back its gray level), in the model's
        data space (e.g. ``[-1, 1]`` for centered data).
      predictor, corrector, snr, n_steps, num_steps, eps, denoise, perturb_known_init: as in
        :func:`inpaint`.

    Returns:
      ``SampleResult(x [B, H, W, 3], nfe)``.

    Raises:
      ValueError: when ``gray`` is not ``[B, H, W, 1 or 3]``, or ``score_fn`` does not take
        3-channel images (colorization needs a model of color images).
    """
    gray = jnp.asarray(gray)
    if gray.ndim != 4 or gray.shape[-1] not in (1, 3):
        raise ValueError(
            f"colorize needs images [B, H, W, 1] or [B, H, W, 3], got shape {gray.shape}"
        )
    color_shape = (*gray.shape[:3], 3)
    probe = jax.ShapeDtypeStruct(color_shape, gray.dtype)
    t_probe = jax.ShapeDtypeStruct(color_shape[:1], gray.dtype)
    try:
        out = jax.eval_shape(score_fn, probe, t_probe)
    except Exception as err:  # noqa: BLE001 -- any failure means the model is not an RGB model
        raise ValueError(
            "colorize needs a score model of 3-channel (RGB) images, but the score function "
            f"fails on inputs of shape {color_shape}: {type(err).__name__}: {err}"
        ) from err
    if tuple(out.shape) != color_shape:
        raise ValueError(
            f"colorize needs a score model of 3-channel images; on {color_shape} it returns "
            f"{tuple(out.shape)}"
        )
    g = gray if gray.shape[-1] == 1 else to_gray(gray)
    zeros = jnp.zeros((*gray.shape[:3], 2), gray.dtype)
    data_y = jnp.concatenate([math.sqrt(3.0) * g, zeros], axis=-1)
    mask_y = jnp.asarray([1.0, 0.0, 0.0], gray.dtype)

    def score_y(y, t):
        return to_color_space(score_fn(from_color_space(y), t))

    res = inpaint(
        sde,
        score_y,
        key,
        data_y,
        mask_y,
        predictor=predictor,
        corrector=corrector,
        snr=snr,
        n_steps=n_steps,
        num_steps=num_steps,
        eps=eps,
        denoise=denoise,
        perturb_known_init=perturb_known_init,
    )
    return SampleResult(from_color_space(res.x), res.nfe)


# ---------------------------------------------------------------------------------------------
# Masks.


def _parse_fraction(kind: str, arg: str | None, default: float) -> float:
    if arg is None:
        return default
    try:
        value = float(arg)
    except ValueError:
        raise ValueError(f"mask {kind}:{arg}: {arg!r} is not a number") from None
    if not 0.0 < value < 1.0:
        raise ValueError(f"mask {kind}:{arg}: the fraction must lie in (0, 1)")
    return value


def _half(side: str):
    def build(h: int, w: int, arg: str | None, key) -> np.ndarray:
        del key
        if arg is not None:
            raise ValueError(f"mask {side}_half takes no parameter, got {side}_half:{arg}")
        known = np.ones((h, w), bool)
        region = {
            "left": (slice(None), slice(0, w // 2)),
            "right": (slice(None), slice(w // 2, None)),
            "top": (slice(0, h // 2), slice(None)),
            "bottom": (slice(h // 2, None), slice(None)),
        }[side]
        known[region] = False
        return known

    return build


def _center_square(h: int, w: int, arg: str | None, key) -> np.ndarray:
    del key
    frac = _parse_fraction("center_square", arg, 0.5)
    side = max(1, round(frac * min(h, w)))
    top, left = (h - side) // 2, (w - side) // 2
    known = np.ones((h, w), bool)
    known[top : top + side, left : left + side] = False
    return known


def _random_pixels(h: int, w: int, arg: str | None, key) -> np.ndarray:
    frac = _parse_fraction("random_pixels", arg, 0.5)
    key = jax.random.PRNGKey(0) if key is None else key
    return ~np.asarray(jax.random.bernoulli(key, frac, (h, w)))


def _stripes(h: int, w: int, arg: str | None, key) -> np.ndarray:
    del key
    width = max(1, h // 8)
    if arg is not None:
        try:
            width = int(arg)
        except ValueError:
            raise ValueError(f"mask stripes:{arg}: the stripe width must be an integer") from None
        if not 1 <= width < h:
            raise ValueError(f"mask stripes:{arg}: the stripe width must lie in [1, {h})")
    rows = (np.arange(h) // width) % 2 == 1
    return np.broadcast_to(~rows[:, None], (h, w)).copy()


MASK_KINDS = {
    "left_half": _half("left"),
    "right_half": _half("right"),
    "top_half": _half("top"),
    "bottom_half": _half("bottom"),
    "center_square": _center_square,
    "random_pixels": _random_pixels,
    "stripes": _stripes,
}
"""Built-in masks; the name says which region is *missing* (generated). Each takes
``(H, W, parameter or None, key)`` and returns a bool ``[H, W]`` array, True where known.
Parameters: ``center_square:f`` (side ``f * min(H, W)``, default 0.5), ``random_pixels:p``
(each pixel missing with probability ``p``, default 0.5), ``stripes:w`` (every other horizontal
band of ``w`` rows missing, default ``H // 8``)."""


def _image_hw(image_shape) -> tuple[int, int]:
    try:
        dims = tuple(int(s) for s in image_shape)
    except TypeError:
        raise ValueError(f"image_shape must be (H, W) or (H, W, C), got {image_shape!r}") from None
    if len(dims) not in (2, 3) or min(dims) < 1:
        raise ValueError(f"image_shape must be (H, W) or (H, W, C), got {image_shape!r}")
    return dims[0], dims[1]


def make_mask(kind: str, image_shape, key: jax.Array | None = None) -> np.ndarray:
    """A built-in inpainting mask: float32 ``[H, W, 1]``, ``1`` known and ``0`` missing.

    Args:
      kind: a name of :data:`MASK_KINDS`, optionally with a parameter after a colon:
        ``"left_half"``, ``"right_half"``, ``"top_half"``, ``"bottom_half"`` (that half is
        missing), ``"center_square"`` / ``"center_square:0.5"`` (a centered square hole whose
        side is that fraction of the image), ``"random_pixels"`` / ``"random_pixels:0.5"``
        (each pixel missing with that probability), ``"stripes"`` / ``"stripes:4"`` (every other
        horizontal band of that many rows missing).
      image_shape: ``(H, W)`` or ``(H, W, C)``.
      key: a PRNG key for ``random_pixels`` (default ``PRNGKey(0)``, so the mask is
        reproducible); the other kinds ignore it.

    Returns:
      A numpy float32 array ``[H, W, 1]`` of zeros and ones.

    Raises:
      ValueError: for an unknown kind or a bad parameter.
    """
    h, w = _image_hw(image_shape)
    name, _, arg = str(kind).strip().partition(":")
    name = name.strip().lower()
    if name not in MASK_KINDS:
        raise ValueError(
            f"Unknown mask kind {kind!r}; choose one of {sorted(MASK_KINDS)} (some take a "
            "parameter, e.g. 'random_pixels:0.7'), or give the path of a .png mask."
        )
    known = MASK_KINDS[name](h, w, arg.strip() or None, key)
    return known.astype(np.float32)[..., None]


def load_mask_png(path: str | os.PathLike, image_size: int) -> np.ndarray:
    """Reads a mask image: white (>= 128 after conversion to gray) is known, black missing.

    Args:
      path: a PNG (or any format PIL reads) of a square mask.
      image_size: the side of the (square) images; a mask of another size is resized with
        nearest-neighbour sampling, so it stays binary.

    Returns:
      A numpy float32 array ``[image_size, image_size, 1]`` of zeros and ones.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: the file is not a readable image or is not square.
    """
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"mask file {path} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            gray = im.convert("L")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read the mask {path} as an image: {err}") from err
    w, h = gray.size
    if w != h:
        raise ValueError(
            f"the mask {path} is {w}x{h} (width x height) but the images are square "
            f"({image_size}x{image_size}); draw a square mask"
        )
    if (w, h) != (image_size, image_size):
        gray = gray.resize((image_size, image_size), Image.Resampling.NEAREST)
    return (np.asarray(gray) >= 128).astype(np.float32)[..., None]


def resolve_mask(spec: str, image_size: int, key: jax.Array | None = None) -> np.ndarray:
    """A built-in mask kind (:func:`make_mask`) or the path of a mask image
    (:func:`load_mask_png`, recognized by an image file extension or an existing file)."""
    spec = str(spec).strip()
    if spec.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")) or os.path.isfile(
        spec
    ):
        return load_mask_png(spec, image_size)
    return make_mask(spec, (image_size, image_size), key)
