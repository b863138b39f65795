"""What the built-in plugins show and send, in Chinese and in English: the console's greeting block, the
SMS text (and how many parts it costs), the PDA's screen and the language it takes from the hub, the
profile errors of plugin settings and the one-line summaries.  Chinese is asserted word for word: a
translation that changes is a change staff see."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from vipsense import i18n
from vipsense.api import PluginContext
from vipsense.clock import Clock
from vipsense.model import Arrival, Card, Customer, Notification, RejectReason, Role, Staff, Visit, VisitKind
from vipsense.output import Output, display_width
from vipsense.plugins.notifiers.console import ConsoleNotifier, ConsoleSettings
from vipsense.plugins.notifiers.pda import display
from vipsense.plugins.notifiers.pda.agent import Agent
from vipsense.plugins.notifiers.pda.protocol import encode, push_body
from vipsense.signing import signed_headers
from vipsense.sms import PART_UNITS, SINGLE_SEPTETS, SINGLE_UNITS, Alphabet, render, segment

ID_NUMBER = "310101199001011234"
MOBILE = "13812345678"
SHANGHAI = ZoneInfo("Asia/Shanghai")
AT = dt.datetime(2026, 12, 7, 9, 41, tzinfo=SHANGHAI).timestamp()
STAFF = {"cm1": Staff("cm1", "上官婉儿", Role.CLIENT_MANAGER, mobile="13900000001")}


def visit(
    kind: VisitKind = VisitKind.GREETED,
    reason: RejectReason | None = None,
    name: str = "欧阳娜娜",
    tier: str = "diamond",
    stale: bool = False,
    door: str = "大堂东门",
) -> Visit:
    person = Customer(
        "C1000001",
        name,
        tier=tier,
        company="上海星辰科技有限公司",
        id_number=ID_NUMBER,
        mobile=MOBILE,
        client_manager="cm1",
        usual_business="大额存单、外汇理财",
    )
    return Visit(
        visit_id="v1",
        branch_id="sh",
        kind=kind,
        arrival=Arrival("E28011606000020840001234", door, 2, 0.0, 0.0, 3, -50.0),
        arrived_at=AT,
        card=Card("E28011606000020840001234", "C1000001"),
        customer=person,
        reason=reason,
        tier=tier,
        stale=stale,
    )


def sms_text(v: Visit, language: str | None = None, staff: dict[str, Staff] = STAFF) -> str:
    return render(v, branch_name="陆家嘴支行", staff=staff, language=language, tz=SHANGHAI)


# -- the SMS text ------------------------------------------------------------------------------------


def test_the_arrival_text_in_each_language():
    assert sms_text(visit(), "zh") == "09:41 贵宾到店：欧阳娜娜（钻石卡），大堂东门。客户经理：上官婉儿。"
    assert sms_text(visit(), "en") == "09:41 VIP 欧阳娜娜 (DIAMOND) at 大堂东门. Client manager: 上官婉儿."


def test_an_alert_in_chinese_word_for_word():
    text = sms_text(visit(VisitKind.SUSPECT, RejectReason.TOO_FAST, stale=True), "zh_CN")
    assert text == (
        "【陆家嘴支行】09:41 可疑卡片：刚在其他网点出现，疑似克隆。欧阳娜娜（钻石卡），证件尾号1234，"
        "大堂东门。（缓存数据）请勿问候，请低调核实卡片。"
    )


def test_the_text_follows_the_branch_unless_the_notifier_names_a_language():
    i18n.set_default("zh_CN")  # what a running branch does with branch.locale: zh_CN
    assert sms_text(visit()).startswith("09:41 贵宾到店：")
    assert sms_text(visit(), "en").startswith("09:41 VIP ")
    i18n.set_default("en")
    assert sms_text(visit()).startswith("09:41 VIP ")
    with pytest.raises(ValueError, match="unknown language 'fr'"):
        sms_text(visit(), "fr")


def test_the_longest_realistic_texts_fit_their_parts():
    """A long compound-surname name with its romanisation, the top tier, a cached copy, a long door name
    and a client manager: Chinese goes as UCS2 (70 units alone, 67 a part), English as GSM 7-bit."""
    long_visit = visit(name="欧阳娜娜 Ouyang Nana", stale=True, door="大堂东门-2号天线")
    arrival_zh, arrival_en = sms_text(long_visit, "zh"), sms_text(long_visit, "en")
    zh, en = segment(arrival_zh), segment(arrival_en)
    assert zh.alphabet is Alphabet.UCS2 and len(arrival_zh) <= SINGLE_UNITS and len(zh.parts) == 1
    assert en.alphabet is Alphabet.UCS2  # the Chinese name and door make even the English text UCS2
    assert len(en.parts) == 2 and all(len(p) <= PART_UNITS for p in en.parts) and not en.truncated

    latin = visit(name="Ouyang Nana", stale=True, door="lobby-east")
    latin_staff = {"cm1": Staff("cm1", "Shangguan Wan'er", Role.CLIENT_MANAGER)}
    latin_en = segment(sms_text(latin, "en", latin_staff))
    assert latin_en.alphabet is Alphabet.GSM7 and len(latin_en.text) <= SINGLE_SEPTETS

    alert = visit(VisitKind.SUSPECT, RejectReason.TID_MISMATCH, name="欧阳娜娜 Ouyang Nana", stale=True)
    alert_zh = segment(sms_text(alert, "zh"))
    assert len(alert_zh.parts) == 2 and all(len(p) <= PART_UNITS for p in alert_zh.parts)
    assert not alert_zh.truncated and alert_zh.text == sms_text(alert, "zh")


def test_numbers_are_masked_the_same_in_both_languages():
    slipped = visit(VisitKind.REJECTED, RejectReason.LOST, name=f"欧阳娜娜 {MOBILE} {ID_NUMBER}")
    zh, en = sms_text(slipped, "zh"), sms_text(slipped, "en")
    for text in (zh, en):
        assert MOBILE not in text and ID_NUMBER not in text and "C1000001" not in text
        assert "欧阳娜娜 138****5678 **************1234" in text
    assert "证件尾号1234" in zh and "ID *1234" in en


# -- the console -------------------------------------------------------------------------------------


def context(out: io.StringIO | None = None) -> PluginContext:
    return PluginContext(
        "sh",
        "陆家嘴支行",
        "screen",
        Path("."),
        Path("."),
        Clock(),
        Output(out or io.StringIO(), live=False),
        logging.getLogger("t"),
        STAFF,
        tz=SHANGHAI,
    )


def console_block(v: Visit, locale: str) -> list[str]:
    with i18n.using(locale):
        return (
            ConsoleNotifier(ConsoleSettings(color="never"), context()).render(v, "大堂经理 李娜").splitlines()
        )


def test_the_console_block_in_chinese():
    lines = console_block(visit(), "zh_CN")
    assert lines[0].startswith("┌── 09:41:00 · 大堂东门/天线2 · 读卡→显示 ")
    assert lines[1:] == [
        "│ ★ 贵宾到店  钻石卡",
        "│ 欧阳娜娜  ·  上海星辰科技有限公司",
        "│ 常办业务        大额存单、外汇理财",
        "│ 客户经理        上官婉儿",
        "│ 身份证号 **************1234   手机号 138****5678",
        "│ 客户号          C1000001",
        "│ → 大堂经理 李娜",
        "└" + "─" * 63,
    ]


def test_the_console_block_in_english_is_unchanged():
    lines = console_block(visit(), "en")
    assert lines[0].startswith("┌── 09:41:00 · 大堂东门/ant 2 · read→screen ")
    assert lines[1:7] == [
        "│ ★ VIP ARRIVAL  DIAMOND",
        "│ 欧阳娜娜  ·  上海星辰科技有限公司",
        "│ Usual business  大额存单、外汇理财",
        "│ Client manager  上官婉儿",
        "│ ID **************1234   mobile 138****5678",
        "│ Customer no.    C1000001",
    ]


def test_the_console_alert_in_chinese_and_its_frame_fits_the_width():
    lines = console_block(visit(VisitKind.REJECTED, RejectReason.LOST), "zh_CN")
    assert lines[1] == "│ ⚠ 卡片警报：已挂失"
    assert "│ 卡号 E28011606000020840001234：请勿问候，请低调核实卡片" in lines
    assert display_width(lines[0]) == 64  # Chinese characters take two columns: the rule is shorter


def test_the_also_sent_line_in_each_language():
    out = io.StringIO()
    notifier = ConsoleNotifier(ConsoleSettings(color="never"), context(out))
    v = visit()
    first = Notification("v1:a", v, Staff("a", "李娜", Role.LOBBY_MANAGER), "screen", AT, AT + 600)
    again = Notification("v1:b", v, Staff("b", "陈静", Role.BRANCH_MANAGER), "screen", AT, AT + 600)
    with i18n.using("zh_CN"):
        notifier.send(first)
        notifier.send(again)
    assert out.getvalue().splitlines()[-1] == "    ↳ 同时发送给网点负责人 陈静"


# -- the PDA -----------------------------------------------------------------------------------------


def push_doc(locale: str | None) -> dict:
    n = Notification("v1:lobby1", visit(), Staff("lobby1", "李娜", Role.LOBBY_MANAGER), "pda", AT, AT + 600)
    with i18n.using(locale):
        return push_body(n, "sh", "http://127.0.0.1:9/v1/ack", hub="hub1")


def test_the_hub_says_its_language_in_each_push():
    assert push_doc("zh_CN")["locale"] == "zh_CN" and push_doc("en")["locale"] == "en"


def test_the_pda_block_in_chinese():
    with i18n.using("zh_CN"):
        block = display.render(push_doc("zh_CN")).splitlines()
    assert block[1].endswith("  贵宾到店")
    assert block[2:-1] == [
        "│ 姓名       欧阳娜娜",
        "│ 等级       钻石卡",
        "│ 客户号     C1000001",
        "│ 身份证号   **************1234",
        "│ 单位       上海星辰科技有限公司",
        "│ 常办业务   大额存单、外汇理财",
        "│ 门口       大堂东门",
        "│ 编号       v1:lobby1",
    ]
    assert block[-1].startswith("└─ 按回车（或 a）确认 ")


def test_the_pda_block_in_english():
    with i18n.using("en"):
        block = display.render(push_doc("en")).splitlines()
    assert block[1].endswith("  VIP arrival")
    assert block[2:4] == ["│ Name       欧阳娜娜", "│ Tier       DIAMOND"]
    assert block[-2] == "│ Ref        v1:lobby1"


def test_a_pda_alert_title_names_the_reason_in_its_language():
    doc = {**push_doc("zh_CN"), "event": "rejected", "reason": "lost"}
    with i18n.using("zh_CN"):
        assert display.title(doc) == "被拒卡片（已挂失）"
        assert display.title({**doc, "reason": "from_a_newer_hub"}) == "被拒卡片（from a newer hub）"
    with i18n.using("en"):
        assert display.title(doc) == "REJECTED card (card reported LOST)"


KEY = b"k" * 32


def agent(out: io.StringIO, locale: str | None = None) -> Agent:
    return Agent(name="李娜的PDA", role="lobby", staff="lobby1", branch="sh", key=KEY, out=out, locale=locale)


def push(a: Agent, doc: dict) -> tuple[int, dict]:
    body = encode(doc)
    return a.handle_push(signed_headers(KEY, body), body)


def test_the_agent_shows_a_push_in_the_hubs_language_and_keeps_it():
    """The PDA starts in its own LANG (here English, the tests' language); the branch's first push says
    zh_CN, so that push and what the agent says afterwards are in Chinese."""
    out = io.StringIO()
    a = agent(out)
    try:
        assert push(a, push_doc("zh_CN")) == (200, {"shown": True})
        assert a.locale == "zh_CN"
        assert "│ 姓名       欧阳娜娜" in out.getvalue() and "已绑定中心实例 hub1" in out.getvalue()
        assert push(a, push_doc("zh_CN")) == (200, {"duplicate": True})
        assert out.getvalue().splitlines()[-1] == "再次收到推送 v1:lobby1：已显示过"
        a.acknowledge_oldest()
        a.acknowledge_oldest()
        assert out.getvalue().splitlines()[-1] == "没有待确认的消息"
    finally:
        a.state.close()


def test_a_push_without_a_language_keeps_the_agents_own():
    out = io.StringIO()
    a = agent(out)  # its own language: the process's, English in the tests
    doc = push_doc("zh_CN")
    del doc["locale"]  # a hub from before the field: still taken
    try:
        assert push(a, doc) == (200, {"shown": True})
        assert a.locale is None and "│ Name       欧阳娜娜" in out.getvalue()
    finally:
        a.state.close()
    b = agent(io.StringIO())
    try:
        assert push(b, {**push_doc("zh_CN"), "locale": "tlh"}) == (200, {"shown": True})  # no catalogue
        assert b.locale is None
    finally:
        b.state.close()


def test_a_language_the_person_chose_is_kept_whatever_the_hub_speaks():
    out = io.StringIO()
    a = agent(out, locale="en")  # vipsense pda --locale en
    try:
        assert push(a, push_doc("zh_CN")) == (200, {"shown": True})
        assert a.locale == "en" and "│ Name       欧阳娜娜" in out.getvalue()
        assert "bound to hub instance hub1" in out.getvalue()
    finally:
        a.state.close()


def test_the_agent_option_names_a_language():
    from vipsense.plugins.notifiers.pda.agent import build_parser

    args = ["--name", "p", "--role", "lobby", "--staff-id", "s", "--branch", "b"]
    assert build_parser().parse_args([*args, "--locale", "zh_CN.UTF-8"]).locale == "zh_CN"
    assert build_parser().parse_args(args).locale is None
    with pytest.raises(SystemExit):
        build_parser().parse_args([*args, "--locale", "fr"])


def test_a_refusal_on_the_pda_screen_is_in_its_language():
    out = io.StringIO()
    a = agent(out, locale="zh_CN")
    body = encode(push_doc("zh_CN"))
    try:
        status, answer = a.handle_push({}, body)
        assert status == 401 and answer["error"].startswith("unsigned message")  # the API stays English
        assert out.getvalue().startswith("拒绝推送（401）：")
        assert "unsigned" not in out.getvalue()  # the signature's own words are translated too
    finally:
        a.state.close()


# -- settings: profile errors and summaries -------------------------------------------------------------


def test_plugin_setting_errors_in_each_language():
    from vipsense.plugins.notifiers.pda.settings import PdaSettings
    from vipsense.plugins.notifiers.sms_smpp import SmppSettings

    with i18n.using("zh_CN"), pytest.raises(ValueError) as zh:
        PdaSettings(interfaces=["127.0.0.1", "127.0.0.1"], emulate=())
    assert str(zh.value) == "有地址重复列出"
    with i18n.using("zh_CN"), pytest.raises(ValueError) as zh:
        SmppSettings(host="smsc.bank", system_id="x" * 16, password=_secret("pw"), source_addr="10690")
    assert str(zh.value) == "system_id 最多 15 个可打印 ASCII 字符，实际为 'xxxxxxxxxxxxxxxx'"
    with i18n.using("en"), pytest.raises(ValueError) as en:
        SmppSettings(host="smsc.bank", system_id="x" * 16, password=_secret("pw"), source_addr="10690")
    assert str(en.value) == "system_id is at most 15 printable ASCII characters, got 'xxxxxxxxxxxxxxxx'"


def _secret(text: str):
    from vipsense.api import Secret

    return Secret(text)


def test_a_notifier_language_setting_takes_the_old_and_the_new_names():
    from vipsense.plugins.notifiers.sms_smpp import SmppSettings

    base = {"host": "smsc.bank", "system_id": "bank", "password": _secret("pw"), "source_addr": "10690"}
    assert SmppSettings(**base).language is None  # follows the branch
    for language in ("zh", "zh_CN", "en"):
        assert SmppSettings(**base, language=language).language == language


def test_the_summaries_are_translated_when_shown():
    from vipsense.pluginhost import Kind, PluginHost

    host = PluginHost()
    host.load_entry_points(disabled=())
    console = host.types[Kind.NOTIFIER]["console"]
    with i18n.using("zh_CN"):
        assert str(console.summary) == "在终端上打印问候信息块"
    with i18n.using("en"):
        assert str(console.summary) == "prints a greeting block on the terminal"


def test_the_glossary_is_one_table_in_both_languages():
    glossary = (Path(__file__).resolve().parents[1] / "docs" / "glossary.md").read_text(encoding="utf-8")
    rows = [line for line in glossary.splitlines() if line.startswith("| ") and "---" not in line]
    terms = dict(tuple(cell.strip() for cell in row.strip("|").split("|"))[:2] for row in rows[1:])
    for english, chinese in {
        "lobby manager": "大堂经理",
        "VIP card": "贵宾卡",
        "revoke a card": "注销",
    }.items():
        assert terms[english] == chinese
    # the catalogue uses the glossary's words
    with i18n.using("zh_CN"):
        assert i18n.gettext("lobby manager") == terms["lobby manager"]
        assert i18n.gettext("client manager") == terms["client manager"]
    assert json.dumps(terms, ensure_ascii=False)
