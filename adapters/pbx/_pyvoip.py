"""The one place pyVoIP 1.6.8 is imported, with its process-wide side effects contained.

pyVoIP, on import and while running:
  - imports `audioop` (DeprecationWarning on 3.11/3.12, gone in 3.13);
  - calls ``warnings.simplefilter("default")`` from its call code, which wipes every
    warning filter of the process (pytest's, the application's);
  - prints to stdout through ``pyVoIP.debug`` (bound by value into ``pyVoIP.SIP.debug``,
    ``pyVoIP.RTP.debug`` and ``pyVoIP.VoIP.VoIP.debug`` at import time).

Importing this module imports pyVoIP with its deprecation warnings silenced, and rebinds
every module's ``debug`` to a structlog logger (numbers masked). pyVoIP's call code sees a
`warnings` that cannot reset the filters.
"""

from __future__ import annotations

import warnings
from typing import Any

import structlog

from dialer.masking import mask_sip_text

_log = structlog.get_logger("adapters.pbx.pyvoip")

TRACE = False  # set True to log pyVoIP's own debug output (it is very verbose)


class _CallCodeWarnings:
    """The `warnings` module as pyVoIP's call code sees it: everything but resetting the
    filters. pyVoIP calls ``warnings.simplefilter("default")`` on its own threads; undoing
    that afterwards would itself rewrite the filters under whatever another thread holds
    in a `warnings.catch_warnings()` block at that moment."""

    def __getattr__(self, name: str) -> Any:
        return getattr(warnings, name)

    @staticmethod
    def simplefilter(*_args: Any, **_kwargs: Any) -> None:
        return None


def _debug_to_structlog(s: Any, e: Any = None) -> None:
    # pyVoIP's contract: debug(s) prints s only when pyVoIP.DEBUG; debug(s, e) prints e
    # otherwise. Same here, into structlog, numbers masked.
    if e is not None:
        _log.warning("pbx.pyvoip.message", text=mask_sip_text(str(e))[:500])
    elif TRACE:
        _log.debug("pbx.pyvoip.debug", text=mask_sip_text(str(s))[:2000])


# Importing pyVoIP runs no call code; its own deprecation warnings are silenced here only.
with warnings.catch_warnings():
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
_voip_module.warnings = _CallCodeWarnings()  # type: ignore[assignment,attr-defined]  # a stand-in for the module

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
]
