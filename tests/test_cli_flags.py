"""One flag, one kind of thing: `--grid` is a grid file (run, rank), `--grid-name` a grid's name
(report, runs, reproduce); the old `--grid NAME` of the latter still works, with a warning."""

import argparse

import pytest

from tlbench.cli_parser import build_parser


def subcommands(parser: argparse.ArgumentParser) -> dict:
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def flags_with_two_meanings(parser: argparse.ArgumentParser) -> dict:
    """{flag: {metavar: [commands]}} for each flag whose value is a different kind of thing (its
    metavar: GRID.toml, NAME, DIR, ...) in different commands; deprecated spellings left out."""
    kinds: dict = {}
    for name, command in subcommands(parser).items():
        for action in command._actions:
            if (action.help or "").startswith("deprecated"):
                continue
            for flag in action.option_strings:
                kinds.setdefault(flag, {}).setdefault(str(action.metavar), []).append(name)
    return {flag: found for flag, found in kinds.items() if len(found) > 1}


def test_no_flag_means_two_kinds_of_thing():
    assert flags_with_two_meanings(build_parser()) == {}


def test_the_check_finds_a_flag_with_two_meanings():
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers()
    commands.add_parser("run").add_argument("--grid", metavar="GRID.toml")
    commands.add_parser("report").add_argument("--grid", metavar="NAME")
    assert flags_with_two_meanings(parser) == {"--grid": {"GRID.toml": ["run"], "NAME": ["report"]}}


@pytest.fixture
def results(tmp_path):
    (tmp_path / "mine" / "records").mkdir(parents=True)
    (tmp_path / "other" / "records").mkdir(parents=True)
    return tmp_path


@pytest.mark.parametrize("command", ["report", "runs"])
def test_grid_name_picks_a_grid_by_name(cli, results, command):
    code, out, err = cli(command, "--results", results, "--grid-name", "mien")
    assert code == 2 and "Unknown grid 'mien'" in err and "deprecated" not in err


@pytest.mark.parametrize("command", ["report", "runs", "reproduce"])
def test_the_old_grid_spelling_still_works_with_one_warning(cli, results, command):
    code, out, err = cli(command, "--results", results, "--grid", "mien")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 2
    assert lines[0] == (f"warning: `tlbench {command} --grid NAME` is deprecated and will be removed: use "
                        "--grid-name mien (--grid names a grid file, in `tlbench run` and `tlbench rank`).")
    assert "Unknown grid 'mien'" in lines[1]


def test_the_old_and_new_spelling_naming_two_grids_is_a_usage_error(cli, results):
    code, out, err = cli("runs", "--results", results, "--grid", "mine", "--grid-name", "other")
    assert code == 2 and err.strip() == ("error: --grid 'mine' and --grid-name 'other' name two grids; "
                                         "give --grid-name only.")


@pytest.mark.parametrize("command", ["run", "rank"])
def test_run_and_rank_take_a_grid_file_not_a_name(cli, command, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli(command, "--grid-name", "mine")
    assert stopped.value.code == 2 and "unrecognized arguments: --grid-name" in capsys.readouterr().err
