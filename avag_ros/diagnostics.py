"""The node's /diagnostics status: the values it reports, and from them the level and the one-line message that
says what is wrong first."""
from __future__ import annotations

import math

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from .audio.sources import AudioSource
from .parameters import GroundingSettings
from .audio.sound_events import SoundEvents

# Matched image publishers but no image for this long: warn, because with default Fast DDS settings, raw images
# larger than its 512 KiB shared-memory segment are mostly lost over best effort between processes
# (avag_ros.runtime.fastdds).
SILENT_CAMERA_S = 5.0
# A median latency below minus this means the image stamps and the node's clock disagree (sim time without
# /clock, unsynchronised machines); a little negative is ordinary clock jitter between machines.
STAMP_TOLERANCE_MS = 50.0


def grounding_values(statistics: dict[str, float], settings: GroundingSettings, state: str, model: str,
                     predictor, source: AudioSource | None, events: SoundEvents | None, image_subscription,
                     sim_time: bool, now_ns: int) -> dict[str, object]:
    """`statistics`: Statistics.snapshot(); `state`: active, inactive or unconfigured; `predictor`, `source`,
    `events` and `image_subscription`: None while unconfigured; `now_ns`: the node's clock."""
    values = dict(statistics)
    values.update({
        "latency_clock": "ROS sim time (/clock)" if sim_time else "ROS system time",
        "image_topic": image_subscription.topic_name if image_subscription is not None else "none",
        "image_publishers": image_subscription.get_publisher_count() if image_subscription is not None else 0,
        "lifecycle_state": state, "model": model,
        "device": predictor.backend.description if predictor is not None else "none",
        "precision": settings.precision, "audio_source": settings.audio_source,
        "audio_health": source.health if source is not None else "not configured",
    })
    values.update(_sound_event_values(events, settings, now_ns))
    if predictor is not None:
        values.update(predictor.view_reuse.diagnostics())
    return values


def _sound_event_values(events: SoundEvents | None, settings: GroundingSettings, now_ns: int) -> dict[str, object]:
    """The level and the current sound event (id 0: none), also before any image arrives: its age on the node's
    clock, and the audio heard of it (less than its age while the source lags or stalls)."""
    if events is None:
        return {"audio_level_db": math.nan, "sound_event_active": False, "event_id": 0, "event_age_s": 0.0,
                "event_heard_s": 0.0}
    state = events.update(settings.audio_min_level_db, settings.audio_hold_s, settings.audio_change_threshold)
    event = state.event
    return {"audio_level_db": state.level_db, "sound_event_active": event is not None,
            "event_id": event.id if event is not None else 0,
            "event_age_s": (now_ns - event.onset_ns) / 1e9 if event is not None else 0.0,
            "event_heard_s": state.heard_s}


def level_and_message(values: dict[str, object], waited_s: float, sim_time: bool) -> tuple[bytes, str]:
    """`values` from grounding_values; `waited_s` since activation or the last image, whichever is later."""
    state, image_publishers = values["lifecycle_state"], values["image_publishers"]
    if state == "unconfigured":
        return DiagnosticStatus.ERROR, "not configured (see the log for the reason)"
    if state == "active" and image_publishers > 0 and waited_s > SILENT_CAMERA_S:
        return DiagnosticStatus.WARN, (
            f"no image for {waited_s:.0f} s from {image_publishers} matched publisher(s); raw images over "
            "512 KiB are lost over best-effort Fast DDS between processes unless every process sets "
            "FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA")
    if values["latency_median_ms"] < -STAMP_TOLERANCE_MS:
        return DiagnosticStatus.WARN, (
            f"image stamps are {-values['latency_median_ms'] / 1000:.3g} s ahead of the node's "
            f"{values['latency_clock']}, so latency is meaningless: "
            + ("use_sim_time is set but /clock is not moving, or the camera stamps wall time" if sim_time
               else "the camera's clock and this machine's disagree"))
    if state == "active" and not values["audio_health"].startswith("ok"):
        return DiagnosticStatus.WARN, f"audio: {values['audio_health']}"
    if "RANDOM" in values["model"]:
        return DiagnosticStatus.WARN, "running with random weights"
    return DiagnosticStatus.OK, state


def grounding_status(name: str, values: dict[str, object], waited_s: float, sim_time: bool) -> DiagnosticStatus:
    """Every one of `values` goes out as a key-value pair, floats with two decimals."""
    level, message = level_and_message(values, waited_s, sim_time)
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=values["device"],
                            values=[KeyValue(key=k, value=f"{v:.2f}" if isinstance(v, float) else str(v))
                                    for k, v in values.items()])
