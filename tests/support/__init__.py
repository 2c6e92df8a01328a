"""What the tests share, in one place instead of a copy per folder.

    builders.py   case documents, users with their roles and creditors, the fixed test time
    net.py        free loopback ports, and waiting until a port accepts connections
    pg.py         a private PostgreSQL database per test
    harness.py    the gate service under test, in-process (its real app and lifespan) or as
                  `dialgate serve` processes, with users, cases and an authenticated client
    sip_fakes.py  in-memory SIP authorizers (no database) for the SIP listener's tests
    outbox.py     the MQTT outbox as a list, for the relay's tests and the MQTT benchmark
"""
