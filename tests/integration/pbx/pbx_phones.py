"""Real pyVoIP `VoIPPhone`s for the tests: an agent extension and a debtor line.

Each phone registers on the test Kamailio and behaves as told when a call arrives:
"answer" (answer, play its tone, keep what it hears), "ignore" (let it ring),
"busy" (486), "decline" (603). Everything pyVoIP runs on pyVoIP's threads; the test
waits on threading events, never on sleeps.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np

from adapters.pbx import _pyvoip as pv
from tests.support.pyvoip_stop import stop_phone

FRAME = 160
AGENT_EXT = "1001"
DEBTOR = "13800000001"
AGENT_HZ = 440.0
DEBTOR_HZ = 1000.0


def tone_u8(freq: float, seconds: float, *, amplitude: float = 70.0, rate: int = 8000, phase0: int = 0) -> bytes:
    n = int(seconds * rate)
    return bytes(int(128 + amplitude * math.sin(2 * math.pi * freq * (i + phase0) / rate)) for i in range(n))


def dominant_frequency(samples: np.ndarray, rate: int = 8000) -> float:
    """The frequency with the most energy (Hann-windowed FFT), DC removed."""
    x = samples.astype(np.float64)
    x = x - x.mean()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    spectrum[:3] = 0
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spectrum))])


def band_energy_ratio(samples: np.ndarray, freq: float, rate: int = 8000, width: float = 30.0) -> float:
    """Share of the signal's energy (DC excluded) within ±width Hz of `freq`."""
    x = samples.astype(np.float64)
    x = x - x.mean()
    power = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    power[:3] = 0
    total = power.sum()
    return float(power[(freqs > freq - width) & (freqs < freq + width)].sum() / total) if total else 0.0


class TestPhone:
    __test__ = False  # not a pytest class

    def __init__(self, name: str, kamailio_port: int, sip_port: int, rtp_low: int, rtp_high: int, *, tone_hz: float) -> None:
        self.name = name
        self.tone_hz = tone_hz
        self.behaviour = "answer"
        self.rang = threading.Event()
        self.answered = threading.Event()
        self.ended = threading.Event()
        self.heard_tone = threading.Event()
        self.hangup_now = threading.Event()
        self.expect_hz: float | None = None
        self.may_answer = threading.Event()  # cleared by reset(hold_answer=True): ring until set
        self.may_answer.set()
        self._generation = 0
        self.heard = bytearray()
        self.calls_received = 0
        self._lock = threading.Lock()
        self.phone = pv.VoIPPhone(
            "127.0.0.1", kamailio_port, name, "", myIP="127.0.0.1",
            callCallback=self._on_call, sipPort=sip_port, rtpPortLow=rtp_low, rtpPortHigh=rtp_high,
        )

    def start(self) -> None:
        self.phone.sip.register_timeout = 3
        self.phone.start()
        if self.phone.get_status() != pv.PhoneStatus.REGISTERED:
            raise RuntimeError(f"test phone {self.name} did not register: {self.phone.get_status()}")

    def stop(self) -> None:
        self.hangup_now.set()
        stop_phone(self.phone)

    def reset(self, behaviour: str, expect_hz: float | None = None, *, hold_answer: bool = False) -> None:
        self._generation += 1  # ends any loop still running for an earlier call
        self.behaviour = behaviour
        self.expect_hz = expect_hz
        if hold_answer:
            self.may_answer.clear()
        else:
            self.may_answer.set()
        for ev in (self.rang, self.answered, self.ended, self.heard_tone, self.hangup_now):
            ev.clear()
        with self._lock:
            self.heard.clear()

    def heard_samples(self) -> np.ndarray:
        with self._lock:
            return np.frombuffer(bytes(self.heard), dtype=np.uint8)

    # on pyVoIP's "Phone Call" thread; must live as long as the call (pyVoIP forgets a
    # call whose callback thread has returned and then ignores its BYE)
    def _on_call(self, call: "pv.VoIPCall") -> None:
        self.calls_received += 1
        self.rang.set()
        if self.behaviour in ("busy", "decline"):
            # not call.deny(): pyVoIP 1.6.8 sends the 486 and then crashes stopping RTP
            # clients it never started (AttributeError: 'RTPClient' has no 'sin')
            msg = call.sip.gen_busy(call.request)
            if self.behaviour == "decline":
                msg = msg.replace("486 Busy Here", "603 Decline")
            call.sip.out.sendto(msg.encode(), (call.phone.server, call.phone.port))
            call.state = pv.CallState.ENDED
            return
        gen = self._generation
        if self.behaviour == "ignore":
            while call.state == pv.CallState.RINGING and gen == self._generation and not self.hangup_now.wait(0.05):
                pass
            return
        if not self.may_answer.wait(15) or gen != self._generation:
            return
        call.answer()
        self.answered.set()
        self._talk(call, gen)

    def _talk(self, call: "pv.VoIPCall", gen: int) -> None:
        phase = 0
        next_t = time.monotonic()
        # prime 60 ms so the far end has audio from the first packet on
        call.write_audio(tone_u8(self.tone_hz, 0.06, phase0=phase))
        phase += 480
        frames = 0
        while call.state == pv.CallState.ANSWERED and not self.hangup_now.is_set() and gen == self._generation:
            call.write_audio(tone_u8(self.tone_hz, 0.02, phase0=phase))
            phase += FRAME
            data = call.read_audio(FRAME, blocking=False)
            frames += 1
            with self._lock:
                self.heard += data
                recent = bytes(self.heard[-8000:])
            # every 100 ms: does the last second carry the tone we expect to hear?
            if self.expect_hz and frames % 5 == 0 and len(recent) == 8000 and not self.heard_tone.is_set():
                samples = np.frombuffer(recent, dtype=np.uint8)
                if abs(dominant_frequency(samples) - self.expect_hz) < 20 and band_energy_ratio(samples, self.expect_hz) > 0.6:
                    self.heard_tone.set()
            next_t += 0.02
            time.sleep(max(0.0, next_t - time.monotonic()))
        if call.state == pv.CallState.ANSWERED:
            call.hangup()
        self.ended.set()
