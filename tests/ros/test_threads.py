"""ReusedThread: the node's inference loops, one per activation, all on one daemon thread."""
import threading
import weakref

import pytest

from avag_ros.runtime.threads import ReusedThread


def test_every_job_runs_on_the_same_daemon_thread_and_a_failure_stays_with_its_job():
    runner = ReusedThread("worker")
    ran_on = []
    first = runner.submit(lambda: ran_on.append(threading.current_thread()) or "first")

    def fails():
        ran_on.append(threading.current_thread())
        raise RuntimeError("this job only")

    failed = runner.submit(fails)
    last = runner.submit(lambda: ran_on.append(threading.current_thread()) or "last")
    assert first.result(timeout=10) == "first" and last.result(timeout=10) == "last"
    with pytest.raises(RuntimeError, match="this job only"):
        failed.result(timeout=10)
    assert len(ran_on) == 3 and len(set(ran_on)) == 1
    thread = ran_on[0]
    assert thread.name == "worker" and thread.daemon and thread is not threading.current_thread()
    runner.close()
    assert not thread.is_alive()


def test_close_lets_the_jobs_already_submitted_finish_first():
    runner = ReusedThread("worker")
    release = threading.Event()
    done = []
    runner.submit(lambda: release.wait(10) and done.append("slow"))
    runner.submit(lambda: done.append("next"))
    closer = threading.Thread(target=runner.close)
    closer.start()
    release.set()
    closer.join(timeout=10)
    assert done == ["slow", "next"] and not closer.is_alive()


class Loop:
    """Stands for the node's inference loop, which holds the predictor and its model."""

    def run(self) -> None:
        pass

    def fail(self) -> None:
        raise RuntimeError("a failing job")


@pytest.mark.parametrize("outcome", ["returns", "raises"])
def test_the_thread_keeps_nothing_of_a_finished_job(outcome):
    """Once the caller learns that a job is done, dropping its own reference frees what the job was bound to: the
    node's cleanup follows deactivate at once, and the thread used to hold the last loop (and with it the model)
    until the next activate. A failed job's error stays with its future, which the caller reads and drops."""
    thread = ReusedThread("test_job")
    try:
        loop = Loop()
        loop_alive = weakref.ref(loop)
        future = thread.submit(loop.run if outcome == "returns" else loop.fail)
        assert (future.exception() is None) == (outcome == "returns")
        del loop, future
        assert loop_alive() is None
    finally:
        thread.close()
