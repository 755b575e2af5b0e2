"""avag_core logs through Python's `logging`; inside the node those records go to the node's ROS logger instead, so
that one log, at one level setting, carries both (an export started, a checkpoint converted, random weights)."""
from __future__ import annotations

import logging

LIBRARY_LOGGER = "avag_core"


class RosLogHandler(logging.Handler):
    def __init__(self, ros_logger) -> None:
        super().__init__()
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        message = self.format(record)
        if record.levelno >= logging.ERROR:
            self.ros_logger.error(message)
        elif record.levelno >= logging.WARNING:
            self.ros_logger.warning(message)
        elif record.levelno >= logging.INFO:
            self.ros_logger.info(message)
        else:
            self.ros_logger.debug(message)


def forward_library_logs(ros_logger) -> RosLogHandler:
    """Send avag_core's records to `ros_logger` (whose own level then decides) until `stop_forwarding`."""
    handler = RosLogHandler(ros_logger)
    library = logging.getLogger(LIBRARY_LOGGER)
    library.addHandler(handler)
    library.setLevel(logging.DEBUG)
    # Not also to Python's last-resort stderr handler or the root logger: the ROS log is this process's log.
    library.propagate = False
    return handler


def stop_forwarding(handler: RosLogHandler) -> None:
    library = logging.getLogger(LIBRARY_LOGGER)
    library.removeHandler(handler)
    if not library.handlers:
        library.propagate = True
        library.setLevel(logging.NOTSET)
