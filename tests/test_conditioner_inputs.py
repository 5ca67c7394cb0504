"""Hostile inputs to the image conditioners (issue #15): every public entry point either works or raises a one-line
ValueError / TypeError naming the parameter, in bounded time and memory.

Oracles: torch's own ``max_pool2d`` / ``conv2d`` for the mask grow and blur, analytic results (a constant image fills
with its constant), Python's ``json`` for what is valid JSON, and the bounds of ``sdkit.limits``. Memory: an input
beyond a bound is refused before it is converted (spied on, and measured with tracemalloc for numpy inputs, which
are zero-stride views here so the test itself allocates nothing); the fuzz tests run with the bounds lowered, so
anything that escaped them would show as a jump of the process's peak memory.
"""

from __future__ import annotations

import json
import math
import resource
import tracemalloc
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from sdkit import limits
from sdkit.conditioners import (
    Control,
    Mask,
    Pose,
    as_image,
    as_mask,
    depth,
    depth_image,
    extend_canvas,
    fill_masked,
    image_input,
    masks,
    openpose_image,
    parse_openpose,
    pose_image,
    prepare_mask,
    to_image,
)
from sdkit.conditioners.image_input import crop_to
from sdkit.conditioners.masks import MAX_BLUR, gaussian_blur, grow
from sdkit.image import Image
from sdkit.strength import check_strength, strength_steps

pytestmark = pytest.mark.usefixtures("one_thread")

CLEAR = (ValueError, TypeError)
GRAY = PILImage.new("RGB", (64, 64), (128, 128, 128))
SMALL: dict[str, Any] = dict(width=64, height=64, steps=2, seed=1)


def one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message and 0 < len(message) < 600, message
    return message


def refuses(call: Callable[[], Any], exc: type[Exception], *names: str) -> str:
    with pytest.raises(exc) as info:
        call()
    message = one_line(info.value)
    for name in names:
        assert name in message, message
    return message


def view(shape: tuple[int, ...], dtype: Any = np.uint8) -> np.ndarray:
    """A read-only array of any shape that takes no memory (zero strides)."""
    return np.broadcast_to(np.zeros((), dtype), shape)


@pytest.fixture
def no_conversion(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fails the test if an input reaches the dtype conversion (the first copy of its pixels)."""

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the input was converted before it was refused")

    for module in (image_input, masks, depth):
        monkeypatch.setattr(module, "as_float", forbidden)
    yield


def numpy_peak(call: Callable[[], Any]) -> int:
    """Peak bytes traced (numpy and Python objects) while ``call`` runs (its exception swallowed)."""
    tracemalloc.start()
    try:
        call()
    except CLEAR:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


# ------------------------------------------------------------------------------------------ mask blur and grow
def test_mask_blur_is_bounded():
    refuses(lambda: Mask(GRAY, blur=1e9), ValueError, "mask blur", "MAX_BLUR", "256")
    refuses(lambda: prepare_mask(np.ones((8, 8), bool), blur=1e9), ValueError, "mask blur", "MAX_BLUR")
    refuses(lambda: Mask(GRAY, blur=True), TypeError, "mask blur", "bool")
    refuses(lambda: Mask(GRAY, blur="4"), TypeError, "mask blur", "'4'")
    assert Mask(GRAY, blur=np.float32(MAX_BLUR)).blur == MAX_BLUR  # the bound itself and numpy scalars are fine


def conv_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """The oracle: a depthwise ``conv2d`` with the sampled Gaussian reaching ceil(3 sigma), edges replicated."""
    r = max(1, math.ceil(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64) / sigma) ** 2)
    k = (k / k.sum()).to(x)
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


@pytest.mark.parametrize("shape,sigma", [((1, 1, 64, 64), 2.0), ((2, 3, 37, 91), 4.5), ((1, 1, 5, 300), 30.0),
                                         ((1, 2, 1, 1), 3.0), ((1, 1, 40, 7), MAX_BLUR)])  # fmt: skip
def test_blur_matches_a_depthwise_convolution(shape, sigma):
    torch.manual_seed(0)
    x = (torch.rand(shape) > 0.7).float() * torch.rand(shape)
    got, want = gaussian_blur(x, sigma), conv_blur(x, sigma)
    assert torch.allclose(got, want, atol=1e-6, rtol=0)
    assert torch.equal(got == 0, want == 0)  # zeros beyond the kernel's reach stay exactly zero


@pytest.mark.parametrize("pixels", [1, 3, 13, -5, -1])
def test_grow_matches_max_pool(pixels):
    torch.manual_seed(1)
    x = (torch.rand(2, 1, 33, 41) > 0.8).float() * torch.rand(2, 1, 33, 41)
    k, r = 2 * abs(pixels) + 1, abs(pixels)
    want = F.max_pool2d(x, k, stride=1, padding=r) if pixels > 0 else -F.max_pool2d(-x, k, stride=1, padding=r)
    assert torch.equal(grow(x, pixels), want)


def test_grow_beyond_the_image_covers_it():
    x = torch.zeros(1, 1, 30, 50)
    x[0, 0, 3, 7] = 0.25
    assert torch.equal(grow(x, 10**12), torch.full_like(x, 0.25))  # dilation by more than the side: the max
    assert torch.equal(grow(x, -(10**12)), torch.zeros_like(x))
    refuses(lambda: Mask(GRAY, grow=1.5), TypeError, "mask grow")


def test_fill_of_a_constant_image_is_the_constant():
    image = Image(torch.tensor([0.2, 0.6, 0.9]).view(1, 3, 1, 1).expand(1, 3, 300, 200).contiguous())
    hole = torch.zeros(1, 1, 300, 200)
    hole[..., 50:250, 20:180] = 1
    assert torch.allclose(fill_masked(image, hole).tensor, image.tensor, atol=1e-5)


# ------------------------------------------------------------------------------------------ booleans and choices
@pytest.mark.parametrize(
    "call,exc,names",
    [
        (lambda: Mask(GRAY, invert="no"), TypeError, ("mask invert", "'no'")),
        (lambda: Mask(GRAY, invert=0), TypeError, ("mask invert",)),
        (lambda: Mask(GRAY, content=3), TypeError, ("mask content",)),
        (lambda: Mask(GRAY, content="clouds"), ValueError, ("mask content", "'clouds'")),
        (lambda: prepare_mask(np.ones((8, 8), bool), invert="yes"), TypeError, ("invert",)),
        (lambda: to_image(GRAY, size_policy="stretch"), ValueError, ("size_policy", "'stretch'")),
        (lambda: to_image(GRAY, size_policy=None), TypeError, ("size_policy",)),
        (lambda: to_image(GRAY, size=(64, 64.5)), TypeError, ("size height",)),
        (lambda: to_image(GRAY, size=(0, 64)), ValueError, ("size width",)),
        (lambda: to_image(GRAY, multiple=0), ValueError, ("multiple",)),
        (lambda: depth_image(np.ones((8, 8)), normalize="no"), TypeError, ("normalize",)),
        (lambda: depth_image(np.ones((8, 8)), invert=1), TypeError, ("invert",)),
        (lambda: strength_steps(10, 0.5, mode="fast"), ValueError, ("strength mode", "'fast'")),
        (lambda: parse_openpose("{}", normalized="no"), TypeError, ("normalized",)),
    ],
)
def test_switches_and_choices_are_checked_by_type(call, exc, names):
    refuses(call, exc, *names)


def test_numpy_scalars_are_numbers():
    assert check_strength(np.float32(0.5)) == 0.5 and check_strength(np.float16(0.25)) == 0.25
    assert check_strength(np.int64(1)) == 1.0
    refuses(lambda: check_strength(np.bool_(True)), TypeError, "strength")
    refuses(lambda: check_strength("0.5"), TypeError, "strength", "'0.5'")
    control = Control("x", GRAY, np.float32(0.5), np.float64(0.1), np.float16(0.5))
    assert "Weight: 0.5, Guidance Start: 0.1, Guidance End: 0.5" in control.describe()
    assert Mask(GRAY, blur=np.int32(3), grow=np.int64(2), invert=np.bool_(True)).grow == 2


@pytest.mark.parametrize(
    "kwargs,exc,names",
    [
        (dict(weight=math.nan), ValueError, ("control weight", "nan")),
        (dict(weight=math.inf), ValueError, ("control weight",)),
        (dict(weight="1"), TypeError, ("control weight",)),
        (dict(start=0.8, end=0.2), ValueError, ("start", "end", "0.8")),
        (dict(start=-0.1), ValueError, ("control start",)),
        (dict(end=1.5), ValueError, ("control end", "1.5")),
        (dict(start=True), TypeError, ("control start",)),
        (dict(label=3), TypeError, ("control label",)),
    ],
)
def test_control_parameters(kwargs, exc, names):
    refuses(lambda: Control("x", GRAY, **kwargs), exc, *names)


# ------------------------------------------------------------------------------------------ values and sizes
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_pixels_are_refused_at_the_input(bad):
    a = np.full((16, 16, 3), 0.5, np.float32)
    a[3, 4, 1] = bad
    for convert, name in ((as_image, "image"), (as_mask, "mask")):
        for value in (a, torch.from_numpy(a).permute(2, 0, 1), Image(torch.from_numpy(a).permute(2, 0, 1)[None])):
            refuses(partial(convert, value), ValueError, name, "NaN or infinite")
    refuses(lambda: as_mask(PILImage.fromarray(a[:, :, 1], "F")), ValueError, "mask", "NaN")
    refuses(lambda: as_image(PILImage.fromarray(a[:, :, 1], "F")), ValueError, "image", "NaN")
    refuses(lambda: depth_image(a[:, :, 1]), ValueError, "depth", "NaN")


@pytest.mark.parametrize(
    "value,exc,shows",
    [
        (np.zeros((8, 8), np.complex64), TypeError, "complex64"),
        (np.array([["a"]]), TypeError, "dtype"),
        (np.zeros((8, 8), object), TypeError, "object"),
        (torch.zeros(3, 8, 8, dtype=torch.complex64), TypeError, "complex64"),
        (np.zeros((0, 8)), ValueError, "empty"),
        (torch.zeros(0, 3, 8, 8), ValueError, "empty"),
        (np.zeros((8, 8, 7)), ValueError, "channels"),
        (np.full((8, 8), 300, np.int64), ValueError, "[0, 1]"),
    ],
)
def test_odd_arrays(value, exc, shows):
    refuses(lambda: as_image(value), exc, "image", shows)


def test_odd_arrays_that_work():
    assert torch.equal(as_image(np.ones((4, 4), np.int32)).tensor, torch.ones(1, 3, 4, 4))  # integers as values
    assert as_image(np.full((4, 4), 65535, np.uint16)).tensor.min() == 1.0
    assert as_image(np.full((4, 4), 0.5, np.float16)).tensor.max() == 0.5
    big_endian = np.full((4, 4), 0.25, ">f8")
    assert as_mask(big_endian).max() == 0.25 and as_image(big_endian[::-1, ::-1]).tensor.max() == 0.25


def test_lists_of_images_are_bounded():
    refuses(lambda: as_image([GRAY] * (limits.MAX_BATCH_SIZE + 1)), ValueError, "MAX_BATCH_SIZE")
    refuses(lambda: as_image([[GRAY]]), TypeError, "nested")
    refuses(lambda: as_image([GRAY, PILImage.new("RGB", (8, 8))]), ValueError, "one size")


@pytest.mark.parametrize(
    "convert,make,shows",
    [
        (as_image, lambda: view((4097, 4096, 3)), "MAX_PIXELS"),
        (as_image, lambda: view((8, 8193)), "MAX_SIDE"),
        (as_image, lambda: view((65, 8, 8, 3)), "MAX_BATCH_SIZE"),
        (as_image, lambda: view((5, 4096, 4096, 1)), "MAX_BATCH_PIXELS"),
        (as_image, lambda: torch.zeros(()).expand(3, 4097, 4096), "MAX_PIXELS"),
        (as_image, lambda: PILImage.new("1", (8200, 8)), "MAX_SIDE"),
        (as_mask, lambda: view((4097, 4096)), "MAX_PIXELS"),
        (as_mask, lambda: view((1, 8193, 8)), "MAX_SIDE"),
        (as_mask, lambda: view((5, 4096, 4096), bool), "MAX_BATCH_PIXELS"),
        (as_mask, lambda: torch.zeros((), dtype=torch.bool).expand(65, 1, 8, 8), "MAX_BATCH_SIZE"),
        (as_mask, lambda: PILImage.new("1", (8, 8200)), "MAX_SIDE"),
        (depth_image, lambda: view((4097, 4096), np.uint16), "MAX_PIXELS"),
        (depth_image, lambda: torch.zeros(()).expand(1, 3, 8, 9000), "MAX_SIDE"),
        (depth_image, lambda: PILImage.new("I;16", (8200, 8)), "MAX_SIDE"),
    ],
)
def test_oversized_inputs_are_refused_before_conversion(no_conversion, convert, make, shows):
    value = make()
    name = {as_image: "image", as_mask: "mask", depth_image: "depth"}[convert]
    message = refuses(partial(convert, value), ValueError, name, shows, "sdkit.limits", "raise the bound")
    assert message.startswith(name)
    if isinstance(value, np.ndarray):
        assert numpy_peak(partial(convert, value)) < 2**20


def test_generate_refuses_an_oversized_init_image_naming_it(tiny_sd1_kit, no_conversion):
    message = refuses(
        lambda: tiny_sd1_kit.generate("a cat", init_image=view((4104, 4096, 3)), steps=2),
        ValueError,
        "init_image",
        "4096x4104",
        "MAX_PIXELS",
    )
    assert "sdkit.limits.MAX_PIXELS" in message
    refuses(lambda: tiny_sd1_kit.generate("a cat", init_image=GRAY, mask=view((8, 9000)), **SMALL), ValueError, "mask")
    refuses(
        lambda: tiny_sd1_kit.generate("a cat", control=(torch.nn.Identity(), view((9000, 8, 3))), **SMALL),
        ValueError,
        "control",
        "MAX_SIDE",
    )


def test_a_large_init_image_is_resized_to_the_asked_size(tiny_sd1_kit):
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (3000, 3000, 3), dtype=np.uint8)
    out = tiny_sd1_kit.generate("a cat", init_image=big, mask=big[..., 0] > 128, **SMALL)
    assert out.images[0].size == (64, 64)
    # the same as resizing first: the input's size changes nothing but the resize
    small = to_image(big, size=(64, 64), size_policy="resize")
    mask = prepare_mask(big[..., 0] > 128, size=(64, 64), size_policy="resize", blur=4.0)
    again = tiny_sd1_kit.generate("a cat", init_image=small, mask=Mask(mask, blur=0), **SMALL)
    assert np.array_equal(np.asarray(out.images[0]), np.asarray(again.images[0]))


def test_crop_of_a_strip_makes_no_huge_intermediate():
    strip = Image(torch.linspace(0, 1, 8000).view(1, 1, 1, -1).expand(1, 3, 1, -1).contiguous())
    out = crop_to(strip, (64, 64))  # covering 64x64 would scale the strip to 512000x64 pixels
    assert out.size == (64, 64) and torch.allclose(out.tensor, torch.full_like(out.tensor, 0.5), atol=1e-3)


def test_nan_inputs_through_generate_blame_the_input(tiny_sd1_kit):
    nan = np.full((64, 64, 3), np.nan, np.float32)
    refuses(lambda: tiny_sd1_kit.generate("a cat", init_image=nan, **SMALL), ValueError, "init_image", "NaN")
    refuses(lambda: tiny_sd1_kit.generate("a cat", init_image=GRAY, mask=nan, **SMALL), ValueError, "mask", "NaN")
    refuses(
        lambda: tiny_sd1_kit.generate("a cat", control=(torch.nn.Identity(), nan), **SMALL),
        ValueError,
        "control",
        "NaN",
    )


def test_batches_must_be_one_or_batch_size(tiny_sd1_kit):
    two = np.full((2, 64, 64, 3), 0.5, np.float32)
    args = dict(SMALL, batch_size=3)
    refuses(lambda: tiny_sd1_kit.generate("a cat", init_image=two, **args), ValueError, "init_image", "batch_size")
    masks_two = np.ones((2, 64, 64), bool)
    refuses(lambda: tiny_sd1_kit.generate("a cat", init_image=GRAY, mask=masks_two, **args), ValueError, "mask", "3")
    control = (torch.nn.Identity(), two)
    refuses(lambda: tiny_sd1_kit.generate("a cat", control=control, **args), ValueError, "control", "batch_size")


def test_strength_as_a_numpy_scalar_through_generate(tiny_sd1_kit):
    a = tiny_sd1_kit.generate("a cat", init_image=GRAY, strength=np.float32(0.5), **SMALL)
    b = tiny_sd1_kit.generate("a cat", init_image=GRAY, strength=0.5, **SMALL)
    assert torch.equal(a.latents.tensor, b.latents.tensor) and "Denoising strength: 0.5" in a.infotext


# ------------------------------------------------------------------------------------------ outpaint canvas
def test_extend_canvas_bounds():
    image = Image(torch.rand(1, 3, 16, 16))
    refuses(lambda: extend_canvas(image, right=10**9), ValueError, "canvas", "MAX_SIDE")
    refuses(lambda: extend_canvas(image, right=6000, down=6000), ValueError, "canvas", "MAX_PIXELS")
    refuses(lambda: extend_canvas(image, left=-3), ValueError, "left", "-3")
    refuses(lambda: extend_canvas(image, up=2.5), TypeError, "up")
    refuses(lambda: extend_canvas(image, down=True), TypeError, "down")
    refuses(lambda: extend_canvas(image, right=8, multiple=0), ValueError, "multiple")
    canvas = extend_canvas(np.full((16, 16, 3), 0.5, np.float32), right=8, overlap=10**9)  # any image, any overlap
    assert canvas.image.size == (24, 16) and torch.equal(canvas.image.tensor, torch.full((1, 3, 16, 24), 0.5))
    assert 1 - 1e-6 < float(canvas.mask.min()) <= 1  # an overlap wider than the image regenerates all of it


# ------------------------------------------------------------------------------------------ OpenPose JSON
FIGURE = [v for k in range(18) for v in (10.0 + k, 20.0 + k, 1.0)]


@pytest.mark.parametrize(
    "data,exc,shows",
    [
        ("[" * 100_000 + "]" * 100_000, ValueError, "nested"),
        ("{" * 10, ValueError, "not valid JSON"),
        (b"\xff\xfe", ValueError, "not valid JSON"),
        ('{"people": [{"pose_keypoints_2d": [' + "1" * 5000 + "]}]}", ValueError, "not valid JSON"),
        ("42", TypeError, "int"),
        ("[]", ValueError, "empty"),
        ({"people": "x"}, TypeError, "people"),
        ({"people": [5]}, TypeError, "person 0"),
        ({"people": [{"pose_keypoints_2d": "1,2,3"}]}, TypeError, "pose_keypoints_2d"),
        ({"people": [{"pose_keypoints_2d": ["1"] * 54}]}, TypeError, "str"),
        ({"people": [{"pose_keypoints_2d": [True] * 54}]}, TypeError, "bool"),
        ({"people": [{"pose_keypoints_2d": [math.nan] * 54}]}, ValueError, "finite"),
        ('{"people": [{"pose_keypoints_2d": [' + ", ".join(["1e999"] * 54) + "]}]}", ValueError, "finite"),
        ({"people": [{"pose_keypoints_2d": [10**400] * 54}]}, ValueError, "finite"),
        ({"people": [{"pose_keypoints_2d": [1e9] * 54}]}, ValueError, "MAX_COORDINATE"),
        ({"people": [{"pose_keypoints_2d": FIGURE}] * 1001}, ValueError, "MAX_PEOPLE"),
        ({"canvas_width": 10**9, "canvas_height": 64, "people": []}, ValueError, "MAX_SIDE"),
        ({"canvas_width": 8192, "canvas_height": 8192, "people": []}, ValueError, "MAX_PIXELS"),
        ({"canvas_width": -64, "canvas_height": 64, "people": []}, ValueError, "width"),
        ({"canvas_width": "64", "canvas_height": 64, "people": []}, TypeError, "canvas_width"),
        ({"canvas_width": math.inf, "canvas_height": 64, "people": []}, TypeError, "canvas_width"),
        (" " * (16 * 2**20 + 1), ValueError, "MAX_JSON_BYTES"),
    ],
)
def test_hostile_openpose_json(data, exc, shows):
    refuses(lambda: parse_openpose(data), exc, shows)


def test_openpose_json_that_is_fine():
    poses, canvas = parse_openpose(
        {"canvas_width": 64.0, "canvas_height": 48, "people": [{"pose_keypoints_2d": FIGURE}]}
    )
    assert canvas == (64, 48) and poses[0].keypoints[3] == (13.0, 23.0)
    assert parse_openpose(json.dumps([{"people": []}, {"people": [5]}])) == ([], None)  # the first frame only
    far = [v if k % 3 else -5e5 for k, v in enumerate(FIGURE)]  # keypoints far off the canvas are drawn clipped
    assert openpose_image({"people": [{"pose_keypoints_2d": far}]}, 32, 32).size == (32, 32)


@pytest.mark.parametrize(
    "width,height,exc,shows",
    [(10**9, 64, ValueError, "MAX_SIDE"), (8192, 8192, ValueError, "MAX_PIXELS"), (0, 8, ValueError, "width"),
     (64.0, 64, TypeError, "width"), (64, None, TypeError, "height")],
)  # fmt: skip
def test_pose_image_sizes(width, height, exc, shows):
    pose = parse_openpose({"people": [{"pose_keypoints_2d": FIGURE}]})[0][0]
    refuses(lambda: pose_image(pose, width, height), exc, shows)
    assert numpy_peak(lambda: pose_image(pose, width, height)) < 2**20  # refused before the canvas exists
    refuses(lambda: pose_image([pose, "a pose"], 8, 8), TypeError, "poses")


def test_pose_keypoints():
    refuses(lambda: Pose(((math.nan, 1.0),) * 18), ValueError, "keypoint 0", "finite")
    refuses(lambda: Pose((("1", 1.0),) * 18), TypeError, "keypoint 0")
    refuses(lambda: Pose((1.0,) * 18), TypeError, "keypoint 0")
    pose = Pose(((np.float32(1.5), 2),) * 18)
    assert pose.keypoints[0] == (1.5, 2.0)
    refuses(lambda: pose.moved(18, 1.0, 1.0), ValueError, "keypoint index", "17")
    refuses(lambda: pose.moved("tail", 1.0, 1.0), ValueError, "keypoint name", "'tail'")
    refuses(lambda: pose.moved(1, math.inf, 1.0), ValueError, "keypoint 1")
    assert pose.moved("neck", None).keypoints[1] is None


# ------------------------------------------------------------------------------------------ fuzzing
DTYPES = [np.uint8, np.uint16, np.int8, np.int32, np.int64, np.bool_, np.float16, np.float32, np.float64,
          np.complex64, np.uint32]  # fmt: skip
SIDES = st.one_of(st.sampled_from([0, 1, 2, 3, 4, 8, 17]), st.integers(20, 64))
SPECIAL = st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 2.0, 0.5, 0.0, 1.0])


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray | torch.Tensor:
    """Random small arrays (any rank 0-5, dtype, values incl. NaN/inf) or zero-memory views of huge ones."""
    if draw(st.integers(0, 9)) == 0:  # huge: beyond the (lowered) bounds, up to 10^6 a side
        shape = tuple(draw(st.lists(st.integers(1, 10**6), min_size=2, max_size=3)))  # at most 10^18 elements
        return view(shape, draw(st.sampled_from(DTYPES)))
    shape = tuple(draw(st.lists(SIDES, min_size=0, max_size=5)))
    if math.prod(shape) > 40_000:
        shape = shape[:2]
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    a = np.zeros(shape, dtype)
    if a.size:
        a.flat[draw(st.integers(0, a.size - 1))] = draw(SPECIAL) if dtype.kind in "fc" else 1
    if draw(st.booleans()):
        return torch.from_numpy(a) if dtype != np.uint32 else torch.from_numpy(a.astype(np.int64))
    return a


IMAGES = st.one_of(
    arrays(),
    st.lists(arrays(), min_size=1, max_size=3),
    st.sampled_from([GRAY, PILImage.new("F", (9, 5), math.nan), PILImage.new("I;16", (8, 8), 60000), None, "x", 3]),
)
ANY_VALUE = st.one_of(
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
    st.sampled_from([np.float32(2.0), np.int64(3), np.bool_(False), (8, 8), [16, 24], np.zeros((2, 2))]),
)


@pytest.fixture
def small_bounds(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Bounds lowered so that "up to the bound" is cheap; the code reads them at call time."""
    for name, value in (
        ("MAX_SIDE", 96),
        ("MAX_PIXELS", 64 * 64),
        ("MAX_BATCH_SIZE", 4),
        ("MAX_BATCH_PIXELS", 4 * 64 * 64),
    ):
        monkeypatch.setattr(limits, name, value)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # ru_maxrss is in KiB on Linux
    assert grown_mib < 256, f"the process's peak memory grew by {grown_mib:.0f} MiB"


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def check(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except CLEAR as e:
        one_line(e)
        return None


@FUZZ
@given(image=IMAGES, size=ANY_VALUE, policy=st.one_of(st.sampled_from(["error", "resize", "crop"]), ANY_VALUE))
def test_fuzz_as_image(small_bounds, image, size, policy):
    out = check(lambda: as_image(image))
    if out is not None:
        t = out.tensor
        assert t.ndim == 4 and t.shape[1] == 3 and t.dtype == torch.float32
        assert bool(torch.isfinite(t).all()) and 0 <= float(t.min()) <= float(t.max()) <= 1
        assert t.shape[2] * t.shape[3] <= limits.MAX_PIXELS
        fitted = check(lambda: to_image(image, size=size, size_policy=policy))
        if fitted is not None:
            assert fitted.size[0] % 8 == 0 and fitted.size[1] % 8 == 0


@FUZZ
@given(
    mask=IMAGES,
    blur=ANY_VALUE,
    grow_by=ANY_VALUE,
    invert=ANY_VALUE,
    content=st.one_of(st.sampled_from(["original", "fill"]), ANY_VALUE),
    size=st.one_of(st.none(), st.tuples(st.integers(-8, 80), st.integers(-8, 80)), ANY_VALUE),
    policy=st.one_of(st.sampled_from(["error", "resize", "crop"]), ANY_VALUE),
)
def test_fuzz_masks(small_bounds, mask, blur, grow_by, invert, content, size, policy):
    m = check(lambda: as_mask(mask))
    if m is not None:
        assert m.ndim == 4 and m.shape[1] == 1 and bool(torch.isfinite(m).all())
        assert 0 <= float(m.min()) <= float(m.max()) <= 1
    spec = check(lambda: Mask(mask, blur=blur, grow=grow_by, invert=invert, content=content))
    if spec is not None:
        out = check(lambda: spec(size=size, size_policy=policy))
        if out is not None:
            assert bool(torch.isfinite(out).all()) and 0 <= float(out.min()) <= float(out.max()) <= 1


@FUZZ
@given(image=IMAGES, pads=st.lists(st.one_of(st.integers(-5, 10**7), ANY_VALUE), min_size=6, max_size=6))
def test_fuzz_extend_canvas(small_bounds, image, pads):
    left, right, up, down, overlap, multiple = pads
    canvas = check(
        lambda: extend_canvas(image, left=left, right=right, up=up, down=down, overlap=overlap, multiple=multiple)
    )
    if canvas is not None:
        w, h = canvas.image.size
        assert canvas.mask.shape[2:] == (h, w) and w * h <= limits.MAX_PIXELS
        assert bool(torch.isfinite(canvas.mask).all()) and bool(torch.isfinite(canvas.image.tensor).all())


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.floats(), st.integers(-(10**30), 10**30), st.text(max_size=4)),
    lambda inner: st.one_of(st.lists(inner, max_size=60), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=80,
)
PEOPLE = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {"pose_keypoints_2d": st.lists(st.one_of(st.floats(), st.integers(-5, 10**7)), min_size=54, max_size=54)}
        ),
        JSON_VALUES,
    ),
    max_size=3,
)
DOCUMENTS = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries(
        {"people": PEOPLE},
        optional={"canvas_width": st.one_of(st.integers(-8, 10**6), ANY_VALUE), "canvas_height": st.integers(-8, 200)},
    ),
)


@FUZZ
@given(
    doc=DOCUMENTS,
    as_text=st.booleans(),
    normalized=st.one_of(st.none(), st.booleans(), ANY_VALUE),
    size=st.tuples(st.one_of(st.none(), st.integers(-4, 10**6)), st.one_of(st.none(), st.integers(-4, 200))),
)
def test_fuzz_openpose(small_bounds, doc, as_text, normalized, size):
    data = json.dumps(doc, default=repr) if as_text else doc  # numpy values become strings in the text
    parsed = check(lambda: parse_openpose(data, normalized=normalized))
    if parsed is not None:
        poses, canvas = parsed
        assert all(isinstance(p, Pose) for p in poses) and (
            canvas is None or canvas[0] * canvas[1] <= limits.MAX_PIXELS
        )
    image = check(lambda: openpose_image(data, *size))
    if image is not None:
        assert image.size[0] * image.size[1] <= limits.MAX_PIXELS


def test_a_large_init_image_without_a_size_is_refused_before_sampling(tiny_sd1_kit):
    """A 3000x3000 photo would set a 3000x3000 generation (hours on a CPU): without width/height it is refused,
    naming init_image and the way out; with them it is resized and runs."""
    photo = np.zeros((3000, 3000, 3), np.uint8)
    with pytest.raises(ValueError, match=r"init_image.*3000x3000.*width= and height="):
        tiny_sd1_kit.generate("a cat", init_image=photo, steps=1)
    gen = tiny_sd1_kit.generate("a cat", init_image=photo, width=32, height=32, steps=1, seed=1)
    assert gen.images[0].size == (32, 32)
