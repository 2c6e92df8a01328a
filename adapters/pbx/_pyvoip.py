"""The one place pyVoIP 1.6.8 is imported, with its process-wide side effects contained.

pyVoIP, on import and while running:
  - imports `audioop` (DeprecationWarning on 3.11/3.12, gone in 3.13);
  - calls ``warnings.simplefilter("default")`` from its call code, which wipes every
    warning filter of the process (pytest's, the application's);
  - prints to stdout through ``pyVoIP.debug`` (bound by value into ``pyVoIP.SIP.debug``,
    ``pyVoIP.RTP.debug`` and ``pyVoIP.VoIP.VoIP.debug`` at import time).

Importing this module imports pyVoIP with the filters saved and restored, and rebinds
every module's ``debug`` to a structlog logger (numbers masked). `preserved_warning_filters`
wraps any later pyVoIP call that may reset the filters.
"""

from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

import structlog

from dialer.masking import mask_sip_text

_log = structlog.get_logger("adapters.pbx.pyvoip")

_filters_lock = threading.Lock()
TRACE = False  # set True to log pyVoIP's own debug output (it is very verbose)


@contextmanager
def preserved_warning_filters() -> Iterator[None]:
    """Run pyVoIP code and put the process's warning filters back afterwards."""
    with _filters_lock:
        saved = list(warnings.filters)
    try:
        yield
    finally:
        with _filters_lock:
            if warnings.filters != saved:
                warnings.filters[:] = saved  # type: ignore[index]  # typeshed: a Sequence; the module's list
                warnings._filters_mutated()  # type: ignore[attr-defined]


def _debug_to_structlog(s: Any, e: Any = None) -> None:
    # pyVoIP's contract: debug(s) prints s only when pyVoIP.DEBUG; debug(s, e) prints e
    # otherwise. Same here, into structlog, numbers masked.
    if e is not None:
        _log.warning("pbx.pyvoip.message", text=mask_sip_text(str(e))[:500])
    elif TRACE:
        _log.debug("pbx.pyvoip.debug", text=mask_sip_text(str(s))[:2000])


with preserved_warning_filters(), warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import pyVoIP  # noqa: E402
    import pyVoIP.VoIP  # noqa: E402  (must come before pyVoIP.SIP: circular imports)
    import pyVoIP.VoIP.VoIP as _voip_module  # noqa: E402
    from pyVoIP import RTP, SIP  # noqa: E402

    import audioop  # noqa: E402,F401  (pyVoIP's codec; imported here under the filter)

pyVoIP.DEBUG = False
pyVoIP.debug = _debug_to_structlog
SIP.debug = _debug_to_structlog
RTP.debug = _debug_to_structlog
_voip_module.debug = _debug_to_structlog

VoIPPhone = pyVoIP.VoIP.VoIPPhone
VoIPCall = pyVoIP.VoIP.VoIPCall
CallState = pyVoIP.VoIP.CallState
PhoneStatus = pyVoIP.VoIP.PhoneStatus
SIPClient = SIP.SIPClient
SIPMessage = SIP.SIPMessage
SIPMessageType = SIP.SIPMessageType
RTPClient = RTP.RTPClient
PayloadType = RTP.PayloadType
TransmitType = RTP.TransmitType
PYVOIP_VERSION = pyVoIP.__version__

__all__ = [
    "PYVOIP_VERSION",
    "CallState",
    "PayloadType",
    "PhoneStatus",
    "RTPClient",
    "SIPClient",
    "SIPMessage",
    "SIPMessageType",
    "TransmitType",
    "VoIPCall",
    "VoIPPhone",
    "audioop",
    "preserved_warning_filters",
]
