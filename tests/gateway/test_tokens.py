"""Token scoping: session tokens work only for their own live session."""

from __future__ import annotations

from tests.gateway_fixtures import Gateway


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_session_tokens_are_scoped_and_die_with_the_session(api_gateway: Gateway) -> None:
    gw = api_gateway
    a = await gw.create_running(resolution="640x480")
    b = await gw.create_running(resolution="640x480")
    a_id, b_id = a["session_id"], b["session_id"]
    base = "/api/visual-sessions"

    for kind in ("view", "control"):
        token = a["tokens"][kind]
        async with gw.http.get(gw.url(f"{base}/{a_id}"), headers=_bearer(token)) as resp:
            assert resp.status == 200
        async with gw.http.get(gw.url(f"{base}/{a_id}/control"), headers=_bearer(token)) as resp:
            assert resp.status == 200
        # Another session's resources: 403.
        async with gw.http.get(gw.url(f"{base}/{b_id}"), headers=_bearer(token)) as resp:
            assert resp.status == 403
            assert resp.content_type == "application/problem+json"
        async with gw.http.get(gw.url(f"{base}/{b_id}/screenshot"),
                               headers=_bearer(token)) as resp:
            assert resp.status == 403
        # Session management needs the API token.
        async with gw.http.get(gw.url(base), headers=_bearer(token)) as resp:
            assert resp.status == 403
        async with gw.http.post(gw.url(f"{base}/{a_id}/stop"), headers=_bearer(token)) as resp:
            assert resp.status == 403
        async with gw.http.post(gw.url(f"{base}/{a_id}/actions"), headers=_bearer(token),
                                json={"action": "cursor_position"}) as resp:
            assert resp.status == 403

    # A view token may not take control; a control token may.
    async with gw.http.post(gw.url(f"{base}/{a_id}/control"), json={"action": "take"},
                            headers=_bearer(a["tokens"]["view"])) as resp:
        assert resp.status == 403
    async with gw.http.post(gw.url(f"{base}/{a_id}/control"), json={"action": "take"},
                            headers=_bearer(a["tokens"]["control"])) as resp:
        assert resp.status == 200
        assert (await resp.json())["controller"] == "human"
    async with gw.http.post(gw.url(f"{base}/{a_id}/control"), json={"action": "release"},
                            headers=_bearer(a["tokens"]["control"])) as resp:
        assert resp.status == 200

    # Once the session ends its tokens stop working; the API token still reads it.
    await gw.stop(a_id)
    for kind in ("view", "control"):
        async with gw.http.get(gw.url(f"{base}/{a_id}"),
                               headers=_bearer(a["tokens"][kind])) as resp:
            assert resp.status == 401
    assert (await gw.get(a_id))["status"] == "stopped"
    # Session b is untouched by all of the above.
    assert (await gw.get(b_id))["status"] == "running"
    await gw.stop(b_id)


async def test_api_token_is_kept_with_mode_0600(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from gateway.sessions.tokens import load_or_create_api_token

    path = tmp_path / "state" / "api-token"
    token, created = load_or_create_api_token(path)
    assert created and len(token) >= 40
    assert path.stat().st_mode & 0o777 == 0o600
    again, created_again = load_or_create_api_token(path)
    assert again == token and not created_again


def test_new_tokens_and_ids_are_safe_command_line_words() -> None:
    """A token or id that began with "-" read as an option (``--token -x...``); one in
    32 did. 5000 of each: none may, all are url-safe, full length and distinct."""
    import re

    from gateway.sessions.tokens import new_session_id, new_token

    for make, length in ((new_token, 43), (new_session_id, 22)):
        words = [make() for _ in range(5000)]
        assert len(set(words)) == len(words)
        for word in words:
            assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", word), word
            assert len(word) == length, word
