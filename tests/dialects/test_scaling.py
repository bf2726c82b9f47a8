"""wire.scaling: agent pixels <-> screen pixels, exact at the edges (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.errors import ActionError
from wire.scaling import Scale, to_screen_action

SIZES = [(1280, 720, 1600, 900), (1024, 768, 1600, 900), (1366, 768, 1920, 1080),
         (1600, 900, 1600, 900), (333, 241, 1600, 900)]


@pytest.mark.parametrize("aw,ah,sw,sh", SIZES)
def test_corners_and_centre_land_on_the_mapped_pixel(aw: int, ah: int, sw: int, sh: int) -> None:
    scale = Scale(aw, ah, sw, sh)

    def centre_of(ax: int, ay: int) -> tuple[int, int]:
        # the screen pixel under the centre of agent pixel (ax, ay)
        return int((ax + 0.5) * sw / aw), int((ay + 0.5) * sh / ah)

    for ax, ay in [(0, 0), (aw - 1, 0), (0, ah - 1), (aw - 1, ah - 1), (aw // 2, ah // 2)]:
        assert scale.point_to_screen(ax, ay) == centre_of(ax, ay)
    if sw < 2 * aw and sh < 2 * ah:
        # an agent pixel narrower than two screen pixels: corners are the screen's corners
        assert scale.point_to_screen(0, 0) == (0, 0)
        assert scale.point_to_screen(aw - 1, 0) == (sw - 1, 0)
        assert scale.point_to_screen(0, ah - 1) == (0, sh - 1)
        assert scale.point_to_screen(aw - 1, ah - 1) == (sw - 1, sh - 1)
    if (aw, ah) == (1280, 720):
        assert scale.point_to_screen(640, 360) == (800, 450)


@given(st.sampled_from(SIZES), st.data())
def test_screen_to_agent_inverts_agent_to_screen(size: tuple[int, int, int, int],
                                                 data: st.DataObject) -> None:
    scale = Scale(*size)
    x = data.draw(st.integers(0, size[0] - 1))
    y = data.draw(st.integers(0, size[1] - 1))
    assert scale.point_to_agent(*scale.point_to_screen(x, y)) == (x, y)


@given(st.sampled_from(SIZES), st.data())
def test_every_screen_pixel_reads_back_inside_the_picture(size: tuple[int, int, int, int],
                                                         data: st.DataObject) -> None:
    scale = Scale(*size)
    x = data.draw(st.integers(0, size[2] - 1))
    y = data.draw(st.integers(0, size[3] - 1))
    ax, ay = scale.point_to_agent(x, y)
    assert 0 <= ax < size[0] and 0 <= ay < size[1]
    # and the agent pixel maps back within one agent pixel's footprint of the point
    sx, sy = scale.point_to_screen(ax, ay)
    assert abs(sx - x) <= size[2] / size[0] and abs(sy - y) <= size[3] / size[1]


@pytest.mark.parametrize("point", [(-1, 0), (0, -1), (1280, 0), (0, 720), (5000, 5000)])
def test_out_of_range_agent_points_are_refused(point: tuple[int, int]) -> None:
    with pytest.raises(ActionError) as e:
        Scale(1280, 720, 1600, 900).point_to_screen(*point, field="start_coordinate")
    assert e.value.field == "start_coordinate"


def test_regions_map_edge_to_edge() -> None:
    scale = Scale(1280, 720, 1600, 900)
    assert scale.region_to_screen(0, 0, 1280, 720) == (0, 0, 1600, 900)
    assert scale.region_to_screen(640, 360, 641, 361) == (800, 450, 802, 452)
    for bad in ([0, 0, 0, 10], [10, 0, 5, 10], [0, 0, 1281, 10], [-1, 0, 10, 10]):
        with pytest.raises(ActionError) as e:
            scale.region_to_screen(*bad)
        assert e.value.field == "region"


def test_to_screen_action_maps_every_coordinate_field() -> None:
    scale = Scale(800, 450, 1600, 900)
    out = to_screen_action({"action": "left_click_drag", "start_coordinate": [0, 0],
                            "coordinate": [799, 449], "path": [[400, 225]], "text": "ctrl"}, scale)
    assert out == {"action": "left_click_drag", "start_coordinate": [1, 1],
                   "coordinate": [1599, 899], "path": [[801, 451]], "text": "ctrl"}
    assert to_screen_action({"action": "zoom", "region": [0, 0, 400, 225]}, scale)["region"] \
        == [0, 0, 800, 450]
    with pytest.raises(ActionError) as e:
        to_screen_action({"action": "mouse_move", "coordinate": [800, 0]}, scale)
    assert e.value.field == "coordinate"
    with pytest.raises(ActionError) as e:
        to_screen_action({"action": "left_click_drag", "coordinate": [1, 1],
                          "path": [[1, 1], [1, 450]]}, scale)
    assert e.value.field == "path[1]"


def test_identity_is_exact() -> None:
    scale = Scale.identity(1600, 900)
    assert scale.is_identity
    assert all(scale.point_to_screen(x, y) == (x, y) and scale.point_to_agent(x, y) == (x, y)
               for x, y in [(0, 0), (1599, 899), (800, 450), (1, 898)])
