"""SMS PDUs: the encoder against known vectors (sms-paging.md §3, TS 23.038), segmentation rules
(§4), and round trips through the emulator's separately written decoder, by example and with
hypothesis over random Unicode text, astral characters included.  Also the error table (§5) and the
texts a visit becomes, which never carry a full ID or phone number."""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vipsense import sms
from vipsense.model import Arrival, Card, Customer, RejectReason, Role, Staff, Visit, VisitKind
from vipsense.plugins.notifiers.sms_modem import errors, pdu
from vipsense.plugins.notifiers.sms_modem.at import parse_final
from vipsense.plugins.notifiers.sms_modem.receiver import BadPdu, Inbox, decode_submit
from vipsense.sms import mask_numbers, render

NUMBER = "+8613800138000"
YOSHI = "𠮷"  # U+20BB7, CJK Ext-B: a surrogate pair in UTF-16


def deliver(text: str, max_parts: int = 10, **kwargs) -> tuple[sms.Segments, list[pdu.Pdu], Inbox]:
    """Encode with the notifier's encoder, decode every PDU with the emulator's decoder."""
    segments, pdus = pdu.encode_message(NUMBER, text, reference=0x42, max_parts=max_parts, **kwargs)
    inbox = Inbox()
    for mr, p in enumerate(pdus, start=1):
        assert len(p.hex) % 2 == 0 and p.hex == p.hex.upper()
        inbox.add(decode_submit(bytes.fromhex(p.hex), p.tpdu_length), mr)
    return segments, pdus, inbox


# -- known vectors -------------------------------------------------------------------------------------
def test_worked_example_single_ucs2_from_the_reference():
    p = pdu.encode_submit(NUMBER, "张伟", sms.Alphabet.UCS2)
    assert (p.hex, p.tpdu_length) == ("0001000D91683108108300F00008045F204F1F", 18)


def test_worked_example_concatenated_part_from_the_reference():
    p = pdu.encode_submit(NUMBER, "贵宾到达", sms.Alphabet.UCS2, concat=sms.Concat(0xA7, 2, 1))
    assert (p.hex, p.tpdu_length) == ("0041000D91683108108300F000080E050003A702018D355BBE52308FBE", 28)
    decoded = decode_submit(bytes.fromhex(p.hex), 28)
    assert (decoded.text, decoded.reference, decoded.total, decoded.seq) == ("贵宾到达", 0xA7, 2, 1)


def test_gsm7_packing_vector():
    # TS 23.038 §6.1.2.1.1 packing; the classic "hellohello" example
    assert pdu.pack_septets(sms.gsm7_septets("hellohello")).hex().upper() == "E8329BFD4697D9EC37"
    p = pdu.encode_submit(NUMBER, "hellohello", sms.Alphabet.GSM7)
    assert p.hex == "0001000D91683108108300F000000A" + "E8329BFD4697D9EC37"


def test_the_two_alphabet_tables_agree():
    from vipsense.plugins.notifiers.sms_modem.receiver import DEFAULT_ALPHABET, EXTENSION

    assert sms.GSM7_BASIC == DEFAULT_ALPHABET
    assert {v: k for k, v in sms.GSM7_EXTENSION.items()} == EXTENSION


# -- addresses -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("number", "field"),
    [
        ("+8613800138000", "0D91683108108300F0"),
        ("0086 138-0013-8000", "0D91683108108300F0"),  # 00 is China's international prefix
        ("13800138000", "0B813108108300F0"),  # national: type unknown, as dialled
        ("10086", "05810180F6"),
    ],
)
def test_semi_octet_addresses(number, field):
    assert pdu.encode_address(number).hex().upper() == field


@pytest.mark.parametrize("bad", ["", "+", "138-abc", "+86 138 0013 8000 ext 5", "1" * 21])
def test_not_a_number(bad):
    with pytest.raises(ValueError, match="not a phone number"):
        pdu.encode_address(bad)


def test_smsc_part_is_counted_apart_from_the_tpdu():
    without = pdu.encode_submit(NUMBER, "hi", sms.Alphabet.GSM7)
    with_smsc = pdu.encode_submit(NUMBER, "hi", sms.Alphabet.GSM7, smsc="+8613800210500")
    assert with_smsc.hex.startswith("0891683108200105F0")
    assert with_smsc.tpdu_length == without.tpdu_length  # AT+CMGS never counts the SMSC part
    assert decode_submit(bytes.fromhex(with_smsc.hex), with_smsc.tpdu_length).smsc == "+8613800210500"


# -- segmentation --------------------------------------------------------------------------------------
def test_one_non_gsm_character_makes_the_whole_message_ucs2():
    assert sms.segment("Hello world").alphabet is sms.Alphabet.GSM7
    assert sms.segment("Hello world 张").alphabet is sms.Alphabet.UCS2
    assert sms.segment("Hello … world").alphabet is sms.Alphabet.UCS2


@pytest.mark.parametrize(
    ("text", "sizes"),
    [
        ("a" * 160, [160]),
        ("a" * 161, [153, 8]),
        ("€" * 80, [80]),  # 160 septets
        ("€" * 81, [76, 5]),  # an escape pair never straddles parts: 76 × 2 = 152 of 153
        ("a" * 152 + "€" + "a" * 10, [152, 11]),
        ("张" * 70, [70]),
        ("张" * 71, [67, 4]),
        (YOSHI * 35, [35]),  # 70 UTF-16 units
        (YOSHI * 36, [33, 3]),  # 67 units a part: a pair is never split, so 33 pairs
        ("x" * 66 + YOSHI + "x" * 5, [66, 6]),
    ],
)
def test_part_sizes(text, sizes):
    segments, pdus, inbox = deliver(text)
    assert [len(p) for p in segments.parts] == sizes
    (message,) = inbox.messages
    assert message.text == text and message.errors == ()
    assert all(len(bytes.fromhex(p.hex)) - 1 == p.tpdu_length for p in pdus)


def test_long_chinese_text_in_several_parts_with_astral_characters():
    text = ("贵宾张伟先生已到达陆家嘴支行大堂，请客户经理前往接待。" + YOSHI + "野家 🙂 ") * 6
    segments, pdus, inbox = deliver(text)
    assert len(pdus) >= 4 and not segments.truncated
    (message,) = inbox.messages
    assert message.text == text
    assert [(p.reference, p.total, p.seq) for p in message.parts] == [
        (0x42, len(pdus), i) for i in range(1, len(pdus) + 1)
    ]
    assert all(p.alphabet == "ucs2" and p.errors == () for p in message.parts)


def test_gsm7_with_extension_characters_round_trips():
    text = "Vault [B2] {x} ~ | \\ ^ costs €5; @ £ ¥ è é Ä Ö Ñ Ü § ¿ ä ö ñ ü à Δ Φ Γ Λ Ω Π Ψ Σ Θ Ξ\n" * 3
    segments, pdus, inbox = deliver(text)
    assert segments.alphabet is sms.Alphabet.GSM7 and len(pdus) > 1
    assert inbox.messages[0].text == text
    assert {p.alphabet for p in inbox.messages[0].parts} == {"gsm7"}


def test_too_long_a_text_is_cut_with_an_ellipsis():
    segments = sms.segment("张" * 500, max_parts=4)
    assert segments.truncated and len(segments.parts) == 4
    assert segments.text.endswith("…") and len(segments.parts[-1]) == 67
    gsm = sms.segment("word " * 200, max_parts=2)
    assert gsm.truncated and gsm.text.endswith("word...") and len(gsm.parts[-1]) <= 153
    single = sms.segment("a" * 200, max_parts=1)
    assert single.parts == ("a" * 157 + "...",)
    astral = sms.segment(YOSHI * 100, max_parts=1)
    assert astral.parts == (YOSHI * 34 + "…",)  # 69 units: the next pair would not fit


def test_lone_surrogates_are_replaced_not_sent_broken():
    _, _, inbox = deliver("ab\ud842cd")
    assert inbox.messages[0].text == "ab\ufffdcd"


@settings(max_examples=150, deadline=None)
@given(st.text(st.characters(exclude_categories=("Cs",)), max_size=300))
def test_any_unicode_text_survives_the_trip(text):
    segments, pdus, inbox = deliver(text)
    assert not segments.truncated  # 300 code points are at most 600 units: 9 parts of 67
    (message,) = inbox.messages
    assert message.text == text
    assert message.errors == ()  # no part ends inside a surrogate pair or an escape
    for p in pdus:
        assert p.tpdu_length <= 164


ASTRAL = st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF, exclude_categories=("Cs", "Cn"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(ASTRAL, st.sampled_from("张伟贵宾a ")), min_size=1, max_size=200).map("".join))
def test_astral_heavy_text_survives_the_trip(text):
    _, pdus, inbox = deliver(text)
    assert inbox.messages[0].text == text and inbox.messages[0].errors == ()
    units = [len(part.text.encode("utf-16-be")) // 2 for part in inbox.messages[0].parts]
    assert all(u <= (70 if len(pdus) == 1 else 67) for u in units)


GSM_CHARS = st.sampled_from([c for c in sms.GSM7_BASIC if c != "\x1b"] + list(sms.GSM7_EXTENSION))


@settings(max_examples=150, deadline=None)
@given(st.text(GSM_CHARS, max_size=700))
def test_any_gsm7_text_survives_the_trip(text):
    segments, _, inbox = deliver(text)
    assert segments.alphabet is sms.Alphabet.GSM7
    assert inbox.messages[0].text == text and inbox.messages[0].errors == ()


# -- the decoder does not trust the sender -------------------------------------------------------------
def test_decoder_rejects_bad_pdus():
    good = bytes.fromhex("0001000D91683108108300F00008045F204F1F")
    with pytest.raises(BadPdu, match="said 17 octets"):
        decode_submit(good, 17)
    with pytest.raises(BadPdu, match=r"ends too early|user data length"):
        decode_submit(good[:-1])
    with pytest.raises(BadPdu, match="not an SMS-SUBMIT"):
        decode_submit(bytes.fromhex("0000") + good[2:])
    with pytest.raises(BadPdu, match="septets need"):
        decode_submit(bytes.fromhex("0001000D91683108108300F000000AE832"))


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.one_of(st.none(), st.integers(0, 200)))
def test_decoder_raises_only_bad_pdu_on_garbage(data, length):
    with contextlib.suppress(BadPdu):
        decode_submit(data, length)


LINES = [b"AT+CMGS=18\r", b"AT+CMGF=1\r", b'AT+CMGS="+86138"\r', b"\x1a", b"\x1b", b'AT+CPIN="1"\r']
LINES += [b'AT+CSCS="UCS2"\r', b"ATE0Z&F\r", b"AT+CMEE=2;+CSQ;+XX\r", b"AT+CREG=5\r", b"AT\r"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(LINES)), max_size=20))
def test_the_emulator_survives_any_input(chunks):
    from vipsense.plugins.notifiers.sms_modem.emulator import ModemEmulator

    emulator = ModemEmulator(pin="1234")
    for chunk in chunks:
        emulator.feed(chunk)  # its link thread must never die of what a host sends


def test_decoder_notices_a_surrogate_pair_split_across_parts():
    high, low = YOSHI.encode("utf-16-be")[:2], YOSHI.encode("utf-16-be")[2:]
    inbox = Inbox()
    for seq, body in ((1, b"\x00a" + high), (2, low + b"\x00b")):
        ud = sms.Concat(9, 2, seq).udh() + body
        raw = bytes.fromhex("0041000D91683108108300F00008") + bytes((len(ud),)) + ud
        inbox.add(decode_submit(raw), seq)
    (message,) = inbox.messages
    assert message.text != "a" + YOSHI + "b"  # what a phone would show is broken
    assert len(message.errors) == 2 and "broken UTF-16" in message.errors[0]


def test_validity_period_is_encoded_and_read_back():
    assert [pdu.relative_validity(s) for s in (60, 300, 43200, 86400, 2 * 86400, 30 * 86400, 35 * 86400)] == [
        0,
        0,
        143,
        167,
        168,
        196,
        197,
    ]
    p = pdu.encode_submit(NUMBER, "hi", sms.Alphabet.GSM7, validity=86400)
    assert p.hex.startswith("0011") and decode_submit(bytes.fromhex(p.hex)).validity == 167


def test_sixteen_bit_references_are_reassembled_too():
    inbox = Inbox()
    for seq, body in ((1, "贵宾"), (2, "到达")):
        ud = bytes((6, 0x08, 4, 0x12, 0x34, 2, seq)) + body.encode("utf-16-be")
        inbox.add(decode_submit(bytes.fromhex("0041000D91683108108300F00008") + bytes((len(ud),)) + ud), seq)
    assert inbox.messages[0].text == "贵宾到达" and inbox.messages[0].parts[0].reference == 0x1234


# -- errors (sms-paging.md §5) -------------------------------------------------------------------------
@pytest.mark.parametrize("code", [314, 331, 332])
def test_cms_errors_worth_a_retry(code):
    assert errors.cms_error(code).retry is True


@pytest.mark.parametrize("code", [304, 305, 310, 311, 312, 313, 316, 330])
def test_cms_configuration_faults_are_not_retried(code):
    assert errors.cms_error(code).retry is False


def test_error_words():
    assert errors.describe("CMS", 331, "").message == "no network service (+CMS ERROR 331)"
    assert errors.describe("CMS", 310, "") == errors.ErrorInfo("SIM not inserted (+CMS ERROR 310)", False)
    assert errors.describe("CME", 14, "") == errors.ErrorInfo("SIM busy (+CME ERROR 14)", True)
    assert errors.describe("CME", 515, "").retry is True
    assert errors.describe("CME", 11, "").message == "SIM PIN required (+CME ERROR 11)"
    assert errors.cms_error(1).message.startswith("unassigned number") and not errors.cms_error(1).retry
    assert errors.cms_error(77).message == "network refused the message (RP cause 77)"
    assert errors.cms_error(0xE0).message == "SMS centre refused the message (TP failure cause 0xE0)"
    assert errors.cms_error(999) == errors.ErrorInfo("modem error 999", True)
    assert errors.describe("ERROR", None, "").message == "the modem answered ERROR"


def test_final_result_codes():
    assert parse_final("OK") == ("OK", None, "")
    assert parse_final("ERROR") == ("ERROR", None, "")
    assert parse_final("+CMS ERROR: 331") == ("CMS", 331, "")
    assert parse_final("+CME ERROR: SIM busy") == ("CME", None, "SIM busy")
    assert parse_final("COMMAND NOT SUPPORT") == ("ERROR", None, "COMMAND NOT SUPPORT")
    for line in ("+CSQ: 20,99", "RING", "OKAY", '+CMTI: "SM",1'):
        assert parse_final(line) is None


# -- the text of a visit -------------------------------------------------------------------------------
ID_NUMBER, MOBILE = "110101199003071234", "13812345678"
STAFF = {"cm1": Staff("cm1", "王芳 Wang Fang", Role.CLIENT_MANAGER, mobile="13900000001")}


def visit(kind=VisitKind.GREETED, reason=None, name="张伟 Zhang Wei", client_manager="cm1") -> Visit:
    at = dt.datetime(2026, 11, 23, 9, 41).timestamp()
    person = Customer(
        "C1000001", name, tier="gold", id_number=ID_NUMBER, mobile=MOBILE, client_manager=client_manager
    )
    return Visit(
        visit_id="v1",
        branch_id="sh",
        kind=kind,
        arrival=Arrival("E2000001", "door", 1, 0.0, 0.0, 3, -50.0),
        arrived_at=at,
        card=Card("E2000001", "C1000001"),
        customer=person,
        reason=reason,
        tier="gold",
    )


def assert_private(text: str) -> None:
    for secret in (ID_NUMBER, MOBILE, ID_NUMBER[:-4], "13900000001", "C1000001"):
        assert secret not in text, text


def test_greeting_text():
    text = render(visit(), branch_name="Lujiazui", staff=STAFF)
    assert text == "09:41 VIP 张伟 Zhang Wei (GOLD) at door. Client manager: 王芳 Wang Fang."
    zh = render(visit(), branch_name="陆家嘴支行", staff=STAFF, language="zh")
    assert zh == "09:41 贵宾到店：张伟 Zhang Wei（金卡），door。客户经理：王芳 Wang Fang。"
    assert_private(text + zh)


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize(
    ("kind", "reason", "words"),
    [
        (VisitKind.REJECTED, RejectReason.LOST, ("CARD ALERT: card reported LOST", "卡片警报：已挂失")),
        (VisitKind.REJECTED, RejectReason.REVOKED, ("card REVOKED", "已注销")),
        (
            VisitKind.SUSPECT,
            RejectReason.TID_MISMATCH,
            ("SUSPECT CARD: chip ID mismatch", "可疑卡片：芯片ID不符"),
        ),
    ],
)
def test_alert_text(language, kind, reason, words):
    text = render(visit(kind, reason), branch_name="Lujiazui", staff=STAFF, language=language)
    assert words[language == "zh"] in text
    assert ("ID *1234" if language == "en" else "证件尾号1234") in text
    assert ("Do not greet" if language == "en" else "请勿问候") in text
    assert_private(text)


def test_numbers_that_slip_into_other_fields_are_masked_anyway():
    text = render(visit(name=f"Ada {MOBILE} {ID_NUMBER}"), branch_name="B", staff=STAFF)
    assert_private(text)
    assert "138****5678" in text and "**************1234" in text
    assert mask_numbers("call +8613812345678 now") == "call +86*******5678 now"
