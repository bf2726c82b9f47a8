"""The pods' uids are reserved in /etc/subuid and /etc/subgid (issue 20, H5).

Pods took uids from 200000 up, inside the subordinate ranges ``useradd``
hands to ordinary users (165536-231071 for the second one), whose rootless
containers then share uids with sessions. The local backend now reserves its
range as ``visual-runtime:<start>:65536`` in both files on its first start,
refuses to start when another entry overlaps it (naming a free ``uid_base``),
and ``doctor`` checks the reservation.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.appkeys import MANAGER
from gateway.backends.uidrange import (
    OWNER,
    SUBID_FILES,
    UidRangeError,
    check_range,
    free_base,
    pod_range,
    reserve_range,
)
from gateway.cli.checks import DoctorOptions
from gateway.cli.doctor import check_uid_range
from gateway.config import GatewayConfig
from tests.gateway_fixtures import Gateway


async def test_a_started_gateway_has_reserved_its_range(light_gateway: Gateway) -> None:
    gw = light_gateway
    start, count = pod_range(GatewayConfig().uid_base)
    for path in SUBID_FILES:
        assert f"{OWNER}:{start}:{count}" in path.read_text().splitlines(), path
    assert check_range(GatewayConfig().uid_base) == []
    check = check_uid_range(DoctorOptions())
    assert check.ok, check
    # and the pods' uids are inside it
    session = await gw.create_running(resolution="640x480")
    pod = gw.extra["app"][MANAGER].get(session["session_id"]).pod
    assert start <= pod["uid_app"] < pod["uid_agent"] < start + count
    await gw.stop(session["session_id"])


def test_someone_elses_range_is_never_taken(tmp_path: Path) -> None:
    files = (tmp_path / "subuid", tmp_path / "subgid")
    for path in files:
        path.write_text("alice:100000:65536\nbob:165536:65536\n")
    with pytest.raises(UidRangeError, match="bob's subordinate range 165536-231071") as info:
        reserve_range(200_000, files)
    assert f"set uid_base to {free_base(files)}" in str(info.value)
    assert all(p.read_text() == "alice:100000:65536\nbob:165536:65536\n" for p in files)
    problems = check_range(200_000, files)
    assert any("overlap bob's range" in p for p in problems), problems
    # The free base it names works, once; bob's and alice's lines stay as they were.
    base = free_base(files)
    assert reserve_range(base, files) is True
    assert reserve_range(base, files) is False
    start, count = pod_range(base)
    for path in files:
        assert path.read_text() == (f"alice:100000:65536\nbob:165536:65536\n"
                                    f"{OWNER}:{start}:{count}\n")
    assert check_range(base, files) == []
