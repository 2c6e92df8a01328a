"""Stopping a pyVoIP `VoIPPhone` without an error on its receive thread.

pyVoIP's `SIPClient.stop` closes the socket while the client's "SIP Recieve" thread may
still be inside a receive; that thread then fails on the closed socket, and pytest
reports the thread's exception as an error of whichever test ran last. Here the socket
is closed only once that thread has left its loop (the stop has already ended it)."""

from __future__ import annotations

import threading
from typing import Any


def stop_phone(phone: Any, timeout: float = 5.0) -> None:
    sip = phone.sip
    receivers = [t for t in threading.enumerate()
                 if isinstance(t, threading.Timer) and getattr(t.function, "__self__", None) is sip]
    close = sip._close_sockets

    def close_after_the_receiver() -> None:
        for t in receivers:
            t.join(timeout)
        close()

    sip._close_sockets = close_after_the_receiver
    phone.stop()
