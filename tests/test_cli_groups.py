"""``rlhf <group> <command>``: a STAGES entry whose module holds COMMANDS dispatches to a sub-command."""

import sys
import types
from dataclasses import dataclass, field

import pytest

from rlhf.cli import main as cli


@dataclass
class _EchoConfig:
    word: str = field(default="hi", metadata={"help": "What to print."})

    def validate(self) -> None:
        if not self.word:
            from rlhf.config.base import ConfigError

            raise ConfigError("--word must not be empty")


@pytest.fixture
def fake_group(monkeypatch):
    group = types.ModuleType("fake_group")
    group.COMMANDS = {"echo": ("fake_group_echo", "Print a word."), "other": ("fake_group_echo", "Also print.")}
    echo = types.ModuleType("fake_group_echo")
    echo.CONFIG_CLASS = _EchoConfig
    echo.run = lambda config: print(f"echo {config.word}")
    monkeypatch.setitem(sys.modules, "fake_group", group)
    monkeypatch.setitem(sys.modules, "fake_group_echo", echo)
    monkeypatch.setitem(cli.STAGES, "grp", ("fake_group", "A group of commands."))


def test_a_group_dispatches_to_its_command_with_its_options(fake_group, capsys):
    assert cli.main(["grp", "echo", "--word", "yes"]) == 0
    assert capsys.readouterr().out.strip() == "echo yes"


def test_a_group_without_a_command_lists_its_commands(fake_group, capsys):
    assert cli.main(["grp"]) == 0
    out = capsys.readouterr().out
    assert "usage: rlhf grp <command>" in out and "echo   Print a word." in out and "other  Also print." in out


def test_an_unknown_command_of_a_group_is_one_line_naming_the_choices(fake_group, capsys):
    assert cli.main(["grp", "ehco"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rlhf grp: error: unknown command 'ehco' for rlhf grp; commands:") and "echo" in err


def test_a_commands_own_errors_name_the_group_and_command(fake_group, capsys):
    assert cli.main(["grp", "echo", "--word", ""]) == 1
    assert "--word must not be empty" in capsys.readouterr().err
