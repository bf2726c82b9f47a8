"""Pool keys and their validation (pure; the pool itself is tested on real pods in
test_pool.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from gateway.backends.base import SessionBackend
from gateway.config import GatewayConfig, parse_pool_key
from gateway.sessions.pool import WarmPool
from gateway.sessions.slots import SlotTable
from gateway.spec import SessionSpec


@pytest.mark.parametrize(("backend", "key", "normal"), [
    ("local", "1280x720", "1280x720"),
    ("local", " 1920x1080 ", "1920x1080"),
    ("docker", "1280x720", "1280x720/egress"),
    ("docker", "1280x720/none", "1280x720/none"),
    ("docker", "3840x2160/egress", "3840x2160/egress"),
])
def test_keys_are_normalised(backend: str, key: str, normal: str) -> None:
    assert parse_pool_key(key, backend) == normal


@pytest.mark.parametrize(("backend", "key", "why"), [
    ("local", "1280x720/none", "sets the network at claim"),
    ("local", "big", "expected WxH"),
    ("local", "1281x720", "must be even"),
    ("local", "4000x2000", "320-3840"),
    ("docker", "1280x720/wifi", "none or egress"),
    ("docker", "x720/none", "expected WxH or WxH/none|egress"),
])
def test_unknown_keys_say_why(backend: str, key: str, why: str) -> None:
    with pytest.raises(ValueError, match="unknown pool key") as e:
        parse_pool_key(key, backend)
    assert why in str(e.value)


def test_sizes_add_up_and_must_fit_max_sessions() -> None:
    config = GatewayConfig(pool_size=2, pool=(("1920x1080", 1), ("800x600", 3)))
    assert config.pool_sizes() == {"1920x1080": 3, "800x600": 3}
    assert GatewayConfig(pool=(("800x600", 0),)).pool_sizes() == {}
    with pytest.raises(ValueError, match=r"\(9 pods\) is larger than max_sessions \(8\)"):
        GatewayConfig(pool_size=5, pool=(("800x600", 4),))
    with pytest.raises(ValueError, match="must be >= 0"):
        GatewayConfig(pool_size=-1)


def _pool(tmp_path: Path, **config: Any) -> WarmPool:
    cfg = GatewayConfig(state_dir=tmp_path, **config)
    backend = cast(SessionBackend, object())  # key_for never touches it
    return WarmPool(cfg, backend, SlotTable(tmp_path / "slots"), lambda: 0, lambda: 0)


def test_a_spec_goes_to_the_smallest_key_that_fits(tmp_path: Path) -> None:
    pool = _pool(tmp_path, pool=(("1920x1080", 1), ("1280x720", 1)))
    assert pool.key_for(SessionSpec(resolution=(1024, 768))) == "1920x1080"  # 768 > 720
    assert pool.key_for(SessionSpec(resolution=(1280, 720))) == "1280x720"
    assert pool.key_for(SessionSpec(resolution=(640, 480), network="none")) == "1280x720"
    assert pool.key_for(SessionSpec(resolution=(2560, 1440))) is None
    assert pool.claim(SessionSpec(resolution=(640, 480))) is None  # nothing warm yet
    assert pool.counters["misses"] == 1


def test_docker_keys_match_the_network(tmp_path: Path) -> None:
    pool = _pool(tmp_path, backend="docker", pool=(("1920x1080/none", 1),))
    assert pool.key_for(SessionSpec(network="none")) == "1920x1080/none"
    assert pool.key_for(SessionSpec(network="egress")) is None
