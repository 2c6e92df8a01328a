"""Fuzzing the SIP parser: mutated INVITEs raise SipParseError or parse, nothing else.

A seeded mutator (byte flips, inserted/deleted/duplicated bytes and lines, hostile
tokens at random places, truncation) runs 100,000 mutations of valid INVITEs straight
through ``parse_message`` and ``StreamFramer`` — no socket, so it stays fast. Any other
exception fails the test with the seed and the input that caused it.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from adapters.sip.gate import dial_input_from_invite
from adapters.sip.message import SipParseError, StreamFramer, parse_message
from tests.conftest import data_dir

ITERATIONS = 100_000
SEED = 4475

TORTURE = data_dir() / "sip-torture"

SEEDS: list[bytes] = [
    (
        b"INVITE sip:+8613800000001@127.0.0.1:5070;user=phone SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK776asdhds;rport, SIP/2.0/TCP p.example;branch=z9hG4bK2\r\n"
        b"Max-Forwards: 70\r\n"
        b'From: "Agent \\"One\\"" <sip:1001@127.0.0.1>;tag=1928301774\r\n'
        b"To: <sip:+8613800000001@127.0.0.1>\r\n"
        b"Call-ID: a84b4c76e66710@pc33.example\r\n"
        b"CSeq: 314159 INVITE\r\n"
        b"Contact: <sip:1001@127.0.0.1:5062;transport=udp>\r\n"
        b"P-Asserted-Identity: <sip:+862161234567@pbx.example>\r\n"
        b"X-Agent-ID: a1\r\nX-Case-ID: C-1\r\n"
        b"Content-Type: application/sdp\r\n"
        b"Content-Length: 38\r\n\r\n"
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    ),
    (
        b"INVITE sip:013800000002@gw SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n"
        b"f: sip:1002@pbx;tag=x\r\nt: sip:013800000002@gw\r\ni: c2@pbx\r\n"
        b"CSeq: 2\r\n INVITE\r\nl: 0\r\n\r\n"
    ),
]
if TORTURE.is_dir():
    for name in ("wsinv", "esc01", "longreq", "inv2543", "intmeth", "mpart01"):
        SEEDS.append((TORTURE / f"{name}.sip").read_bytes())

HOSTILE = [
    b"%s%n%x", b"\x00", b"\xff\xfe", b"\r", b"\n", b"\r\n", b"\r\n\r\n", b";", b";;", b",", b",,",
    b'"', b"\\", b"<", b">", b"@", b":", b"%", b"%4", b"%zz", b" ", b"\t", b"99999999999999999999",
    b"-1", b"0x10", b"\xe4\xb8\xad", b"=", b"/", b"SIP/2.0", b"[", b"]", b"[::1", b"A" * 300,
    b"9" * 5000,
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        pos = rng.randrange(len(buf) + 1) if buf else 0
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 1:
            buf[pos:pos] = rng.choice(HOSTILE)
        elif op == 2 and buf:
            del buf[pos : pos + rng.randint(1, 16)]
        elif op == 3:
            lines = bytes(buf).split(b"\r\n")
            i = rng.randrange(len(lines))
            lines.insert(i, lines[rng.randrange(len(lines))])
            buf = bytearray(b"\r\n".join(lines))
        elif op == 4:
            lines = bytes(buf).split(b"\r\n")
            del lines[rng.randrange(len(lines))]
            buf = bytearray(b"\r\n".join(lines))
        elif op == 5:
            buf = buf[: rng.randrange(len(buf) + 1)]
        elif op == 6 and buf:
            end = min(len(buf), pos + rng.randint(1, 40))
            buf[pos:pos] = buf[pos:end] * rng.randint(1, 5)
        elif op == 7:
            lines = bytes(buf).split(b"\r\n")
            i = rng.randrange(len(lines))
            lines[i] = lines[i].swapcase() if rng.random() < 0.5 else lines[i].replace(b":", b" : ", 1)
            buf = bytearray(b"\r\n".join(lines))
        else:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(buf)


@pytest.mark.slow
def test_one_hundred_thousand_mutated_invites_raise_only_sip_parse_error():
    rng = random.Random(SEED)
    parsed = refused = 0
    for i in range(ITERATIONS):
        data = mutate(rng, SEEDS[i % len(SEEDS)])
        transport = "tcp" if i % 5 == 0 else "udp"
        try:
            msg = parse_message(data, transport)
            if msg.method == "INVITE":
                dial_input_from_invite(msg, {"1001": "a1"})
            parsed += 1
        except SipParseError as exc:
            assert exc.reason
            refused += 1
        except Exception as exc:  # the assertion this test exists for
            pytest.fail(f"iteration {i} (seed {SEED}): {type(exc).__name__}: {exc} on input {data[:400]!r}")
        if i % 10 == 0:
            framer = StreamFramer()
            try:
                for k in range(0, len(data), 61):
                    for framed in framer.feed(data[k : k + 61]):
                        parse_message(framed, "tcp")
            except SipParseError:
                pass
            except Exception as exc:
                pytest.fail(f"framer iteration {i}: {type(exc).__name__}: {exc} on input {data[:400]!r}")
    # The mutator must actually produce both outcomes, or it is not testing anything.
    assert parsed > 1000 and refused > 1000
