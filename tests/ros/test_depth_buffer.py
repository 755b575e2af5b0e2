"""DepthBuffer: which depth image a colour frame is paired with, and what the buffer keeps for a pending frame; and
which depth images a CameraInfo describes. No DDS: the buffer is fed messages directly, as its subscription
callbacks would."""
import pytest
from sensor_msgs.msg import CameraInfo, Image

from avag_ros.depth.geometry import Intrinsics
from avag_ros.depth.pairing import DEPTH_BUFFER, DepthBuffer, DepthUnavailable, depth_grid_intrinsics
from avag_ros.messages.depth import depth_image

MS = 1_000_000  # nanoseconds


def depth_at(stamp_ns: int) -> Image:
    msg = Image(encoding="16UC1", width=1, height=1, step=2, data=b"\x00\x00")
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    return msg


def stamp_of(msg: Image) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


@pytest.fixture
def buffer() -> DepthBuffer:
    buffer = DepthBuffer()
    buffer.set_info(CameraInfo(width=1, height=1))
    return buffer


def test_a_frame_takes_the_depth_nearest_in_stamp_before_or_after_it(buffer):
    base = 5 * 10**9
    for offset_ms in (-40, -12, 9, 30):  # the nearest is after the frame
        buffer.add_image(depth_at(base + offset_ms * MS))
    image, _ = buffer.pin(base).pair(max_offset_s=0.05)
    assert stamp_of(image) == base + 9 * MS


def test_a_pin_moves_to_a_nearer_depth_that_arrives_later(buffer):
    base = 7 * 10**9
    buffer.add_image(depth_at(base - 20 * MS))
    pin = buffer.pin(base)
    buffer.add_image(depth_at(base + 3 * MS))  # nearer: taken
    buffer.add_image(depth_at(base + 15 * MS))  # farther: not
    image, _ = pin.pair(max_offset_s=0.05)
    assert stamp_of(image) == base + 3 * MS


def test_depth_beyond_the_max_offset_is_refused_with_the_offset(buffer):
    base = 9 * 10**9
    buffer.add_image(depth_at(base - 80 * MS))
    with pytest.raises(DepthUnavailable, match=r"0\.080 s from the colour frame") as raised:
        buffer.pin(base).pair(max_offset_s=0.05)
    assert raised.value.kind == "frames_without_depth"


def test_no_depth_or_no_camera_info_yet_is_named():
    buffer = DepthBuffer()
    buffer.add_image(depth_at(10**9))
    with pytest.raises(DepthUnavailable, match="no CameraInfo") as raised:
        buffer.pin(10**9).pair(0.05)
    assert raised.value.kind == "frames_without_camera_info"
    buffer = DepthBuffer()
    buffer.set_info(CameraInfo())
    with pytest.raises(DepthUnavailable, match="no depth image") as raised:
        buffer.pin(10**9).pair(0.05)
    assert raised.value.kind == "frames_without_depth"


def test_a_pending_frame_keeps_its_depth_while_the_ring_overflows(buffer):
    """A slow model: the frame's depth arrived with it, then a 60 Hz stream pushes far more through the ring."""
    base = 20 * 10**9
    buffer.add_image(depth_at(base))
    pin = buffer.pin(base)
    for tick in range(1, 3 * DEPTH_BUFFER):
        buffer.add_image(depth_at(base + tick * 16_667_000))
    image, _ = pin.pair(max_offset_s=0.05)
    assert stamp_of(image) == base
    # Without its pin, the same frame finds only depth far newer than itself.
    with pytest.raises(DepthUnavailable, match="from the colour frame"):
        buffer.pin(base).pair(max_offset_s=0.05)


def test_a_released_pin_no_longer_follows_new_depth(buffer):
    base = 30 * 10**9
    buffer.add_image(depth_at(base - 30 * MS))
    pin = buffer.pin(base)
    pin.release()
    pin.release()  # releasing twice (a replaced frame, then the worker's cleanup) is harmless
    buffer.add_image(depth_at(base))
    with pytest.raises(DepthUnavailable, match=r"0\.030 s from the colour frame"):
        pin.pair(max_offset_s=0.01)


def intrinsics(width: int, height: int) -> Intrinsics:
    return Intrinsics(fx=50.0, fy=50.0, cx=width / 2, cy=height / 2, width=width, height=height)


@pytest.mark.parametrize("info, depth_shape, colour_shape, message", [
    (intrinsics(50, 50), (36, 48), (72, 96), "the depth image is 48x36 but its CameraInfo describes 50x50"),
    # a raw depth topic with the colour camera's CameraInfo
    (intrinsics(96, 72), (24, 48), (72, 96), "the depth image is 48x24 but its CameraInfo describes 96x72"),
    (intrinsics(48, 24), (24, 48), (72, 96), "the depth image is 48x24, the colour image 96x72: another aspect ratio"),
])
def test_a_depth_image_its_camera_info_does_not_describe_is_rejected_naming_both(info, depth_shape, colour_shape,
                                                                               message):
    with pytest.raises(DepthUnavailable, match=message) as error:
        depth_grid_intrinsics(info, depth_shape, colour_shape)
    assert error.value.kind == "depth_rejected"


@pytest.mark.parametrize("info, depth_shape, colour_shape", [
    (intrinsics(48, 36), (36, 48), (72, 96)),  # half the colour image: same field of view
    (intrinsics(96, 72), (72, 96), (72, 96)),
    (intrinsics(47, 36), (36, 47), (72, 96)),  # 36 rows where 35.25 would be exact: within a pixel
])
def test_a_depth_image_described_by_its_camera_info_keeps_those_intrinsics(info, depth_shape, colour_shape):
    assert depth_grid_intrinsics(info, depth_shape, colour_shape) == info


def test_an_unset_camera_info_size_stands_for_the_colour_image_size():
    unset = Intrinsics(fx=50.0, fy=50.0, cx=48.0, cy=36.0, width=0, height=0)
    filled = depth_grid_intrinsics(unset, (72, 96), (72, 96))
    assert (filled.width, filled.height) == (96, 72)
    with pytest.raises(DepthUnavailable, match="48x36 but its CameraInfo describes 0x0"):
        depth_grid_intrinsics(unset, (36, 48), (72, 96))


def test_an_unknown_depth_encoding_is_named():
    with pytest.raises(ValueError, match="unsupported depth encoding '8UC1'"):
        depth_image(Image(encoding="8UC1", width=1, height=1, step=1, data=b"\x00"))
