"""The command line speaks the language ``LANG`` names, Chinese when it names none (``C``, unset), as
real ``vipsense`` processes show it: its own messages, its tables and dates, and argparse's words
("usage:", "options", "the following arguments are required") from the same catalogue.  What a
machine reads (``--json``, exit codes) is the same in both languages."""

from __future__ import annotations

import ast
import datetime as dt
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vipsense import i18n
from vipsense.cli import parsing

from .conftest import REPO

EN = {"LANG": "en_US.UTF-8"}
ZH = {"LANG": "zh_CN.UTF-8"}
CARD = "E20000000000000000000001"  # Ada Wong's (C1) in conftest's seed


def vipsense(*args: str, env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """``vipsense ARGS`` as a fresh process with only ``env``'s locale variables set."""
    environ = {k: v for k, v in os.environ.items() if k not in ("LANG", "LANGUAGE", "LC_ALL", "LC_MESSAGES")}
    environ.update(env, COLUMNS="120")  # argparse wraps its help to the terminal's width
    environ.pop("VIPSENSE_STAFF", None)
    return subprocess.run(
        [sys.executable, "-m", "vipsense.cli", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- --help ----------------------------------------------------------------------------------------


def test_the_top_level_help_is_chinese_with_argparses_own_words():
    done = vipsense("--help", env=ZH)
    assert done.returncode == 0
    out = done.stdout
    assert out.startswith("用法：vipsense [-h] [--version] [-v] COMMAND ...\n")
    assert "在网点门口通过 RFID 贵宾卡识别贵宾客户。" in out
    assert "位置参数:" in out and "\n选项:\n" in out
    assert "  -h, --help     显示此帮助信息并退出\n" in out
    assert "  --version      显示 vipsense 的版本并退出\n" in out
    assert "    cards        贵宾卡全流程：发卡、挂失、注销、补卡、导入、导出\n" in out
    assert "usage" not in out and "options" not in out and "show this help" not in out


def test_the_top_level_help_is_english_under_an_english_lang():
    done = vipsense("--help", env=EN)
    assert done.returncode == 0
    assert done.stdout.startswith("usage: vipsense [-h] [--version] [-v] COMMAND ...\n")
    assert "\noptions:\n  -h, --help     show this help message and exit\n" in done.stdout
    assert (
        "    cards        the card lifecycle: issue, lost, revoke, reissue, import, export\n" in done.stdout
    )


def test_a_subcommands_help_is_chinese_options_and_all():
    out = vipsense("cards", "issue", "--help", env=ZH).stdout
    assert out.startswith("用法：vipsense cards issue [-h] [--as STAFF_ID]")
    assert "  profile               网点配置文件（YAML）\n" in out
    assert "  --as STAFF_ID         操作的员工（默认：$VIPSENSE_STAFF）\n" in out
    assert "  --epc EPC             新卡的 EPC（十六进制）\n" in out
    assert "                        卡的 EPC" not in out  # issue has no EPC positional


def test_a_nested_subcommands_help_is_chinese():
    done = vipsense("visits", "list", "--help", env=ZH)
    assert done.returncode == 0
    out = done.stdout
    assert out.startswith("用法：vipsense visits list [-h]")
    helps = dict(
        re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in out.splitlines() if line.startswith("  --")
    )
    helps = {option.split()[0]: text for option, text in helps.items()}
    assert helps["--today"] == "今天（默认）"
    assert helps["--date"] == "其他日期，YYYY-MM-DD"
    assert helps["--json"] == "机器可读的 JSON（英文键名）"


# -- errors and exit codes -------------------------------------------------------------------------


def test_argparses_error_is_chinese_and_keeps_its_exit_code():
    zh, en = vipsense("cards", env=ZH), vipsense("cards", env=EN)
    assert (zh.returncode, en.returncode) == (2, 2)
    assert zh.stderr == "用法：vipsense cards [-h] ACTION ...\nvipsense cards：错误：缺少必需的参数：ACTION\n"
    assert en.stderr == (
        "usage: vipsense cards [-h] ACTION ...\n"
        "vipsense cards: error: the following arguments are required: ACTION\n"
    )


def test_an_invalid_choice_is_refused_in_chinese():
    done = vipsense("cards", "frobnicate", env=ZH)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].startswith(
        "vipsense cards：错误：参数 ACTION：无效的选择：'frobnicate'（可选："
    )


def test_our_own_error_in_both_languages_with_the_same_exit_code(write_profile, tmp_path):
    profile = str(write_profile())
    args = ("cards", "show", profile, CARD, "--data-dir", str(tmp_path / "d"), "--as", "nobody")
    zh, en = vipsense(*args, env=ZH), vipsense(*args, env=EN)
    assert (zh.returncode, en.returncode) == (1, 1)
    assert zh.stdout == en.stdout == ""
    assert en.stderr.startswith("vipsense: unknown staff id 'nobody': not in the staff: of branch.yaml")
    assert zh.stderr.startswith("vipsense: 未知员工编号 'nobody'：不在 branch.yaml 的 staff: 中")


# -- tables and dates ------------------------------------------------------------------------------


def test_a_table_heading_and_a_date_in_chinese(write_profile, tmp_path):
    """The profile says ``locale: en``: a command still follows LANG (only a running branch takes
    branch.locale), so the list below is Chinese."""
    profile = str(write_profile())
    common = (profile, "--data-dir", str(tmp_path / "d"))
    lost = vipsense("cards", "lost", *common, CARD, "--as", "cm1", "--reason", "丢在出租车上", env=ZH)
    assert (lost.returncode, lost.stderr) == (0, "")
    assert lost.stdout == f"客户 C1 的卡 {CARD} 现为已挂失\n"

    listing = vipsense("cards", "list", *common, "--as", "boss", env=ZH)
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["EPC", "客户", "状态", "等级", "有效期", "网点", "最近出现"]
    assert lines[1].split()[:3] == [CARD, "C1", "已挂失"]
    assert lines[-1] == "2 张卡"

    show = vipsense("cards", "show", *common, CARD, "--as", "boss", env=ZH)
    assert show.returncode == 0
    today = dt.date.today()  # the branch's zone: the profile names none, so this machine's
    day = f"{today.year}年{today.month}月{today.day}日"
    out = show.stdout.splitlines()
    assert out[:3] == [f"卡 {CARD}", "  客户:        C1", "  状态:        已挂失"]
    assert out[-2] == "历史："
    assert out[-1].startswith(f"  {day} ") and out[-1].endswith("  已挂失，操作人 cm1: 丢在出租车上")


def test_machine_readable_output_is_the_same_in_both_languages(write_profile, tmp_path):
    profile = str(write_profile())
    args = ("visits", "list", profile, "--data-dir", str(tmp_path / "d"), "--as", "boss", "--json")
    zh, en = vipsense(*args, env=ZH), vipsense(*args, env=EN)
    assert (zh.returncode, en.returncode) == (0, 0)
    assert json.loads(zh.stdout) == json.loads(en.stdout)
    assert set(json.loads(zh.stdout)) == {"date", "branch", "visits", "staff"}


# -- which language ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "chinese"),
    [
        ({"LANG": "C"}, True),  # no language named: the default, Chinese
        ({"LANG": "C.UTF-8"}, True),
        ({}, True),
        ({"LANG": "en_US.UTF-8"}, False),
        ({"LANG": "zh_CN.UTF-8", "LANGUAGE": "en"}, False),  # LANGUAGE first, as gettext
        ({"LANG": "en_US.UTF-8", "LC_ALL": "zh_CN.UTF-8"}, True),  # LC_ALL before LANG
        ({"LANG": "zh_CN.UTF-8", "LC_ALL": "en_GB.UTF-8"}, False),
        ({"LC_ALL": "en_US.UTF-8", "LANGUAGE": "zh_CN"}, True),  # LANGUAGE before LC_ALL
    ],
)
def test_the_language_follows_the_environment_as_gettext_chooses(env, chinese):
    done = vipsense("cards", env=env)
    assert done.returncode == 2
    assert done.stderr.startswith("用法：" if chinese else "usage: ")


# -- argparse's messages ---------------------------------------------------------------------------

#: what argparse says only to the programmer who built a parser wrongly, never to a user
PROGRAMMER_ERRORS = {
    ".__call__() not defined",
    "cannot merge actions - two groups are named %r",
    "'required' is an invalid argument for positionals",
    "invalid option string %(option)r: must start with a character %(prefix_chars)r",
    "dest= is required for options like %r",
    "invalid conflict_resolution value: %r",
    "conflicting option string: %s",
}


def argparse_source_messages() -> set[str]:
    """Every literal argparse passes to ``_`` or ``ngettext`` (the singular), from its source."""
    import argparse

    found = set()
    for node in ast.walk(ast.parse(inspect.getsource(argparse))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("_", "ngettext")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


def test_every_message_argparse_shows_a_user_is_in_our_list():
    assert argparse_source_messages() - PROGRAMMER_ERRORS == set(parsing.argparse_msgids())


def test_every_message_of_argparse_has_a_chinese_translation():
    english = parsing.argparse_msgids()
    with i18n.using("zh_CN"):
        chinese = parsing.argparse_messages()
    assert [e for e, z in zip(english, chinese, strict=True) if e == z] == []


def test_an_english_run_leaves_argparse_english_in_process(capsys):
    from vipsense.cli import main

    with pytest.raises(SystemExit) as exit:
        main(["cards"])
    assert exit.value.code == 2
    assert "the following arguments are required: ACTION" in capsys.readouterr().err
