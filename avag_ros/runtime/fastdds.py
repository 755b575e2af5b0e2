"""What Fast DDS's default transports do to large raw images, checked from the environment the process runs in."""
from __future__ import annotations

import os

from sensor_msgs.msg import Image

# With default Fast DDS settings, raw images larger than its shared-memory segment (640x480 bgr8 is 900 KiB) are
# mostly lost over best effort between processes (README, "Large raw images").
FASTDDS_SHM_SEGMENT_BYTES = 512 * 1024


def fastdds_default_transports() -> bool:
    """Whether this process talks over Fast DDS with its default transports (no LARGE_DATA, no XML profile)."""
    rmw = os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    transports = os.environ.get("FASTDDS_BUILTIN_TRANSPORTS", "DEFAULT").upper()
    profiles = os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") or os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE")
    return rmw.startswith("rmw_fastrtps") and transports == "DEFAULT" and not profiles


class LargeImageWarning:
    """Warns once per node about raw images that the default transports lose between processes."""

    def __init__(self, logger) -> None:
        self._logger = logger
        self._warned = False

    def check(self, msg: Image) -> None:
        if self._warned or len(msg.data) <= FASTDDS_SHM_SEGMENT_BYTES or not fastdds_default_transports():
            return
        self._warned = True
        self._logger.warning(
            f"raw images of {len(msg.data) / 1024:.0f} KiB arrive over Fast DDS's default transports, whose "
            "shared-memory segment is 512 KiB: on best effort most such images are lost between processes. "
            "Export FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA in every process on the topic (the camera driver "
            "too), or set use_compressed: true (README, 'Large raw images')")
