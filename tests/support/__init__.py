"""What the tests share, in one place instead of a copy per folder.

    net.py        free loopback ports, and waiting until a port accepts connections
    sip_fakes.py  in-memory SIP authorizers (no database) for the SIP listener's tests
"""
