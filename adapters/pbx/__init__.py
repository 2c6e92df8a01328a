"""PBX adapter: originate click-to-dial calls.

    sip_ua.py     the service's SIP user agent (pyVoIP on its own threads, asyncio face)
    sip_client.py its SIP thread: pyVoIP's SIPClient with our transaction layer
    sip_registration.py  REGISTER, challenges and expiry on that thread
    sip_messages.py      raw SIP headers read and responses built
    legs.py       a call leg, its states and end causes, its dialog
    bridge.py     two legs bridged both ways, stereo WAV streamed to a sink; call slots
    originate.py  the attempt's state machine: agent → decide again → debtor → bridge
    audio.py      bounded RTP buffers, sample formats, the streaming WAV header
    errors.py     PbxUnavailable, CapacityExceeded, LegSetupError
    _pyvoip.py    the only import of pyVoIP, its side effects contained
"""
