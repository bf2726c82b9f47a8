"""The HTTP face of the gateway: the session API, the viewer page, metrics and OpenAPI.

Owns the routes of ``/api/visual-sessions`` (sessions, actions, control, events,
logs, screenshots, WHEP), the viewer page and its WebSocket proxies, ``/metrics``
and ``/openapi.json``, and the parsing of request bodies (``schemas``). Routes for
recordings and files live with them in :mod:`gateway.media`.

May import: ``gateway.config``, ``gateway.errors``, ``gateway.appkeys``,
``gateway.sessions``, ``gateway.security``, ``gateway.media``, ``wire``.
"""
