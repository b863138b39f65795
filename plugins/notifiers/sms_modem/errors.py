"""``+CMS ERROR`` and ``+CME ERROR`` codes in words staff understand, and whether a retry can help.

The classification follows ``sms-paging.md`` §5: retry later for CMS 314, 331, 332 and CME 14, 515;
configuration faults (alert ops, don't loop) for CMS 304, 305, 310-313, 316, 330.  Codes 0-127 are RP
causes (TS 24.011 Table E.2) and 128-255 TP-FCS values (TS 23.040 §9.2.3.22); their names come from
those tables.  An unlisted code is reported with its number and counts as worth a retry, as any
unexplained failure does (:class:`vipsense.api.DeliveryFailed`).
"""

from __future__ import annotations

import attrs


@attrs.frozen
class ErrorInfo:
    message: str
    retry: bool


R, NO = True, False

#: TS 27.005 §3.2.5 (``sms-paging.md`` §5), plus RP causes and TP-FCS values.
CMS_ERRORS: dict[int, ErrorInfo] = {
    code: ErrorInfo(message, retry)
    for code, message, retry in (
        # RP causes (TS 24.011 E.2): what the network said about this message
        (1, "unassigned number: the recipient's number does not exist", NO),
        (8, "operator determined barring: the SIM may not send SMS", NO),
        (10, "call barred: SMS sending is barred on this SIM", NO),
        (21, "short message transfer rejected by the network", NO),
        (27, "destination out of service", R),
        (28, "unidentified subscriber", NO),
        (29, "facility rejected by the network", NO),
        (30, "unknown subscriber", NO),
        (38, "network out of order", R),
        (41, "temporary network failure", R),
        (42, "network congestion", R),
        (47, "network resources unavailable", R),
        (50, "SMS not subscribed on this SIM", NO),
        (69, "requested facility not implemented", NO),
        (81, "invalid short message reference", R),
        (95, "invalid message", NO),
        (96, "invalid mandatory information", NO),
        (97, "message type not known to the network", NO),
        (98, "message not compatible with the protocol state", R),
        (99, "information element not known to the network", NO),
        (111, "protocol error", R),
        (127, "interworking error", R),
        # TP-FCS (TS 23.040 §9.2.3.22): what the SMS centre said
        (128, "telematic interworking not supported", NO),
        (143, "unsupported protocol identifier", NO),
        (144, "data coding scheme (alphabet) not supported", NO),
        (145, "message class not supported", NO),
        (159, "data coding scheme error", NO),
        (176, "TPDU not supported", NO),
        (192, "SMS centre busy", R),
        (193, "no SMS centre subscription", NO),
        (194, "SMS centre system failure", R),
        (195, "invalid destination address", NO),
        (196, "destination barred", NO),
        (197, "rejected as a duplicate message", NO),
        (198, "validity period format not supported", NO),
        (199, "validity period not supported", NO),
        (208, "SIM message storage full", NO),
        (210, "error in the modem", R),
        (211, "memory capacity exceeded", NO),
        (212, "SIM toolkit busy", R),
        (255, "unspecified SMS centre error", R),
        # ME and network errors (TS 27.005 §3.2.5)
        (300, "modem failure", R),
        (301, "SMS service of the modem reserved", NO),
        (302, "operation not allowed", NO),
        (303, "operation not supported by the modem", NO),
        (304, "invalid PDU mode parameter (the modem may not send concatenated SMS)", NO),
        (305, "invalid text mode parameter", NO),
        (310, "SIM not inserted", NO),
        (311, "SIM PIN required", NO),
        (312, "PH-SIM PIN required", NO),
        (313, "SIM failure", NO),
        (314, "SIM busy", R),
        (315, "wrong SIM", NO),
        (316, "SIM PUK required: the SIM is blocked", NO),
        (320, "memory failure", NO),
        (321, "invalid memory index", NO),
        (322, "modem memory full", NO),
        (330, "SMS centre address unknown: set 'smsc'", NO),
        (331, "no network service", R),
        (332, "network timeout", R),
        (340, "no +CNMA acknowledgement expected", NO),
        (500, "unknown modem error", R),
    )
}

#: TS 27.007 §9.2 for the commands other than SMS (``sms-paging.md`` §5).  No network service and a
#: network timeout are temporary, as CMS 331 and 332 are.
CME_ERRORS: dict[int, ErrorInfo] = {
    code: ErrorInfo(message, retry)
    for code, message, retry in (
        (0, "modem failure", R),
        (3, "operation not allowed", NO),
        (4, "operation not supported by the modem", NO),
        (5, "PH-SIM PIN required", NO),
        (10, "SIM not inserted", NO),
        (11, "SIM PIN required", NO),
        (12, "SIM PUK required: the SIM is blocked", NO),
        (13, "SIM failure", NO),
        (14, "SIM busy", R),
        (15, "wrong SIM", NO),
        (16, "incorrect SIM PIN", NO),
        (17, "SIM PIN2 required", NO),
        (18, "SIM PUK2 required", NO),
        (20, "modem memory full", NO),
        (30, "no network service", R),
        (31, "network timeout", R),
        (32, "network not allowed: emergency calls only", NO),
        (100, "unknown modem error", R),
        (515, "modem busy", R),
    )
}


def cms_error(code: int) -> ErrorInfo:
    """What ``+CMS ERROR: code`` means."""
    info = CMS_ERRORS.get(code)
    if info is not None:
        return info
    if 0 <= code <= 127:
        return ErrorInfo(f"network refused the message (RP cause {code})", R)
    if 128 <= code <= 255:
        return ErrorInfo(f"SMS centre refused the message (TP failure cause 0x{code:02X})", R)
    return ErrorInfo(f"modem error {code}", R)


def cme_error(code: int) -> ErrorInfo:
    """What ``+CME ERROR: code`` means."""
    return CME_ERRORS.get(code) or ErrorInfo(f"modem error {code}", R)


def describe(kind: str, code: int | None, text: str = "") -> ErrorInfo:
    """``kind`` is ``CMS``, ``CME`` or ``ERROR`` (a bare ERROR: AT+CMEE=1 not in force or refused)."""
    if code is None:
        detail = text or "the modem answered ERROR"
        return ErrorInfo(detail, R)
    info = cms_error(code) if kind == "CMS" else cme_error(code)
    return ErrorInfo(f"{info.message} (+{kind} ERROR {code})", info.retry)
