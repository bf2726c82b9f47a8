"""Who may do what, and the defences of the one port.

``auth`` resolves a request's token (API, session control or view) to a
principal; ``throttle`` rate-limits failed tokens and session creation;
``origin`` checks the Origin of browser requests; ``csp`` builds the viewer's
Content-Security-Policy; ``hardening`` is the middleware that applies them all.

May import: ``gateway.config``, ``gateway.errors``, ``gateway.appkeys``,
``gateway.sessions``.
"""
