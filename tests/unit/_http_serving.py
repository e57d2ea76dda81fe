"""An HTTP layer of its own for the tests of edgeds.runtime.http1 and streams (no InferenceServer)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager

from edgeds.config import ServerLimits
from edgeds.runtime.http1 import Dispatch
from edgeds.runtime.loops import EventLoop, EventLoops


@contextmanager
def serving(dispatch: Dispatch, limits: ServerLimits | None = None, tls: ssl.SSLContext | None = None) -> Iterator[int]:
    """One event loop on 127.0.0.1 whose connections go to ``dispatch``; yields the port."""

    def factory(lp: EventLoop) -> Dispatch:
        return dispatch

    loops = EventLoops(1, factory, limits=limits or ServerLimits(), alignment=64, name="http-test", tls=tls)
    port = loops.bind("127.0.0.1", 0)
    loops.start()
    try:
        yield port
    finally:
        loops.stop()
