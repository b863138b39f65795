"""The core's own messages in both languages: device states and their reasons on the status page,
card lifecycle refusals, verdict labels, the full-disk notice, plugin load failures, permissions, and
a running branch that speaks its profile's language.  What is kept (logs, files, the audit log) stays
English whoever reads it later."""

from __future__ import annotations

import errno
import io
import logging

import pytest

from vipsense import i18n
from vipsense.devices import StoreRunner
from vipsense.i18n import lazy_gettext
from vipsense.identity.lifecycle import TransitionError, check
from vipsense.model import (
    Card,
    CardAction,
    CardStatus,
    DeliveryState,
    RejectReason,
    Role,
    VisitKind,
    tier_label,
)
from vipsense.output import Output
from vipsense.permissions import DOES, Permission, does
from vipsense.pluginhost import PluginHost, PluginState, plugin_state_label
from vipsense.states import DeviceState, label
from vipsense.status import BranchStatus, DeviceStatus, Storage
from vipsense.storage.audit import AuditUnreadable, _unreadable, verify_file
from vipsense.texts import Text, joined, translated

from .conftest import BASE_PROFILE, wait_for

EPC = "E20000000000000000000001"


# -- states, labels, verdicts ------------------------------------------------------------------------


def test_device_states_read_in_each_language_and_stay_english_as_values():
    with i18n.using("zh_CN"):
        assert [s.label for s in (DeviceState.READY, DeviceState.DEGRADED, DeviceState.STUCK)] == [
            "就绪",
            "降级",
            "无响应",
        ]
        assert label("disconnected") == "已断开"
        assert label("unknown") == "unknown"  # a snapshot's word that is no state: as it is
    with i18n.using("en"):
        assert DeviceState.DEGRADED.label == "degraded"
    assert DeviceState.DEGRADED.value == "degraded" and f"{DeviceState.DEGRADED}" == "degraded"


def test_verdicts_reasons_roles_and_tiers_have_labels_in_each_language():
    things = (
        VisitKind.GREETED,
        VisitKind.SUSPECT,
        VisitKind.SUPPRESSED,
        VisitKind.UNRESOLVED,
        RejectReason.LOST,
        RejectReason.TOO_FAST,
        CardStatus.LOST,
        CardAction.RESTORED,
        DeliveryState.ACKNOWLEDGED,
        Role.LOBBY_MANAGER,
    )
    with i18n.using("zh_CN"):
        assert [t.label for t in things] == [
            "已接待",
            "可疑",
            "重复进入，未通知",
            "待识别",
            "卡已挂失",
            "刚在其他网点出现过：可能被复制",
            "已挂失",
            "已找回并恢复",
            "已确认",
            "大堂经理",
        ]
        assert [tier_label(t) for t in ("gold", "Platinum", "black", None)] == ["金卡", "白金卡", "black", ""]
    with i18n.using("en"):
        assert [t.label for t in things] == [
            "greeted",
            "suspect",
            "re-entry, not notified",
            "unresolved",
            "card reported lost",
            "seen at another branch too recently: possibly cloned",
            "reported lost",
            "found and restored",
            "acknowledged",
            "lobby manager",
        ]
    # the values files and the API keep
    assert (VisitKind("suppressed"), CardStatus("lost").value) == (VisitKind.SUPPRESSED, "lost")


def test_permissions_say_what_they_allow_in_each_language():
    with i18n.using("zh_CN"):
        assert does(Permission.CARD_ISSUE) == "发卡"
        assert f"无权{DOES[Permission.CARD_REVOKE]}" == "无权注销贵宾卡"
    with i18n.using("en"):
        assert f"may not {DOES[Permission.CARD_REVOKE]}" == "may not revoke cards"


# -- the lifecycle's refusals --------------------------------------------------------------------------


def _refusal(card: Card, action: CardAction) -> str:
    with pytest.raises(TransitionError) as raised:
        check(card, action)
    return str(raised.value)


@pytest.mark.parametrize(
    ("status", "action", "zh", "en"),
    [
        (CardStatus.LOST, CardAction.LOST, f"卡 {EPC} 已挂失", f"card {EPC} is already lost"),
        (
            CardStatus.ACTIVE,
            CardAction.RESTORED,
            f"卡 {EPC} 的状态为有效，并未挂失：只有已挂失的卡才能解除挂失",
            f"card {EPC} is active, not lost: only a lost card can be found again",
        ),
        (
            CardStatus.REVOKED,
            CardAction.REVOKED,
            f"卡 {EPC} 已注销，注销的卡不能恢复（请改为发新卡）",
            f"card {EPC} is revoked, and a revoked card stays revoked (issue a new card instead)",
        ),
    ],
)
def test_a_lifecycle_refusal_is_in_the_language_in_force(status, action, zh, en):
    card = Card(EPC, "C1", status=status)
    with i18n.using("zh_CN"):
        assert _refusal(card, action) == zh
    with i18n.using("en"):
        assert _refusal(card, action) == en


# -- reasons kept for later: English for the log, the viewer's language on the status page ------------


def test_a_kept_reason_is_english_for_logs_and_translated_when_shown(caplog):
    i18n.set_default("zh_CN")  # a Chinese branch: the log still reads English
    reason = Text(lazy_gettext("cannot open: {reason}"), reason="OSError: no route to host")
    logging.getLogger("vipsense.test").warning("store local unavailable: %s", reason)
    assert caplog.messages[-1] == "store local unavailable: cannot open: OSError: no route to host"
    assert reason == "cannot open: OSError: no route to host"
    assert translated(reason) == "无法打开：OSError: no route to host"
    with i18n.using("en"):
        assert translated(reason) == "cannot open: OSError: no route to host"
    assert translated("a plugin's own words") == "a plugin's own words"
    both = joined([Text(lazy_gettext("replay complete")), "as written"], lazy_gettext("; "))
    assert (str(both), translated(both)) == ("replay complete; as written", "回放完毕；as written")


def test_the_status_snapshot_shows_reasons_in_the_viewers_language():
    status = BranchStatus("sh-01", "Shanghai")
    dev = status.device("local", "store", "sqlite")
    dev.set(
        DeviceState.STUCK,
        Text(
            lazy_gettext("a call has not returned after {ms}; look-ups skip this store until it does"),
            ms="500 ms",
        ),
    )
    dev.stats.fail(Text(lazy_gettext("timed out after {ms}"), ms="500 ms"))
    with i18n.using("zh_CN"):
        zh = status.snapshot()["devices"]["local"]
    with i18n.using("en"):
        en = status.snapshot()["devices"]["local"]
    assert (zh["state"], zh["reason"], zh["last_error"]) == (
        "stuck",
        "有调用 500 ms 后仍未返回；返回之前查询将跳过此身份库",
        "500 ms 后超时",
    )
    assert (en["reason"], en["last_error"]) == (
        "a call has not returned after 500 ms; look-ups skip this store until it does",
        "timed out after 500 ms",
    )


class _NeverOpens:
    records_sightings = False

    def open(self) -> None:
        raise ConnectionRefusedError("connection refused")

    def close(self) -> None:
        pass

    def degraded(self) -> str:
        return ""


def test_a_store_that_cannot_open_says_so_in_each_language():
    dev = DeviceStatus("store", "ldap")
    runner = StoreRunner("central", _NeverOpens(), 0.5, dev, grace=0.0)  # type: ignore[arg-type]
    runner.open()
    try:
        assert wait_for(lambda: dev.state is DeviceState.UNAVAILABLE)
    finally:
        runner.close()
    assert dev.reason == "cannot open: ConnectionRefusedError: connection refused"
    with i18n.using("zh_CN"):
        assert dev.snapshot()["reason"] == "无法打开：ConnectionRefusedError: connection refused"
        assert dev.snapshot()["last_error"] == "打开：ConnectionRefusedError: connection refused"


def test_the_full_disk_notice_in_each_language(tmp_path):
    storage = Storage()
    full = OSError(errno.ENOSPC, "No space left on device")
    storage.failed("outbox", tmp_path / "outbox.sqlite3", full)
    storage.failed("visit log", tmp_path / "visits.sqlite3", full)
    with i18n.using("zh_CN"):
        assert storage.problem() == f"{tmp_path} 磁盘已满：通知发件箱、到访记录无法写入"
        assert storage.snapshot()["files"][0]["cause"] == "disk full"  # the API's value stays English
    with i18n.using("en"):
        assert storage.problem() == f"disk full at {tmp_path}: outbox, visit log cannot be written"


def test_a_plugin_load_failure_is_shown_in_each_language_and_logged_in_english(caplog):
    class Clash:
        @staticmethod
        def vipsense_register_commands(register):
            register("run", lambda parser: None)

    host = PluginHost()
    host.add(Clash, "clash")
    info = host.plugins[-1]
    assert info.state is PluginState.FAILED
    assert info.error == "PluginLoadError: command 'run' is a built-in vipsense command"
    assert (
        "plugin clash failed to load: PluginLoadError: command 'run' is a built-in vipsense command"
        in caplog.text
    )
    status = BranchStatus("sh-01", "Shanghai")
    status.host = host
    with i18n.using("zh_CN"):
        assert (
            status.snapshot()["plugins"]["clash"]["error"]
            == "PluginLoadError: 命令 'run' 是 vipsense 的内置命令"
        )
        assert plugin_state_label(info.state) == "加载失败"
    with i18n.using("en"):
        assert plugin_state_label("failed") == "failed to load"


def test_an_audit_check_that_cannot_read_the_file_says_why_in_each_language(tmp_path):
    path = tmp_path / "audit.sqlite3"
    path.write_bytes(b"this is not a database, just forty bytes of text" * 40)
    with pytest.raises(AuditUnreadable) as raised:
        verify_file(path, ())
    assert "file is not a database" in str(raised.value)
    result = _unreadable(raised.value)  # what the /audit page's chain check publishes
    assert result.problem == f"the file cannot be read: {raised.value}"
    with i18n.using("zh_CN"):
        assert translated(result.problem) == f"无法读取该文件：{raised.value}"


# -- times as the staff read them, in the branch's zone -------------------------------------------------


def test_times_are_formatted_in_the_branch_zone(write_profile, host):
    from vipsense.config.profile import load_profile

    text = BASE_PROFILE.replace("locale: en}", "locale: en, timezone: Asia/Urumqi}")
    profile = load_profile(write_profile(text), host)
    ts = 1796610960.0  # 2026-12-07 02:36 UTC: 08:36 in Urumqi (UTC+6), whatever this machine's zone
    assert i18n.format_datetime(ts, profile.tz, "zh_CN") == "2026年12月7日 08:36"
    assert i18n.format_datetime(ts, profile.tz, "en") == "Dec 7, 2026 08:36"


# -- a running branch speaks its profile's language ----------------------------------------------------


def _visited_branch(running_branch, locale: str | None) -> str:
    """Start a branch whose door sees Ada Wong's gold card; what its console printed."""
    text = BASE_PROFILE.replace("visitors: []", f"visitors: [{{card: {EPC}, at: 0s, stay: 5s}}]")
    text = text.replace("locale: en}", "}" if locale is None else f"locale: {locale}}}")
    screen = io.StringIO()
    branch = running_branch(text, output=Output(screen, live=False))
    assert wait_for(lambda: branch.status.counters["greeted"] == 1 and "Ada Wong" in screen.getvalue())
    return screen.getvalue()


def test_a_chinese_branch_tells_its_staff_in_chinese(running_branch):
    shown = _visited_branch(running_branch, "zh_CN")
    assert i18n.current() == "zh_CN"
    assert "贵宾到店" in shown and "金卡" in shown and "VIP ARRIVAL" not in shown


def test_an_english_branch_tells_its_staff_in_english(running_branch):
    i18n.set_default("zh_CN")  # a machine whose LANG is Chinese
    shown = _visited_branch(running_branch, "en")
    assert i18n.current() == "en"
    assert "VIP ARRIVAL" in shown and "贵宾到店" not in shown


@pytest.mark.parametrize("process", ["zh_CN", "en"])
def test_a_branch_without_a_locale_keeps_the_process_language(running_branch, process):
    i18n.set_default(process)
    shown = _visited_branch(running_branch, None)
    assert i18n.current() == process
    assert ("贵宾到店" in shown, "VIP ARRIVAL" in shown) == (process == "zh_CN", process == "en")


def test_a_refused_signature_answers_in_english_and_reads_in_the_screens_language():
    from vipsense.signing import BadSignature, verify
    from vipsense.texts import error_text

    i18n.set_default("zh_CN")
    with pytest.raises(BadSignature) as raised:
        verify(b"k" * 32, {}, b"{}")
    assert str(raised.value) == "unsigned message (no X-Vipsense-Timestamp / X-Vipsense-Signature header)"
    assert error_text(raised.value) == "消息未签名（没有 X-Vipsense-Timestamp / X-Vipsense-Signature 头）"
    assert error_text(ValueError("plain")) == "plain"
