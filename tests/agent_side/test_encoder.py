"""Encoders and the YUV converter on synthetic frames (decoded back with PyAV)."""

from __future__ import annotations

import av
import numpy as np
import pytest
from av.video.reformatter import VideoReformatter

from agent_side.capture import Rect
from agent_side.encoder import (
    EncoderConfig,
    EncoderError,
    YuvConverter,
    create_encoder,
)

W, H = 640, 360


def bgra_frame(seed: int) -> tuple[av.VideoFrame, np.ndarray]:
    frame = av.VideoFrame(W, H, "bgra")
    pixels = np.frombuffer(memoryview(frame.planes[0]), dtype=np.uint8).reshape(
        H, frame.planes[0].line_size)[:, : W * 4].reshape(H, W, 4)
    rng = np.random.default_rng(seed)
    pixels[:] = 255
    pixels[40:80, 40:400, :3] = rng.integers(0, 255, (40, 360, 3), dtype=np.uint8)
    return frame, pixels


def yuv(seed: int) -> av.VideoFrame:
    conv = YuvConverter(W, H)
    frame, pixels = bgra_frame(seed)
    conv.update(frame, pixels, None)
    return conv.frame


@pytest.mark.parametrize("codec", ["h264", "vp8"])
def test_encode_decode_roundtrip(codec: str) -> None:
    enc = create_encoder(codec, W, H, EncoderConfig())
    dec = av.CodecContext.create(codec, "r")
    decoded = []
    for i in range(5):
        out = enc.encode(yuv(i), pts=i * 3000)
        assert out is not None, "encoder must have zero output delay"
        assert out.pts == i * 3000
        packet = out.to_packet()
        assert packet.time_base == out.to_packet().time_base
        decoded += dec.decode(packet)
    assert len(decoded) == 5
    assert all((f.width, f.height) == (W, H) for f in decoded)


def test_h264_annexb_baseline_and_keyframes() -> None:
    enc = create_encoder("h264", W, H, EncoderConfig(keyframe_interval_s=1.0))
    frames = [enc.encode(yuv(i % 2), pts=i * 9000) for i in range(25)]  # 0.1 s apart
    assert all(f is not None for f in frames)
    first = frames[0]
    assert first is not None and first.keyframe
    assert first.data.startswith(b"\x00\x00\x00\x01") or first.data.startswith(b"\x00\x00\x01")
    sps_at = first.data.find(b"\x00\x00\x01\x67")
    assert sps_at >= 0, "keyframes carry SPS in-band (Annex-B)"
    profile_idc, constraints = first.data[sps_at + 4], first.data[sps_at + 5]
    assert profile_idc == 66 and constraints & 0x40, "constrained baseline"
    keys = [i for i, f in enumerate(frames) if f is not None and f.keyframe]
    assert keys == [0, 10, 20], keys
    forced = enc.encode(yuv(0), pts=25 * 9000, keyframe=True)
    assert forced is not None and forced.keyframe


def test_bitrate_change_is_quantised() -> None:
    cfg = EncoderConfig(bitrate=4_000_000, bitrate_change_min_interval_s=0.0)
    enc = create_encoder("h264", W, H, cfg)
    assert enc.encode(yuv(0), pts=0) is not None
    enc.set_bitrate(3_500_000)  # < 1.5x: keep the running context, no keyframe
    out = enc.encode(yuv(1), pts=3000)
    assert out is not None and not out.keyframe and enc.bitrate == 4_000_000
    enc.set_bitrate(1_500_000)  # big drop: re-create, keyframe
    out = enc.encode(yuv(0), pts=6000)
    assert out is not None and out.keyframe and enc.bitrate == 1_500_000


def test_factory_rejects_bad_input() -> None:
    with pytest.raises(EncoderError):
        create_encoder("av1", W, H, EncoderConfig())
    with pytest.raises(EncoderError):
        create_encoder("h264", 641, 360, EncoderConfig())
    with pytest.raises(ValueError):
        EncoderConfig(bitrate=0)


def test_partial_conversion_matches_full() -> None:
    frame, pixels = bgra_frame(1)
    conv = YuvConverter(W, H)
    conv.update(frame, pixels, None)
    pixels[100:150, 200:260, :3] = 17  # change a patch, convert only that rect
    conv.update(frame, pixels, Rect(200, 100, 60, 50))
    full = VideoReformatter().reformat(frame, format="yuv420p")
    for i in range(3):
        ours = conv.frame.planes[i]
        ref = full.planes[i]
        w = W >> min(i, 1)
        h = H >> min(i, 1)
        a = np.frombuffer(memoryview(ours), np.uint8).reshape(h, ours.line_size)[:, :w]
        b = np.frombuffer(memoryview(ref), np.uint8).reshape(h, ref.line_size)[:, :w]
        # swscale filters chroma across the rect edge differently: allow tiny deltas
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 8
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 0.05
