"""The grounding node as its own process (`ros2 run`, `ros2 launch`, `python -m avag_ros.grounding_node`): signals,
spinning, and a bounded, ordered stop (avag_ros.runtime.shutdown)."""
from __future__ import annotations

from typing import Callable, NoReturn

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode
from rclpy.signals import SignalHandlerOptions

from .executors import create_executor
from .shutdown import BoundedShutdown

# A stop (SIGINT, SIGTERM, lifecycle shutdown) that takes longer than this plus the frame being inferred is forced
# (avag_ros.runtime.shutdown); `ros2 launch` waits 5 s after SIGINT before it escalates to SIGTERM.
SHUTDOWN_TIMEOUT_S = 4.0


def run_node_process(make_node: Callable[[], LifecycleNode], args: list[str] | None = None) -> NoReturn:
    """Start the node made by `make_node` (a GroundingNode: the stop reads its `stats`, `finalized` and
    `stop_activity`), spin it until a signal or its lifecycle shutdown, then stop it in order."""
    # rclpy's own signal handlers shut the context down the moment Ctrl-C arrives, while the inference thread
    # may be publishing a frame into it. Here a signal during start-up interrupts the model load or export (which
    # cleans up after itself), and once running only asks the loop to end; the node is then taken down in order,
    # within SHUTDOWN_TIMEOUT_S whatever happens (avag_ros.runtime.shutdown). A lifecycle `shutdown` ends it too.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    shutdown = BoundedShutdown("grounding_node", SHUTDOWN_TIMEOUT_S)
    node = executor = None
    try:
        node = make_node()
        shutdown.name = node.get_logger().name
        executor = create_executor()
        executor.add_node(node)
        shutdown.running()
        while not shutdown.requested.is_set() and not node.finalized.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.2)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # KeyboardInterrupt: a signal during start-up, which avag_ros.runtime.shutdown turns into one
    finally:
        # the inference thread finishes its frame
        shutdown.begin(extra_s=node.stats.longest_model_s() if node is not None else 0.0)
        # The executor first: it stops dispatching and detaches its middleware callbacks while every entity still
        # exists, so that nothing the DDS threads go on receiving can reach an entity being destroyed.
        if executor is not None:
            shutdown.set_step("stopping the executor")
            executor.shutdown(timeout_sec=SHUTDOWN_TIMEOUT_S)
        if node is not None:
            shutdown.set_step("stopping inference and audio")
            node.stop_activity()
            shutdown.set_step("destroying the node")
            node.destroy_node()
        shutdown.set_step("shutting down the ROS context")
        rclpy.try_shutdown()
    shutdown.exit(0)

