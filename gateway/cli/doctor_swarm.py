"""``visual-runtime doctor --backend swarm``: can this cluster place sessions?

Run on the manager the gateway will use. The checks ask the swarm itself: is
this engine a manager, which nodes match the placement constraints and are
ready and active, what they can still place at the configured reservations
(the same figure the gateway's 503 uses), whether ``--max-sessions``
promises more than that, and what a swarm pod does not do (warm pool, agent
restarts: the configuration refuses them, see ``GatewayConfig``).
"""

from __future__ import annotations

from gateway.cli.checks import Check
from gateway.config import GatewayConfig

__all__ = ["check_swarm"]


def check_swarm(config: GatewayConfig) -> list[Check]:
    from gateway.backends.swarm import SwarmBackend
    from gateway.errors import BackendError

    try:
        backend = SwarmBackend(config)
    except BackendError as e:
        return [Check("swarm manager", True, False, str(e),
                      "docker swarm init (or run the gateway on a manager node)")]
    try:
        client = backend._client  # noqa: SLF001 - the doctor reads what the backend sees
        nodes = client.api.nodes()
        usable = [n for n in nodes if backend.placeable(n)]
        names = ", ".join(sorted(n["Description"]["Hostname"] for n in usable)) or "none"
        checks = [Check("swarm manager", True, True,
                        f"{len(nodes)} node(s) in the swarm, this engine manages it")]
        constraints = " and ".join(config.swarm_constraints) or "no constraint"
        checks.append(Check("session nodes", True, bool(usable),
                            f"{len(usable)} ready and active node(s) match {constraints}: {names}",
                            "docker node update --label-add visual-runtime=session <node>"))
        room = backend._capacity()  # noqa: SLF001
        checks.append(Check(
            "cluster capacity", True, room > 0,
            f"room for {room} more session(s) at {config.swarm_reserve_cpus:g} cores and "
            f"{config.swarm_reserve_memory_mb} MB reserved each",
            "add nodes or lower --swarm-reserve-cpus / --swarm-reserve-memory-mb"))
        if room < config.max_sessions:
            checks.append(Check(
                "max sessions", False, False,
                f"--max-sessions {config.max_sessions} is more than the cluster can place "
                f"now ({room}); beyond that the gateway answers 503",
                f"--max-sessions {max(room, 1)}, or add nodes"))
        else:
            checks.append(Check("max sessions", False, True,
                                f"--max-sessions {config.max_sessions} fits the cluster ({room})"))
        checks.append(Check(
            "pod features", False, True,
            "no warm pool and no runtime agent restarts on swarm: serve refuses "
            "--pool-size/--pool and --agent-restarts with --backend swarm (a dead agent "
            "ends its pod; the session fails naming the node)"))
        return checks
    finally:
        client.close()
