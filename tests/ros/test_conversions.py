import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from avag_ros.messages.images import (SUPPORTED_ENCODINGS, check_frame, compressed_to_rgb, frame_to_rgb, image_to_rgb,
                                      largest_region_polygon, mask_to_image, probability_to_image)

RNG = np.random.default_rng(0)
# Horizontal pixel pairs share a colour, so the 4:2:2 chroma subsampling of the YUV encodings loses nothing.
RGB = np.repeat(RNG.integers(0, 256, (6, 4, 3), dtype=np.uint8), 2, axis=1)


def packed(encoding: str, rgb: np.ndarray) -> tuple[np.ndarray, bool]:
    """Independent packing of an RGB test image into each encoding's bytes: (HxWxC bytes, big endian)."""
    if encoding == "rgb8":
        return rgb, False
    if encoding == "bgr8":
        return rgb[..., ::-1], False
    alpha = np.full(rgb.shape[:2] + (1,), 77, np.uint8)
    if encoding == "rgba8":
        return np.concatenate([rgb, alpha], 2), False
    if encoding == "bgra8":
        return np.concatenate([rgb[..., ::-1], alpha], 2), False
    if encoding == "mono8":
        return rgb[..., :1], False
    if encoding == "mono16":
        return (rgb[..., 0].astype(">u2") * 257).view(np.uint8).reshape(rgb.shape[0], rgb.shape[1], 2), True
    yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV)
    u = yuv[:, 0::2, 1].astype(int) + yuv[:, 1::2, 1]
    v = yuv[:, 0::2, 2].astype(int) + yuv[:, 1::2, 2]
    out = np.zeros((rgb.shape[0], rgb.shape[1] // 2, 4), np.uint8)
    if encoding in ("yuv422_yuy2", "yuyv"):  # Y0 U Y1 V
        out[..., 0], out[..., 1], out[..., 2], out[..., 3] = yuv[:, 0::2, 0], u // 2, yuv[:, 1::2, 0], v // 2
    else:  # yuv422 = UYVY: U Y0 V Y1
        out[..., 0], out[..., 1], out[..., 2], out[..., 3] = u // 2, yuv[:, 0::2, 0], v // 2, yuv[:, 1::2, 0]
    return out.reshape(rgb.shape[0], rgb.shape[1], 2), False


def expected_rgb(encoding: str, rgb: np.ndarray) -> np.ndarray:
    if encoding in ("mono8", "mono16"):
        return np.repeat(rgb[..., :1], 3, axis=2)
    return rgb


def message(encoding: str, rgb: np.ndarray, padding: int = 0) -> Image:
    pixels, big_endian = packed(encoding, rgb)
    height, width = rgb.shape[:2]
    row = pixels.reshape(height, -1)
    data = np.concatenate([row, np.full((height, padding), 0xAB, np.uint8)], axis=1)
    return Image(height=height, width=width, encoding=encoding, is_bigendian=big_endian, step=data.shape[1],
                 data=data.tobytes())


@pytest.mark.parametrize("padding", [0, 5])
@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_every_encoding_with_and_without_row_padding(encoding, padding):
    result = image_to_rgb(message(encoding, RGB, padding))
    assert result.shape == RGB.shape and result.dtype == np.uint8
    tolerance = 40 if encoding.startswith("yuv") or encoding == "yuyv" else 0  # chroma is shared by 2 pixels
    assert np.abs(result.astype(int) - expected_rgb(encoding, RGB)).max() <= tolerance


def test_required_encodings_are_supported():
    assert {"rgb8", "bgr8", "mono8", "rgba8", "bgra8", "mono16", "yuv422_yuy2", "yuyv"} <= set(SUPPORTED_ENCODINGS)


def test_little_endian_mono16():
    gray = np.array([[0, 65535], [256, 512]], "<u2")
    msg = Image(height=2, width=2, encoding="mono16", is_bigendian=False, step=4, data=gray.tobytes())
    assert image_to_rgb(msg)[..., 0].tolist() == [[0, 255], [1, 2]]


@pytest.mark.parametrize("mutate, message_part", [
    (lambda m: setattr(m, "data", bytes(m.data)[:-1]), "expected step x height"),
    (lambda m: setattr(m, "data", bytes(m.data) + b"\0"), "expected step x height"),
    (lambda m: setattr(m, "height", 8000), "expected step x height"),
    (lambda m: setattr(m, "encoding", "bayer_rggb8"), "unsupported image encoding 'bayer_rggb8'"),
    (lambda m: setattr(m, "width", 0), "zero size"),
    (lambda m: setattr(m, "step", 3), "step 3 is smaller"),
])
def test_bad_messages_raise_clear_errors(mutate, message_part):
    msg = message("rgb8", RGB)
    mutate(msg)
    with pytest.raises(ValueError, match=message_part):
        image_to_rgb(msg)


def test_compressed_jpeg_and_png_and_corrupt():
    smooth = cv2.resize(RGB, (48, 32), interpolation=cv2.INTER_LINEAR)  # JPEG-friendly content
    for fmt in (".jpg", ".png"):
        encoded = cv2.imencode(fmt, cv2.cvtColor(smooth, cv2.COLOR_RGB2BGR))[1].tobytes()
        result = compressed_to_rgb(CompressedImage(format=fmt[1:], data=encoded))
        assert result.shape == smooth.shape
        assert np.abs(result.astype(int) - smooth).mean() < (8 if fmt == ".jpg" else 1e-9)
    with pytest.raises(ValueError, match="cannot decode compressed image"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b"\xff\xd8\xff garbage \xff\xd9"))
    with pytest.raises(ValueError, match="neither JPEG nor PNG"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b"GIF89a not a camera format"))
    with pytest.raises(ValueError, match="has no data"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b""))
    for fmt in (".jpg", ".png"):  # a truncated file would otherwise decode into a partly grey picture
        encoded = cv2.imencode(fmt, cv2.cvtColor(smooth, cv2.COLOR_RGB2BGR))[1].tobytes()
        with pytest.raises(ValueError, match="truncated (jpeg|png)"):
            compressed_to_rgb(CompressedImage(format=fmt[1:], data=encoded[:len(encoded) // 2]))


def test_a_frame_of_either_kind_is_checked_and_converted_by_its_kind():
    """The loop and ~/ground take raw and compressed frames alike: each kind goes its own way, and a kind's fault
    is found by checking, without decoding."""
    png = cv2.imencode(".png", cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))[1].tobytes()
    frames = {"raw": message("bgr8", RGB, padding=3), "compressed": CompressedImage(format="png", data=png)}
    for kind, frame in frames.items():
        check_frame(frame)
        assert np.array_equal(frame_to_rgb(frame), RGB), kind
    short, truncated = message("rgb8", RGB), CompressedImage(format="png", data=png[:-20])
    short.data = bytes(short.data)[:-1]
    with pytest.raises(ValueError, match="expected step x height"):
        check_frame(short)
    with pytest.raises(ValueError, match="truncated png"):
        check_frame(truncated)


def test_output_messages_keep_header_and_size():
    header = Header(frame_id="camera_optical")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    mask = np.zeros((5, 7), bool)
    mask[1:3, 2:6] = True
    msg = mask_to_image(mask, header)
    assert (msg.encoding, msg.height, msg.width, msg.step) == ("mono8", 5, 7, 7)
    assert msg.header.frame_id == "camera_optical" and msg.header.stamp.nanosec == 345
    assert set(np.frombuffer(msg.data, np.uint8)) == {0, 255}
    prob = probability_to_image(np.full((5, 7), 0.25, np.float32), header)
    assert (prob.encoding, prob.step) == ("32FC1", 28)
    assert np.frombuffer(prob.data, np.float32).tolist() == [0.25] * 35


def test_polygon_outlines_the_largest_region():
    mask = np.zeros((40, 50), bool)
    mask[5:10, 5:10] = True  # small
    mask[20:35, 10:40] = True  # large
    polygon = largest_region_polygon(mask, Header(frame_id="camera"))
    xs = [p.x for p in polygon.polygon.points]
    ys = [p.y for p in polygon.polygon.points]
    assert (min(xs), max(xs), min(ys), max(ys)) == (10, 39, 20, 34)
    assert largest_region_polygon(np.zeros((4, 4), bool), Header()).polygon.points == []
