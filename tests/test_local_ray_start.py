"""A private local Ray that does not come up in time is started once more; the processes the
failed start left are stopped first. Ray gives a node's raylet a fixed 30 s to register with the
GCS (ray/_private/node.py); on a 2-core machine busy with other Ray clusters that can pass.

The end-to-end test makes Ray's own wait fail on its first poll (the raylet "not registered" once,
Ray's clock moved past its 30 s), in a subprocess so that the test session's own Ray is untouched;
everything else, the processes started and stopped included, is real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from glintru.errors import UserError

SCRIPT = r"""
import json, os, time
import ray, ray._private.node as node, ray._private.services as services
from glintru.distributed.processes import descendants
from glintru.distributed.trainer import start_local_ray

real_get_node, offset, first, names = services.get_node, [0.0], [], []

def get_node(*args, **kwargs):
    if not first:  # the first poll: the raylet has not registered, and Ray's 30 s have passed
        first.extend(sorted(descendants(os.getpid())))
        for pid in first:
            try:
                with open(f"/proc/{pid}/cmdline") as f:
                    names.append(f.read().replace("\0", " "))
            except OSError:
                pass
        offset[0] += 31.0
        raise RuntimeError("node not registered yet (test)")
    return real_get_node(*args, **kwargs)

class Clock:  # node.py's `time`, its monotonic clock shifted by `offset`
    def __getattr__(self, name):
        return getattr(time, name)
    def monotonic(self):
        return time.monotonic() + offset[0]

services.get_node, node.time = get_node, Clock()

def running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False

start_local_ray(2, log_to_driver=False)
print(json.dumps({"first": first, "names": names, "running": [p for p in first if running(p)],
                  "cpus": ray.cluster_resources().get("CPU"), "two": ray.get(ray.remote(lambda: 1 + 1).remote())}))
ray.shutdown()
"""


@pytest.mark.slow  # starts Ray twice: about 30 s
def test_a_local_ray_start_that_times_out_is_cleaned_up_and_started_again():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # the first start's GCS and raylet were running when it timed out...
    assert any("gcs_server" in n for n in out["names"]) and any("raylet" in n for n in out["names"]), out["names"]
    assert out["running"] == []  # and were stopped before the second start
    assert out["cpus"] == 2 and out["two"] == 2  # the second start is a working Ray
    assert proc.stderr.count("the local Ray did not start: its node did not register within Ray's 30 s "
                             "(a busy machine?); starting it again") == 1


def test_a_local_ray_that_times_out_twice_is_one_clear_error(monkeypatch, capsys):
    import ray

    from glintru.distributed import trainer

    calls = []

    def init(**kwargs):
        calls.append(kwargs["dashboard_port"])
        raise Exception("The current node timed out during startup. This could happen because some of the "
                        "raylet failed to startup or the GCS has become overloaded.")

    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(UserError, match=r"the local Ray did not start: its node did not register within Ray's 30 s, "
                                        r"2 times \(the machine is too busy\?\)\. Run the command again"):
        trainer.start_local_ray(2)
    assert len(calls) == 2  # started twice, each time on a newly chosen dashboard port
    assert capsys.readouterr().err.count("starting it again") == 1


def test_other_ray_start_errors_are_not_retried(monkeypatch):
    import ray

    from glintru.distributed import trainer

    calls = []

    def init(**kwargs):
        calls.append(1)
        raise ValueError("some other Ray error")

    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(ValueError, match="some other Ray error"):
        trainer.start_local_ray(2)
    assert calls == [1]


def test_init_ray_says_whether_it_initialised_ray_so_commands_stop_only_their_own(monkeypatch):
    """A process that has Ray already (a notebook's, a test session's) keeps it: init_ray neither
    starts nor connects (False), and the commands shut down only a Ray their init_ray initialised."""
    import ray

    from glintru.distributed import trainer

    calls = []
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "unset")  # start_local_ray sets it: restored after the test
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    assert trainer.init_ray(None, None) is False and calls == []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    assert trainer.init_ray("10.0.0.1:6379", None) is True and calls == [{"address": "10.0.0.1:6379"}]
    assert trainer.init_ray(None, 3) is True and calls[-1]["address"] == "local" and calls[-1]["num_cpus"] == 3
    n = len(calls)
    with pytest.raises(UserError, match=r"^--num-cpus: must be >= 1, got 0$"):  # a Python caller gets the CLI's check
        trainer.init_ray(None, 0)
    assert len(calls) == n


def test_the_dashboard_never_gets_the_port_ray_keeps_for_its_agent(monkeypatch):
    """The OS may hand out 52365, Ray's fixed dashboard-agent port, as a free port; given it for the
    dashboard too, Ray refused to start (a CI run). The next free port is taken instead."""
    import ray

    from glintru.distributed import trainer

    offered = iter([52365, 52365, 40123])
    monkeypatch.setattr(trainer, "os_free_port", lambda: next(offered))
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "unset")  # start_local_ray sets it: restored after the test
    calls = []
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw["dashboard_port"]))
    trainer.start_local_ray(2)
    assert calls == [40123]
    assert os.environ["RAY_API_SERVER_ADDRESS"] == "http://127.0.0.1:40123"
    from ray._private import ray_constants

    assert ray_constants.DEFAULT_DASHBOARD_AGENT_LISTEN_PORT in trainer.RAY_FIXED_PORTS  # Ray's own, installed
    monkeypatch.setattr(trainer, "os_free_port", lambda: 52365)
    with pytest.raises(RuntimeError, match=r"no free local port outside Ray's fixed ports \[52365\] in 3 tries"):
        trainer.free_port_for_ray(attempts=3)
