"""gateway/backends/docker_runtime.py on engine answers shaped like ``docker info``'s.

Unit tests beside the real-engine ones in ``test_gvisor.py``: the registration
checks and what each runtime changes in the containers' settings.
"""

from __future__ import annotations

import pytest

from gateway.backends.docker_runtime import (
    GVISOR_PIDS_FACTOR,
    check_runtime,
    describe_registration,
    registered_runtime,
)
from gateway.errors import BackendError

RUNSC = {"path": "/usr/bin/runsc",
         "runtimeArgs": ["--platform=ptrace", "--network=host", "--host-uds=create"]}
INFO = {"Runtimes": {"runc": {"path": "runc"}, "runsc": RUNSC}}


def test_runc_changes_nothing() -> None:
    info = check_runtime(INFO, "runc")
    assert not info.gvisor
    assert info.app_options() == {}
    assert info.host_pids_limit(512) == 512
    assert info.agent_ipc_mode("abc") == "container:abc"


def test_runsc_is_gvisor_and_scales_the_pids_limit() -> None:
    info = check_runtime(INFO, "runsc")
    assert info.gvisor
    assert info.app_options() == {"runtime": "runsc"}
    assert info.host_pids_limit(512) == 512 * GVISOR_PIDS_FACTOR
    assert info.agent_ipc_mode("abc") == "private"
    assert describe_registration(info) == (
        "runsc: gVisor /usr/bin/runsc --platform=ptrace --network=host --host-uds=create")


def test_unknown_runtime_names_the_registered_ones() -> None:
    with pytest.raises(BackendError) as e:
        check_runtime(INFO, "kata")
    assert "'kata' is not registered with dockerd (registered: runc, runsc)" in str(e.value)


def test_gvisor_without_host_uds_is_refused() -> None:
    info = {"Runtimes": {"gvisor": {"path": "/usr/local/bin/runsc",
                                    "runtimeArgs": ["--platform=ptrace"]}}}
    with pytest.raises(BackendError, match="without --host-uds=create"):
        check_runtime(info, "gvisor")
    info["Runtimes"]["gvisor"]["runtimeArgs"].append("--host-uds=all")
    assert check_runtime(info, "gvisor").gvisor


class _Engine:
    """Counts ``info()`` calls; answers like the docker SDK's client."""

    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.calls = 0

    def info(self) -> object:
        self.calls += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_runc_is_not_looked_up_and_engine_errors_are_backend_errors() -> None:
    engine = _Engine(RuntimeError("403 refused by the Visual Runtime docker proxy"))
    assert registered_runtime(engine, "runc").name == "runc"
    assert engine.calls == 0
    with pytest.raises(BackendError, match="cannot read dockerd's runtimes for 'runsc'"):
        registered_runtime(engine, "runsc")
    assert registered_runtime(_Engine(INFO), "runsc").gvisor
