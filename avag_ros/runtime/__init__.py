"""The process around the node: start and ordered stop, signals, executors, logging, memory, QoS and DDS checks."""
