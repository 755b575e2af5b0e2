"""A planner in its own process: calls `<service>` (avag_interfaces/GroundAffordance) once per request described in
a JSON file and prints one JSON line per answer, with the seconds from call to answer.

    python tests/ros/ground_client.py SERVICE REQUESTS.json [PERIOD_S]

Each request: {"channels", "sample_rate", "sample_format", "coding_format", "audio": path of the raw clip bytes,
"image": null (the newest camera frame) or {"path": .npy of HxWx3 uint8 RGB, "frame_id"}}. Requests go out one
after the other, PERIOD_S apart (default 0).
"""
import base64
import json
import sys
import time

import numpy as np
import rclpy
from rclpy.node import Node


def request_from(spec: dict):
    from audio_common_msgs.msg import AudioInfo
    from avag_interfaces.srv import GroundAffordance

    request = GroundAffordance.Request()
    request.audio_info = AudioInfo(channels=spec["channels"], sample_rate=spec["sample_rate"],
                                   sample_format=spec["sample_format"], coding_format=spec["coding_format"])
    with open(spec["audio"], "rb") as clip:
        request.audio.data = clip.read()
    if spec.get("image"):
        rgb = np.load(spec["image"]["path"])
        image = request.image
        image.header.frame_id = spec["image"]["frame_id"]
        image.height, image.width, image.encoding, image.step = rgb.shape[0], rgb.shape[1], "rgb8", rgb.shape[1] * 3
        image.data = rgb.tobytes()
    return request


def answer_record(response, seconds: float) -> dict:
    grounding = response.grounding
    return {"success": response.success, "message": response.message, "seconds": seconds,
            "frame_id": grounding.header.frame_id,
            "stamp": [grounding.header.stamp.sec, grounding.header.stamp.nanosec],
            "size": [grounding.function_mask.width, grounding.function_mask.height],
            "function_mask": base64.b64encode(bytes(grounding.function_mask.data)).decode(),
            "dependency_mask": base64.b64encode(bytes(grounding.dependency_mask.data)).decode(),
            "function_confidence": grounding.function_confidence,
            "sound_event_active": grounding.sound_event_active, "audio_level_db": grounding.audio_level_db,
            "event_id": grounding.event_id,
            "times_ns": {field: getattr(grounding, field).sec * 10**9 + getattr(grounding, field).nanosec
                         for field in ("event_onset", "audio_start", "audio_end")}}


def main(service: str, requests_path: str, period_s: float = 0.0) -> None:
    from avag_interfaces.srv import GroundAffordance

    rclpy.init()
    node = Node("ground_client")
    client = node.create_client(GroundAffordance, service)
    if not client.wait_for_service(timeout_sec=60):
        print(json.dumps({"error": f"{service} never appeared"}), flush=True)
        sys.exit(1)
    with open(requests_path) as file:
        specs = json.load(file)
    for spec in specs:
        request = request_from(spec)
        started = time.monotonic()
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=60)
        seconds = time.monotonic() - started
        if not future.done():
            print(json.dumps({"error": "no answer within 60 s"}), flush=True)
            sys.exit(1)
        print(json.dumps(answer_record(future.result(), seconds)), flush=True)
        time.sleep(period_s)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.0)
