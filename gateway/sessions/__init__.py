"""Session lifecycle: what a session is, and everything that happens to it.

Owns the session state machine (``session``), the manager that creates, re-adopts
and stops sessions on a backend (``manager``), the watchdog that checks running ones
each poll and restarts dead runtime agents (``watchdog``), the SQLite store
(``store``), the event log and live event hub (``events``), resource slots
(``slots``), ids and tokens (``tokens``) and the link to each runtime agent
(``agent_link``).

May import: ``gateway.config``, ``gateway.errors``, ``gateway.appkeys``,
``gateway.backends``, ``wire``.
"""
