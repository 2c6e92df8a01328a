"""In-memory handlers standing in for the gate service's use cases (phase 1)."""

from __future__ import annotations

from dataclasses import dataclass, field

from adapters.mqtt.errors import MalformedMessage, UnauthorisedMessage, UnmatchedMessage
from adapters.mqtt.ports import DialCommand, DialReply, PbxEvent


@dataclass
class FakeDialService:
    """Tokens → the creditors their user may dial for; cases → their creditor."""

    tokens: dict[str, set[str]] = field(default_factory=dict)
    cases: dict[str, str] = field(default_factory=dict)
    dials: list[DialCommand] = field(default_factory=list)

    async def handle_dial(self, command: DialCommand) -> DialReply:
        creditors = self.tokens.get(command.token)
        if creditors is None:
            raise UnauthorisedMessage("invalid or expired token", "令牌无效或已过期")
        case_id = command.request.get("case_id")
        if not isinstance(case_id, str) or case_id not in self.cases:
            raise MalformedMessage("unknown case_id", "未知的案件编号", details={"field": "case_id"})
        if self.cases[case_id] not in creditors:
            raise UnauthorisedMessage(
                "user is not cleared for this creditor's cases",
                "该用户无权处理此委托方的案件",
                reason="wrong-creditor",
            )
        self.dials.append(command)
        return DialReply(201, {"allowed": True, "case_id": case_id, "channel": "mqtt"})


@dataclass
class FakeAttempts:
    """Attempts by SIP Call-ID, with their state, as the PBX events leave them."""

    by_call_id: dict[str, dict[str, object]] = field(default_factory=dict)
    seen: list[PbxEvent] = field(default_factory=list)

    async def handle_pbx_event(self, event: PbxEvent) -> None:
        attempt = self.by_call_id.get(event.call_id or "")
        if attempt is None:
            raise UnmatchedMessage(
                "no attempt with this Call-ID", "没有与该 Call-ID 对应的拨号记录"
            )
        if event.creditor is not None and event.creditor != attempt["creditor"]:
            raise UnauthorisedMessage(
                "event creditor does not match the attempt's",
                "事件的委托方与拨号记录不符",
                reason="wrong-creditor",
            )
        self.seen.append(event)
        attempt["state"] = {"answered": "connected", "hangup": "ended"}.get(
            event.kind, attempt["state"]
        )
        if event.kind == "hangup":
            attempt["cause"], attempt["duration_s"] = event.cause, event.duration_s
        if event.kind == "recording_ready":
            attempt["recording"] = event.recording_path or event.recording_url
