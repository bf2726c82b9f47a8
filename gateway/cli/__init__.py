"""The ``visual-runtime`` command.

``main`` parses the command line and runs ``serve`` (the gateway, through
:func:`gateway.app.create_app`) or ``demo``; ``commands`` are the client
commands (sessions, logs, recording) built on :mod:`visual_runtime_client`;
``doctor``, ``doctor_sandbox`` and ``checks`` answer "is this machine ready?";
``demo_agent`` is the scripted agent of the demo; ``progress`` draws progress
bars; ``settings_doc`` keeps docs/operations.md in step with the flags.

May import: everything in ``gateway``, ``visual_runtime_client``, ``wire``.
"""
