"""Hugging Face hub access that fails at once, in one sentence, when the hub cannot be reached."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse


def hub_reachable(timeout: float = 3.0) -> bool:
    import huggingface_hub.constants as hub_constants

    host = urlparse(hub_constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextmanager
def offline_unless_reachable() -> Iterator[bool]:
    """Run the body in huggingface_hub/datasets offline mode when the hub is unreachable; yields that flag.

    Without network the hub clients retry for about 30 s before failing; in offline mode cached files
    still load and anything else fails immediately.
    """
    import datasets
    import huggingface_hub.constants as hub_constants

    offline = hub_constants.HF_HUB_OFFLINE or datasets.config.HF_HUB_OFFLINE or not hub_reachable()
    saved = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    if offline:
        datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield offline
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved
