"""The wire format shared by the gateway and the runtime agent.

Both sides import this package; it imports neither of them (only the standard
library and python-xlib's keysym table). It holds the contract, not behaviour:

* :mod:`wire.actions`     computer-use actions: typed values and validation
* :mod:`wire.keys`        key and combo names -> X keysyms
* :mod:`wire.datachannel` viewer input messages (data channel and WebSocket)
* :mod:`wire.agent_api`   the runtime agent's HTTP routes and headers, as the gateway calls them
* :mod:`wire.errors`      the exception tree
* :mod:`wire.files`       the files API's listing (the gateway's and the swarm pod's)

``tests/test_layers.py`` checks that neither side imports the other.
"""

from wire.errors import ActionError, ProtocolError, UnknownKeyError, WireError

__all__ = ["ActionError", "ProtocolError", "UnknownKeyError", "WireError"]
