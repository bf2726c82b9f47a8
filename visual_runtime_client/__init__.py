"""An async Python client of the Visual Runtime API, for agent hosts.

Needs only aiohttp: it imports nothing from the gateway or the runtime agent, so
an agent host installs and imports it without the server's dependencies.
See docs/client.md.
"""

from visual_runtime_client.client import *  # noqa: F403  (the public names)
from visual_runtime_client.client import __all__ as __all__
