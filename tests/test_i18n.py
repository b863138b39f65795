"""The language in force, how it is chosen, the staff's formats, and a plugin's own catalogue."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo

from vipsense import i18n


@pytest.mark.parametrize(
    ("name", "locale"),
    [
        ("zh_CN", "zh_CN"),
        ("zh-CN", "zh_CN"),
        ("zh_CN.UTF-8", "zh_CN"),
        ("zh_Hans", "zh_CN"),
        ("zh", "zh_CN"),
        ("en", "en"),
        ("en_US.UTF-8", "en"),
        ("en-GB", "en"),
        ("zh_TW", None),  # Traditional Chinese is not Simplified
        ("fr_FR.UTF-8", None),
        ("", None),
    ],
)
def test_locale_names_are_read_as_people_write_them(name, locale):
    assert i18n.normalise(name) == locale


@pytest.mark.parametrize(
    ("environ", "locale"),
    [
        ({}, "zh_CN"),
        ({"LANG": "C.UTF-8"}, "zh_CN"),
        ({"LANG": "POSIX"}, "zh_CN"),
        ({"LANG": "en_US.UTF-8"}, "en"),
        ({"LANG": "zh_CN.UTF-8", "LC_MESSAGES": "en_GB.UTF-8"}, "en"),
        ({"LANG": "en_US.UTF-8", "LC_ALL": "zh_CN.UTF-8"}, "zh_CN"),
        ({"LANG": "zh_CN.UTF-8", "LANGUAGE": "fr:en"}, "en"),
        ({"LANG": "fr_FR.UTF-8"}, "zh_CN"),
    ],
)
def test_the_command_line_follows_lang_as_gettext_does(environ, locale):
    assert i18n.from_environment(environ) == locale


def test_a_request_language_stays_in_its_own_thread():
    i18n.set_default("zh_CN")
    seen = {}
    inside = threading.Event()
    leave = threading.Event()

    def request():
        with i18n.using("en"):
            inside.set()
            leave.wait(5)
            seen["request"] = i18n.current()

    t = threading.Thread(target=request)
    t.start()
    inside.wait(5)
    seen["other"] = i18n.current()
    leave.set()
    t.join(5)
    assert seen == {"request": "en", "other": "zh_CN"}


def test_an_unknown_locale_is_refused_by_name():
    with pytest.raises(i18n.UnknownLocale, match=r"'fr'.*zh_CN, en"):
        i18n.set_default("fr")


def test_dates_times_and_numbers_in_each_language():
    ts = 1796610960.0  # 2026-12-07 10:36 in Shanghai (UTC+8)
    assert i18n.format_datetime(ts, "Asia/Shanghai", "zh_CN") == "2026年12月7日 10:36"
    assert i18n.format_datetime(ts, "Asia/Shanghai", "en") == "Dec 7, 2026 10:36"
    assert i18n.format_time(ts, "UTC", "en") == "02:36"
    assert i18n.format_date(ts, "Asia/Shanghai", "zh_CN") == "2026年12月7日"
    assert i18n.format_number(1234567, "zh_CN") == "1,234,567"


def test_names_sort_by_pinyin():
    names = ["王伟", "张三", "李娜", "陈静", "Alice", "安然"]
    assert sorted(names, key=i18n.name_key) == ["Alice", "安然", "陈静", "李娜", "王伟", "张三"]


def _catalogue(tmp_path: Path, domain: str, messages: dict[str, str]) -> Path:
    folder = tmp_path / domain / "zh_CN" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    catalog = Catalog(locale="zh_CN", domain=domain)
    for message, translation in messages.items():
        catalog.add(message, translation)
    with (folder / f"{domain}.mo").open("wb") as f:
        write_mo(f, catalog)
    return tmp_path / domain


def test_a_plugin_catalogue_falls_back_to_the_core_and_then_to_the_text(tmp_path):
    core = i18n.Catalogue(_catalogue(tmp_path, "core", {"Reader": "阅读器"}), "core")
    vendor = i18n.Catalogue(_catalogue(tmp_path, "acme", {"Antenna gain": "天线增益"}), "acme", fallback=core)
    with i18n.using("zh_CN"):
        assert [vendor.gettext(m) for m in ("Antenna gain", "Reader", "Hello")] == [
            "天线增益",
            "阅读器",
            "Hello",
        ]
    with i18n.using("en"):
        assert vendor.gettext("Antenna gain") == "Antenna gain"


def test_a_lazy_message_is_translated_each_time_it_is_shown(tmp_path):
    vendor = i18n.Catalogue(_catalogue(tmp_path, "acme", {"Antenna gain": "天线增益"}), "acme")
    label = vendor.lazy_gettext("Antenna gain")
    with i18n.using("zh_CN"):
        assert str(label) == "天线增益"
    with i18n.using("en"):
        assert str(label) == "Antenna gain"
