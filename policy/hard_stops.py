"""The rules that never lift with time (1–7): system faults, the agent's assignment,
the case's state and flags, the dialed contact, the caller line.

Their fixed checks are built here once; the ones that name the agent, the case or the
number are built by the functions below (cached where they name only the agent or the
number). Caches keyed by a number hold strings and tuples only (see `callee_time`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Collection

from .model import CASE_FLAGS, NO_AGENT, Check, DialRequest
from .numbers import NumberFormatError, mask_number, normalize_number
from .wording import REL_ZH, make_check

__all__ = [
    "FAIL_DNC",
    "FAIL_FLAGS",
    "FAIL_PAUSED",
    "FAIL_REC",
    "FAIL_STORE",
    "PASS_CLOSED",
    "PASS_DNC",
    "PASS_FLAG_LIST",
    "PASS_FLAGS",
    "PASS_NOT_EXPIRED",
    "PASS_PAUSED",
    "PASS_REC",
    "PASS_STARTED",
    "PASS_STORE",
    "PASS_VALID",
    "STATUS_ZH",
    "agent_check",
    "contact_pass",
    "line_check",
    "mask",
    "number_check",
]

_ROLE_ZH = {
    "collector": "催收员",
    "supervisor": "催收主管",
    "qa": "质检",
    "compliance": "合规",
    "data": "数据专员",
    "pbx": "呼叫中心系统",
    "admin": "管理员",
}
STATUS_ZH = {"settled": "结清", "withdrawn": "撤案", "returned": "退案"}
_FLAG_TEXT = {
    "litigation": ("the case is in litigation or reported to the police", "案件已诉讼或报案，停催"),
    "deceased": ("the debtor is reported deceased", "债务人已报告死亡，停催待核实"),
    "incarcerated": ("the debtor is reported imprisoned", "债务人已报告服刑，停催待核实"),
    "fraud_claim": ("the debtor claims identity fraud", "债务人声称被冒用身份（伪冒），停催待核实"),
    "dispute": ("the debtor disputes the debt; suspended until resolved", "债务人对债务有争议，争议解决前暂停催收"),
    "complaint_risk": (
        "the debtor shows an intent to complain; escalate to the supervisor",
        "债务人有投诉倾向，停止拨打并上报主管",
    ),
    "do_not_collect": ("the account history says do not collect", "账户记录注明禁止催收"),
}
_FLAG_ZH_NAME = {
    "litigation": "诉讼/报案",
    "deceased": "死亡",
    "incarcerated": "服刑",
    "fraud_claim": "伪冒",
    "dispute": "争议",
    "complaint_risk": "投诉倾向",
    "do_not_collect": "禁止催收",
}

# Passing checks whose text never varies are built once: the allowed path lists every
# check, and constructing a frozen dataclass for each would dominate that path.

PASS_STORE = make_check("system.store_unavailable", True, "case store reachable", "案件库可用")
FAIL_STORE = make_check(
    "system.store_unavailable", False, "the case store is unavailable: failing closed", "案件库不可用，拒绝拨打（故障即拒绝）"
)
PASS_REC = make_check("system.recording_unavailable", True, "recording system working", "录音系统正常")
FAIL_REC = make_check(
    "system.recording_unavailable",
    False,
    "the recording system is unavailable: every call must be recorded in full",
    "录音系统不可用：所有通话必须全程录音，拒绝拨打",
)
PASS_CLOSED = make_check("case.closed", True, "case is open", "案件未结案")
PASS_PAUSED = make_check("case.paused", True, "case is not paused", "案件未暂停催收")
FAIL_PAUSED = make_check(
    "case.paused", False, "the creditor paused collection of this case", "委托方已暂停该案件催收（停催）"
)
PASS_FLAGS = {
    f: make_check(f"case.{f}", True, f"no {f.replace('_', ' ')} flag", f"无{_FLAG_ZH_NAME[f]}标记") for f in CASE_FLAGS
}
FAIL_FLAGS = {f: make_check(f"case.{f}", False, *_FLAG_TEXT[f]) for f in CASE_FLAGS}
PASS_FLAG_LIST = [PASS_FLAGS[f] for f in CASE_FLAGS]
PASS_DNC = make_check("contact.do_not_call", True, "number is not marked do-not-call", "号码未标记为不再联系")
FAIL_DNC = make_check(
    "contact.do_not_call",
    False,
    "the number is marked do-not-call for this case (e.g. a third party refused further contact)",
    "该号码已标记为不再联系（如第三方明确拒绝再次联系）",
)
_PASS_LINE_OWN = make_check(
    "line.not_registered",
    True,
    "placed through the service's own PBX account, a registered and recorded line",
    "经本系统的呼叫中心账号外呼（已报备、全程录音的线路）",
)
_PASS_LINE_ALLOWED = make_check(
    "line.not_registered",
    True,
    "no registered-line list for this creditor; allowed by allow_unregistered_lines",
    "该委托方未配置报备外呼线路清单；已按 allow_unregistered_lines 配置放行",
)
_FAIL_LINE_NONE = make_check(
    "line.not_registered",
    False,
    "no registered-line list for this creditor: PBX calls must use registered, recorded lines",
    "该委托方未配置报备外呼线路清单，呼叫中心外呼必须使用已报备并录音的线路，拒绝拨打",
)
PASS_STARTED = make_check("case.commission_not_started", True, "commission has started", "委托期已开始")
PASS_NOT_EXPIRED = make_check("case.commission_expired", True, "within the commission period", "在委托期内")
PASS_VALID = make_check("contact.invalid_number", True, "number is valid", "号码有效")


@lru_cache(maxsize=65536)
def number_check(number: str, region: str) -> tuple[str | None, str | None]:
    """(normalised number, None) or (None, reason)."""
    try:
        return normalize_number(number, region), None
    except NumberFormatError as exc:
        return None, exc.reason


def contact_pass(masked: str, relation: str) -> Check:
    return make_check("contact.not_authorized", True, *_contact_pass_text(masked, relation))


@lru_cache(maxsize=65536)
def _contact_pass_text(masked: str, relation: str) -> tuple[str, str]:
    return f"{masked} is a {relation} contact of the case", f"号码为本案联系人号码（{REL_ZH.get(relation, relation)}）"


# `mask_number` itself, cached: every check of a decision names the number again.
@lru_cache(maxsize=65536)
def mask(number: str) -> str:
    return mask_number(number)


def agent_check(
    role: str, agent_id: str, creditors: Collection[str], case_id: str, creditor: str, assigned: str | None
) -> Check:
    """The agent rule. Its passing checks do not name the case, so they are cached per
    agent (and creditor); a refusal is formatted afresh (rare, and names the case)."""
    if role == "collector" and assigned == agent_id and (not creditors or creditor in creditors):
        return _collector_pass(agent_id)
    if role == "supervisor" and creditor in creditors:
        return _supervisor_pass(agent_id, creditor)
    return _agent_refusal(role, agent_id, creditors, case_id, creditor, assigned)


@lru_cache(maxsize=1024)
def _collector_pass(agent_id: str) -> Check:
    return make_check("agent.not_assigned", True, f"collector {agent_id} is assigned to the case", "催收员为本案指派人员")


@lru_cache(maxsize=1024)
def _supervisor_pass(agent_id: str, creditor: str) -> Check:
    return make_check("agent.not_assigned", True, f"supervisor {agent_id} is scoped to creditor {creditor}", "主管有权处理该委托方案件")


def _agent_refusal(
    role: str, agent_id: str, creditors: Collection[str], case_id: str, creditor: str, assigned: str | None
) -> Check:
    if role == NO_AGENT:
        return make_check(
            "agent.not_assigned",
            False,
            f"agent {agent_id} is disabled or no longer exists",
            f"坐席 {agent_id} 已停用或不存在，不得拨打",
        )
    if role == "collector":
        if assigned != agent_id:
            return make_check(
                "agent.not_assigned",
                False,
                f"collector {agent_id} is not assigned to case {case_id}",
                f"催收员 {agent_id} 不是案件 {case_id} 的指派人员，不得拨打",
            )
        if creditors and creditor not in creditors:
            return make_check(
                "agent.not_assigned",
                False,
                f"collector {agent_id} is not cleared for creditor {creditor}",
                f"催收员 {agent_id} 无权处理委托方 {creditor} 的数据",
            )
        return make_check("agent.not_assigned", True, f"collector {agent_id} is assigned to the case", "催收员为本案指派人员")
    if role == "supervisor":
        if creditor in creditors:
            return make_check(
                "agent.not_assigned", True, f"supervisor {agent_id} is scoped to creditor {creditor}", "主管有权处理该委托方案件"
            )
        return make_check(
            "agent.not_assigned",
            False,
            f"supervisor {agent_id} is not scoped to creditor {creditor}",
            f"主管 {agent_id} 无权处理委托方 {creditor} 的案件",
        )
    return make_check(
        "agent.not_assigned",
        False,
        f"role {role!r} may not dial; only the assigned collector or a supervisor of the creditor",
        f"角色「{_ROLE_ZH.get(role, role)}」无拨打权限，仅限指派催收员或该委托方主管",
    )


def line_check(request: DialRequest, region: str, allow_unregistered: bool) -> Check:
    lines = request.registered_lines
    if lines is None:
        # Only a PBX dial ("sip") presents a caller line of its own; every other
        # channel is placed through the service's own registered PBX account.
        if request.channel != "sip":
            return _PASS_LINE_OWN
        return _PASS_LINE_ALLOWED if allow_unregistered else _FAIL_LINE_NONE
    line = request.caller_line
    if not line:
        return make_check(
            "line.not_registered",
            False,
            "no caller line presented; calls must use a registered, recorded line",
            "未提供主叫线路，必须使用已报备并录音的外呼线路",
        )
    if line in lines:
        return make_check("line.not_registered", True, f"caller line {mask_number(line)} is registered", "主叫线路已报备")
    norm, _ = number_check(line, region)
    if norm is not None:
        for registered in lines:
            if number_check(registered, region)[0] == norm:
                return make_check("line.not_registered", True, f"caller line {mask_number(line)} is registered", "主叫线路已报备")
    return make_check(
        "line.not_registered",
        False,
        f"caller line {mask_number(line)} is not one of the creditor's registered, recorded lines",
        f"主叫线路 {mask_number(line)} 不是该委托方报备的录音外呼线路",
    )
