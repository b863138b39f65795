"""Profile errors in the language in force, and tiers named in each language.

The same broken profiles give Chinese messages under ``zh_CN`` and English ones under ``en``; in
both, the file:line, the key path and the name a did-you-mean suggests stay as written, since they
are what a person looks up and types.  Expected lines are exact: a wrong or missing translation, or a
field lost in one, fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vipsense import i18n
from vipsense.cli import main
from vipsense.config.errors import ConfigError, ConfigWarning, ProfileError
from vipsense.config.profile import Profile, load_profile
from vipsense.pluginhost import PluginHost

FILE = "branch.yaml"

#: a small valid branch; each case changes one thing
BASE = """\
branch:
  id: t1
  name: Test Branch
readers:
  - id: door
    type: simulated
    visitors: []
stores:
  - id: local
    type: sqlite
notifiers:
  - id: screen
    type: console
staff:
  - {id: boss, name: The Boss, role: branch_manager}
routing:
  - {event: rejected, reasons: [lost, revoked], to: branch_manager, via: [screen]}
  - {event: suspect, to: branch_manager, via: [screen]}
"""

BOMB = (
    'a: &a ["x","x","x","x","x","x","x","x","x","x"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in tmp_path, so messages name files relative to it, with no secrets file anywhere."""
    monkeypatch.chdir(tmp_path)
    for var in ("VIPSENSE_SECRETS", "VIPSENSE_DISABLE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("VIPSENSE_DATA_DIR", str(tmp_path / "data"))


def with_branch_key(line: str) -> str:
    """:data:`BASE` with one more ``branch:`` key (on line 4)."""
    return BASE.replace("  name: Test Branch\n", f"  name: Test Branch\n  {line}\n")


def errors_in(text: str, host: PluginHost, locale: str) -> list[str]:
    """The error lines of a profile that must fail to load, read in ``locale``."""
    Path(FILE).write_text(text, encoding="utf-8")
    with i18n.using(locale), pytest.raises(ProfileError) as excinfo:
        load_profile(FILE, host)
    return [str(e) for e in excinfo.value.errors]


KNOWN_PRESENCE = "min_reads, window, min_rssi, reentry_suppress, depart_after"

#: (id, profile text, English lines, Chinese lines)
CASES = [
    (
        "unknown-key-did-you-mean",
        BASE + "presence: {min_read: 2}\n",
        [
            f"branch.yaml:19: presence.min_read: unknown key; did you mean 'min_reads'? "
            f"(known keys: {KNOWN_PRESENCE})"
        ],
        [
            "branch.yaml:19: presence.min_read: 未知的键；是否应为 'min_reads'？"
            f"（可用的键：{KNOWN_PRESENCE}）"
        ],
    ),
    (
        "wrong-type",
        BASE + "presence: {min_reads: many}\n",
        ["branch.yaml:19: presence.min_reads: expected an integer, got 'many'"],
        ["branch.yaml:19: presence.min_reads: 应为整数，实际为 'many'"],
    ),
    (
        "wrong-duration",
        BASE + "notification_ttl: soon\n",
        ["branch.yaml:19: notification_ttl: expected a duration such as 500ms, 2s or 10m, got 'soon'"],
        ["branch.yaml:19: notification_ttl: 应为时长（如 500ms、2s 或 10m），实际为 'soon'"],
    ),
    (
        "bad-time-zone",
        with_branch_key("timezone: asia/shanghai"),
        [
            "branch.yaml:4: branch.timezone: unknown time zone 'asia/shanghai'; did you mean "
            "'Asia/Shanghai'? (an IANA name such as Asia/Shanghai or UTC)"
        ],
        [
            "branch.yaml:4: branch.timezone: 未知的时区 'asia/shanghai'；是否应为 'Asia/Shanghai'？"
            "（应为 IANA 时区名，如 Asia/Shanghai 或 UTC）"
        ],
    ),
    (
        "bad-locale",
        with_branch_key("locale: zh-CN"),
        ["branch.yaml:4: branch.locale: unknown language 'zh-CN'; did you mean 'zh_CN'? (one of zh_CN, en)"],
        ["branch.yaml:4: branch.locale: 未知的语言 'zh-CN'；是否应为 'zh_CN'？（可选：zh_CN, en）"],
    ),
    (
        "yaml-syntax-error",
        BASE.replace("name: Test Branch", "name: Lujiazui: Shanghai"),
        [
            "branch.yaml:3:17: YAML syntax error: mapping values are not allowed here; a value that "
            "contains ': ' must be quoted, e.g. name: 'Lujiazui: Shanghai'"
        ],
        [
            "branch.yaml:3:17: YAML 语法错误：此处不允许出现映射值；含有 ': ' 的值必须加引号，"
            "例如 name: 'Lujiazui: Shanghai'"
        ],
    ),
    (
        "yaml-bomb",
        BOMB + BASE,
        [
            "branch.yaml:4:29: aliases (*name) expand to more than 10,000 values, the most a profile "
            "may have; write the values out instead"
        ],
        ["branch.yaml:4:29: 别名（*name）展开后超过 10,000 个值，即配置文件允许的上限；请直接写出这些值"],
    ),
    (
        "missing-secret",
        BASE + "privacy: {audit_key: !secret audit_key}\n",
        [
            "branch.yaml:19: privacy.audit_key: secret 'audit_key' not found: no secrets file at "
            "{dir}/secrets.yaml; create it or set VIPSENSE_SECRETS to its path"
        ],
        [
            "branch.yaml:19: privacy.audit_key: 找不到机密 'audit_key'：{dir}/secrets.yaml 处没有机密文件；"
            "请创建该文件，或将 VIPSENSE_SECRETS 设为其路径"
        ],
    ),
    (
        "bad-tier-names",
        BASE + "tiers:\n  - standard\n  - {code: gold, names: {zh: 金卡, en: ''}}\n",
        [
            "branch.yaml:21: tiers[1].names.zh: unknown language 'zh'; did you mean 'zh_CN'? "
            "(one of zh_CN, en)",
            "branch.yaml:21: tiers[1].names.en: a tier's name may not be empty; write the name, or leave "
            "the language out",
        ],
        [
            "branch.yaml:21: tiers[1].names.zh: 未知的语言 'zh'；是否应为 'zh_CN'？（可选：zh_CN, en）",
            "branch.yaml:21: tiers[1].names.en: 等级名称不能为空；请填写名称，或删去该语言",
        ],
    ),
    (
        "duplicate-tier-code",
        BASE + "tiers: [standard, {code: gold, names: {zh_CN: 金卡}}, gold]\n",
        ["branch.yaml:19: tiers[2]: each tier may be listed once: 'gold' is also tiers[1]"],
        ["branch.yaml:19: tiers[2]: 每个等级只能列出一次：'gold' 与 tiers[1] 重复"],
    ),
    (
        "tier-entry-unknown-key",
        BASE + "tiers: [{code: gold, name: Gold}]\n",
        [
            "branch.yaml:19: tiers[0].name: unknown key; did you mean 'names'? (known keys: code, names)",
        ],
        ["branch.yaml:19: tiers[0].name: 未知的键；是否应为 'names'？（可用的键：code, names）"],
    ),
    (
        "follow-on-errors-folded",
        BASE.replace("notifiers:", "notifers:"),
        [
            "branch.yaml:11: notifers: unknown key; did you mean 'notifiers'? (known keys: {top}); 2 "
            "errors that follow from it are left out (the first at routing[0].via[0], line 17)"
        ],
        [
            "branch.yaml:11: notifers: 未知的键；是否应为 'notifiers'？（可用的键：{top}）；由此引起的 2 个"
            "错误未列出（第一个位于 routing[0].via[0]，第 17 行）"
        ],
    ),
    (
        "alert-rule-missing",
        BASE.replace(
            "  - {event: rejected, reasons: [lost, revoked], to: branch_manager, via: [screen]}\n", ""
        ),
        [
            "branch.yaml:16: routing: lost and revoked cards must alert the branch manager; add a rule such "
            "as {event: rejected, reasons: [lost, revoked], to: branch_manager, via: [NOTIFIER-ID]}"
        ],
        [
            "branch.yaml:16: routing: lost、revoked 卡必须通知网点负责人；请添加规则，例如 "
            "{event: rejected, reasons: [lost, revoked], to: branch_manager, via: [NOTIFIER-ID]}"
        ],
    ),
]

TOP_KEYS = (
    "branch, readers, stores, notifiers, data_dir, tiers, presence, staff, routing, notification_ttl, "
    "privacy, security, sync, web, centre"
)


def _filled(lines: list[str], tmp_path: Path) -> list[str]:
    return [line.replace("{dir}", str(tmp_path)).replace("{top}", TOP_KEYS) for line in lines]


@pytest.mark.parametrize(("text", "english", "chinese"), [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_the_same_error_in_chinese_and_in_english(host, tmp_path, text, english, chinese):
    assert errors_in(text, host, "zh_CN") == _filled(chinese, tmp_path)
    assert errors_in(text, host, "en") == _filled(english, tmp_path)


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("zh-CN", "zh_CN"),
        ("zh_cn", "zh_CN"),
        ("zh-Hans", "zh_CN"),
        ("chinese", "zh_CN"),
        ("Chinese", "zh_CN"),
        ("cn", "zh_CN"),
        ("中文", "zh_CN"),
        ("english", "en"),
        ("en_US", "en"),
        ("EN", "en"),
    ],
)
def test_a_wrong_locale_suggests_the_one_meant(host, written, meant):
    lines = errors_in(with_branch_key(f"locale: {written}"), host, "en")
    assert lines == [
        f"branch.yaml:4: branch.locale: unknown language {written!r}; did you mean {meant!r}? "
        "(one of zh_CN, en)"
    ]


def test_a_locale_like_no_language_suggests_nothing(host):
    lines = errors_in(with_branch_key("locale: fr_FR"), host, "zh_CN")
    assert lines == ["branch.yaml:4: branch.locale: 未知的语言 'fr_FR'（可选：zh_CN, en）"]


def test_messages_are_in_the_language_in_force_when_the_profile_is_read(host):
    """Made while reading: a message read under English stays English when shown under Chinese."""
    Path(FILE).write_text(BASE + "presence: {min_reads: many}\n", encoding="utf-8")
    with i18n.using("en"), pytest.raises(ProfileError) as excinfo:
        load_profile(FILE, host)
    with i18n.using("zh_CN"):
        assert str(excinfo.value.errors[0]).endswith("expected an integer, got 'many'")


def test_a_warning_is_labelled_in_the_language_in_force():
    warning = ConfigWarning(FILE, 5, "readers[0].port", "x")
    with i18n.using("zh_CN"):
        assert str(warning) == "branch.yaml:5: readers[0].port: 警告: x"
    with i18n.using("en"):
        assert str(warning) == "branch.yaml:5: readers[0].port: warning: x"
    assert str(ConfigError(FILE, 5, "readers[0].port", "x")) == "branch.yaml:5: readers[0].port: x"


def test_check_prints_the_errors_in_the_language_of_lang(tmp_path, monkeypatch, capsys):
    """``vipsense check`` reads the profile in the language ``LANG`` names."""
    Path(FILE).write_text(BASE + "presence: {min_reads: many}\n", encoding="utf-8")
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    assert main(["check", FILE]) == 1
    assert (
        "branch.yaml:19: presence.min_reads: 应为整数，实际为 'many'" in capsys.readouterr().err.splitlines()
    )
    monkeypatch.setenv("LANG", "en_US.UTF-8")
    assert main(["check", FILE]) == 1
    assert "branch.yaml:19: presence.min_reads: expected an integer, got 'many'" in capsys.readouterr().err


# -- tiers named in each language --------------------------------------------------------------------


def loaded(text: str, host: PluginHost) -> Profile:
    Path(FILE).write_text(text, encoding="utf-8")
    return load_profile(FILE, host)


NAMED_TIERS = """\
tiers:
  - standard
  - {code: gold, names: {zh_CN: 尊享金卡, en: Premier Gold}}
  - {code: black, names: {zh_CN: 黑金卡}}
  - private
"""


def test_tiers_may_be_codes_or_codes_with_names(host):
    p = loaded(BASE + NAMED_TIERS, host)
    assert p.tiers == ("standard", "gold", "black", "private")
    assert p.tier_names == {"gold": {"zh_CN": "尊享金卡", "en": "Premier Gold"}, "black": {"zh_CN": "黑金卡"}}


@pytest.mark.parametrize(
    ("tier", "chinese", "english"),
    [
        ("gold", "尊享金卡", "Premier Gold"),  # the profile's names
        ("standard", "普通", "Standard"),  # a default tier the profile does not name: the catalogue's
        ("black", "黑金卡", "black"),  # named in Chinese only: English shows the code
        ("private", "private", "private"),  # unknown and unnamed: its code
    ],
)
def test_tier_name_in_each_language(host, tier, chinese, english):
    p = loaded(BASE + NAMED_TIERS, host)
    assert (p.tier_name(tier, "zh_CN"), p.tier_name(tier, "en")) == (chinese, english)


def test_the_default_tiers_are_named_without_help(host):
    p = loaded(BASE, host)
    assert p.tier_names == {}
    assert [p.tier_name(t, "zh_CN") for t in p.tiers] == ["普通", "金卡", "白金卡", "钻石卡"]
    assert [p.tier_name(t, "en") for t in p.tiers] == ["Standard", "Gold", "Platinum", "Diamond"]


def test_tier_name_follows_the_language_in_force(host):
    p = loaded(BASE + NAMED_TIERS, host)
    with i18n.using("zh_CN"):
        assert (p.tier_name("gold"), p.tier_name("diamond")) == ("尊享金卡", "钻石卡")
    with i18n.using("en"):
        assert (p.tier_name("gold"), p.tier_name("diamond")) == ("Premier Gold", "Diamond")


def test_routing_rules_name_tiers_by_their_codes(host):
    """A rule names a tier by its code, whatever the tier is called; a misspelt code is suggested."""
    rule = "  - {event: arrival, tiers: [blak], to: branch_manager, via: [screen]}\n"
    text = BASE + rule + NAMED_TIERS
    assert errors_in(text, host, "zh_CN") == [
        "branch.yaml:19: routing[2].tiers[0]: 未知的等级 'blak'；是否应为 'black'？"
        "（等级：standard, gold, black, private）"
    ]
    good = loaded(BASE + rule.replace("blak", "black") + NAMED_TIERS, host)
    assert good.routing[2].tiers == ("black",)


def test_the_bank_profile_names_its_tiers(host):
    """profiles/bank.yaml shows the names: and sets the bank's language."""
    demo = Path(__file__).resolve().parent.parent / "profiles" / "demo.yaml"
    p = load_profile(demo, host)
    assert p.branch.locale == "zh_CN"
    assert [p.tier_name(t, "zh_CN") for t in p.tiers] == ["普通", "金卡", "白金卡", "钻石卡"]
    assert p.tier_name("platinum", "en") == "Platinum"
