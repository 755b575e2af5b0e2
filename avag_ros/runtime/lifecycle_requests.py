"""ChangeState requests for a transition the node's current state does not have, answered the same on every rclpy.

rclpy 7 (Jazzy; Humble's rclpy 3 alike) lets such a request, when it names the transition by id, raise RCLError out
of the executor's spin: the caller gets no answer and the node process stops. launch_ros's ChangeState action names
transitions by id, and a launch file that sends `configure` to a node that `autostart` has already configured is
such a request. rclpy 9 (Kilted) logs it and answers success false. The node answers it that way on both, before
rclpy's own handler sees it.
"""
from __future__ import annotations


def refuse_unavailable_transitions(node) -> None:
    """Wrap `node`'s (a LifecycleNode's) ChangeState service callback; call before the node spins."""
    service = node._service_change_state  # the service rclpy's LifecycleNode creates, on every version
    change_state = service.callback

    def refuse_or_change(request, response):
        transition = request.transition
        if not transition.label:  # a label rclpy checks itself, on every version
            available = {description[0]: description[1] for description in node._state_machine.available_transitions}
            if transition.id not in available:
                node.get_logger().error(
                    f"lifecycle transition {transition.id} refused: state '{node._state_machine.current_state[1]}' "
                    f"has {', '.join(f'{label} ({id_})' for id_, label in sorted(available.items())) or 'none'}")
                response.success = False
                return response
        return change_state(request, response)

    service.callback = refuse_or_change
