"""A lifecycle ChangeState request for a transition the node's state does not have gets an answer, success false,
and the node goes on (rclpy 7 would raise it out of the executor: avag_ros.runtime.lifecycle_requests)."""
import time

from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.node import Node
from rclpy.parameter import Parameter

from avag_ros.grounding_node import GroundingNode
from ros_support import ros_domain


def call(client, request, timeout=20.0):
    assert client.wait_for_service(timeout_sec=timeout)
    future = client.call_async(request)
    deadline = time.monotonic() + timeout
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert future.done(), f"no answer to {request} within {timeout:g} s"
    return future.result()


def test_a_transition_the_state_lacks_is_refused_with_an_answer():
    with ros_domain() as (context, add):
        add(GroundingNode(context=context, parameter_overrides=[Parameter("autostart", value=False)]))
        client = add(Node("lifecycle_client", context=context))
        change = client.create_client(ChangeState, "/affordance_grounding/change_state")
        get = client.create_client(GetState, "/affordance_grounding/get_state")
        # by id, as launch_ros's ChangeState sends them: activate and deactivate need a configured node; 99 is none
        for transition in (Transition.TRANSITION_ACTIVATE, Transition.TRANSITION_DEACTIVATE, 99):
            assert call(change, ChangeState.Request(transition=Transition(id=transition))).success is False
        assert call(change, ChangeState.Request(transition=Transition(label="activate"))).success is False
        assert call(get, GetState.Request()).current_state.label == "unconfigured"
