"""What both Python clients' conformance tests share: where the server is, how long to wait, the
transport modes, and fresh room names. The two recorders stay apart: one is threaded, the other
asyncio."""

import os
import uuid

URL = os.environ.get("SIO_URL")
WAIT = 3.0
MODES = {
    "polling": ["polling"],
    "websocket": ["websocket"],
    "default": None,  # polling first, then the upgrade
}


def room_name(prefix):
    """A room name no other test uses."""
    return prefix + uuid.uuid4().hex
