"""The short text a pager SMS carries for one visit, in English or Chinese.

An SMS leaves the bank through the operator, so it says as little as does the job: time, name, tier,
door, the client manager; and for a rejected or suspect card a clear alert with the last four
characters of the ID number at most.  No phone number, no full ID number, no customer number in
clear.  Whatever the data holds, :func:`vipsense.privacy.mask_personal_numbers` masks every ID-,
mobile- or landline-shaped number in the names that go in (however written: ``tel+86...``, spaces),
and :func:`vipsense.plugins.notifiers.gsm.at.mask_numbers` every phone- or ID-like run of digits in the
finished text (``privacy-security.md`` §1: masked on every notification).  Names and tiers go in
through :func:`vipsense.privacy.printable`: a control character or a line break in the data is shown as
an escape, never sent, so a text cannot carry a line the bank did not write.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from zoneinfo import ZoneInfo

from vipsense.model import Staff, Visit, VisitKind
from vipsense.privacy import mask_id_number, mask_tail, printable, shown

from .at import mask_numbers

_REASONS = {
    "en": {
        "lost": "card reported LOST",
        "revoked": "card REVOKED",
        "expired": "card EXPIRED",
        "not_yet_valid": "card not yet valid",
        "wrong_branch": "card not valid at this branch",
        "tid_mismatch": "chip ID mismatch, possible clone",
        "too_fast": "seen at another branch moments ago, possible clone",
    },
    "zh": {
        "lost": "已挂失",
        "revoked": "已注销",
        "expired": "已过期",
        "not_yet_valid": "尚未生效",
        "wrong_branch": "非本网点卡",
        "tid_mismatch": "芯片ID不符，疑似克隆",
        "too_fast": "刚在其他网点出现，疑似克隆",
    },
}
_TIERS_ZH = {"silver": "银卡", "gold": "金卡", "platinum": "白金卡", "diamond": "钻石卡"}
_WORDS = {
    "en": {
        "arrival": "VIP",
        "alert": "CARD ALERT",
        "suspect": "SUSPECT CARD",
        "unknown_reason": "card rejected",
        "manager": " Client manager: {}.",
        "id": ", ID *{}",
        "at": " at {}",
        "advice": " Do not greet; check the card discreetly.",
        "unresolved": "card of customer {} (no identity store answered)",
        "card_seen": "CARD SEEN",
        "card_seen_text": "card ...{} read, identity stores not answering; look out for the customer.",
        "stale": " (cached data)",
    },
    "zh": {
        "arrival": "贵宾到店",
        "alert": "卡片警报",
        "suspect": "可疑卡片",
        "unknown_reason": "卡片被拒",
        "manager": "客户经理：{}。",
        "id": "，证件尾号{}",
        "at": "，{}",
        "advice": "请勿问候，请低调核实卡片。",
        "unresolved": "客户{}的卡（身份库无应答）",
        "card_seen": "读到贵宾卡",
        "card_seen_text": "卡号尾号{}，身份库暂无应答，请留意门口客户。",
        "stale": "（缓存数据）",
    },
}


def _tier(tier: str | None, language: str) -> str:
    if not tier:
        return ""
    return printable(_TIERS_ZH.get(tier.lower(), tier) if language == "zh" else tier.upper())


def _who(visit: Visit, language: str) -> str:
    words = _WORDS[language]
    if visit.customer is not None:
        name = shown(visit.customer.name)
    elif visit.card is not None:
        name = words["unresolved"].format(printable(mask_tail(visit.card.customer_no, 4)))
    else:
        name = "?"
    tier = _tier(visit.tier, language)
    if not tier:
        return name
    return f"{name}（{tier}）" if language == "zh" else f"{name} ({tier})"


def _id_tail(visit: Visit) -> str:
    """The last four characters of the ID number (what ``mask_id_number`` leaves), or ""."""
    if visit.customer is None:
        return ""
    return printable(mask_id_number(visit.customer.id_number).lstrip("*"))


def render(
    visit: Visit,
    *,
    branch_name: str,
    staff: Mapping[str, Staff],
    language: str = "en",
    tz: ZoneInfo | None = None,
) -> str:
    """The text for one visit.  Chinese texts go out as UCS2, others as GSM 7-bit where they can."""
    words = _WORDS[language]
    at = dt.datetime.fromtimestamp(visit.arrived_at, tz).strftime("%H:%M")  # the branch's clock
    where = words["at"].format(printable(visit.arrival.reader_id))
    branch_name = printable(branch_name)
    stale = words["stale"] if visit.stale else ""
    if visit.kind is VisitKind.UNRESOLVED:
        seen = words["card_seen_text"].format(visit.arrival.epc[-4:])
        if language == "zh":
            text = f"【{branch_name}】{at} {words['card_seen']}{where}：{seen}"
        else:
            text = f"{branch_name} {at} {words['card_seen']}{where}: {seen}"
    elif visit.kind in (VisitKind.REJECTED, VisitKind.SUSPECT):
        label = words["suspect" if visit.kind is VisitKind.SUSPECT else "alert"]
        reason = _REASONS[language].get(visit.reason.value if visit.reason else "", words["unknown_reason"])
        tail = _id_tail(visit)
        ident = words["id"].format(tail) if tail else ""
        if language == "zh":
            text = f"【{branch_name}】{at} {label}：{reason}。{_who(visit, language)}{ident}{where}。{stale}"
        else:
            text = f"{branch_name} {at} {label}: {reason}. {_who(visit, language)}{ident}{where}.{stale}"
        text += words["advice"]
    else:
        manager = ""
        cm = visit.customer.client_manager if visit.customer else None
        if cm:
            manager = words["manager"].format(shown(staff[cm].name if cm in staff else cm))
        if language == "zh":
            text = f"{at} {words['arrival']}：{_who(visit, language)}{where}。{stale}{manager}"
        else:
            text = f"{at} {words['arrival']} {_who(visit, language)}{where}.{stale}{manager}"
    return mask_numbers(text)
