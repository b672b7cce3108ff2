"""Plugin discovery from every source, and what happens when plugins misbehave."""

import os
import sys
import textwrap

import pytest

import tlbench
from tlbench.errors import ConfigError
from tlbench.plugins import load_registry

STRATEGY_PLUGIN = '''
import tlbench

class {cls}(tlbench.Strategy):
    """{doc}"""
    name = "{name}"

    def fit(self, model, train, val, ctx):
        return model

@tlbench.hookimpl
def register_strategies(register):
    register({cls})
'''


def plugin_source(name, cls="Echo", doc="Returns the model untouched."):
    return STRATEGY_PLUGIN.format(name=name, cls=cls, doc=doc)


def test_first_party_plugins_are_found_through_entry_points(registry):
    assert {"linear_probe", "partial_unfreeze", "full_finetune"} <= set(registry.names("strategies"))
    assert {"digits", "mnist5k", "textures", "faces", "folder"} <= set(registry.names("datasets"))
    assert registry.entries["strategies"]["linear_probe"].plugin == "strategies"


def test_plugins_dir_adds_strategies(tmp_path):
    (tmp_path / "echo.py").write_text(plugin_source("echo"))
    registry = load_registry(str(tmp_path))
    assert registry.get("strategies", "echo").summary() == "Returns the model untouched."
    assert "linear_probe" in registry.names("strategies")  # the others still load


def test_plugins_dir_from_environment(tmp_path, monkeypatch):
    (tmp_path / "echo_env.py").write_text(plugin_source("echo_env"))
    monkeypatch.setenv("TLBENCH_PLUGINS_DIR", str(tmp_path))
    assert "echo_env" in load_registry().names("strategies")


def test_third_party_package_entry_point_is_discovered(tmp_path, run_tlbench):
    """A package installed with an entry point in group `tlbench` is found by `tlbench ls`."""
    (tmp_path / "thirdparty_strategy.py").write_text(plugin_source("third_party"))
    dist = tmp_path / "thirdparty_strategy-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-strategy\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[tlbench]\nthirdparty = thirdparty_strategy\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = run_tlbench("ls", "strategies", env=env)
    assert result.returncode == 0, result.stderr
    line = next(l for l in result.stdout.splitlines() if l.startswith("third_party"))
    assert line.endswith("(from thirdparty-strategy 1.0)")  # the package a user installed, not the entry point


def test_two_plugins_registering_one_name_is_an_error_naming_both(tmp_path, cli):
    (tmp_path / "first.py").write_text(plugin_source("twin"))
    (tmp_path / "second.py").write_text(plugin_source("twin"))
    with pytest.raises(ConfigError) as info:
        load_registry(str(tmp_path))
    message = str(info.value)
    assert "twin" in message and "first.py" in message and "second.py" in message
    code, out, err = cli("ls", "strategies", "--plugins-dir", tmp_path)
    assert code == 2 and "first.py" in err and "Traceback" not in err


def test_plugin_clashing_with_first_party_name_is_an_error(tmp_path):
    (tmp_path / "clash.py").write_text(plugin_source("linear_probe"))
    with pytest.raises(ConfigError, match="strategies.*clash.py|clash.py.*strategies") as info:
        load_registry(str(tmp_path))
    # the package, as `tlbench ls` names it: the module name 'strategies' alone says little
    assert f"'strategies' (from tlbench {tlbench.__version__})" in str(info.value)


def test_a_name_no_loaded_plugin_registers_says_how_to_load_its_plugin(tmp_path, write_grid, cli):
    """A loose-file score given to `rank` but not to `run`: the grid's [score.NAME] table names a
    score no loaded plugin registers; the message says how to load it, not only what exists."""
    grid = write_grid('name = "x"\nbackbones = ["test_efficientnet"]\nstrategies = ["linear_probe"]\n'
                      'datasets = ["digits"]\n[score.centroid]\ntemperature = 0.5\n')
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "Unknown score 'centroid'" in err and "--plugins-dir DIR (or TLBENCH_PLUGINS_DIR)" in err
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "centroid.py").write_text("import tlbench\nraise ImportError('no luck')\n")
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path, "--plugins-dir", tmp_path / "plugins")
    assert code == 2 and "Traceback" not in err
    warning, error = err.strip().splitlines()  # loaded but skipped: load it is not the advice
    assert "centroid.py" in warning and "skipped" in warning and "ImportError: no luck" in warning
    assert "Unknown score 'centroid'" in error
    assert "Skipped at loading (the warning above says why): " in error and "centroid.py" in error
    assert error.endswith("if one of them registers it, fix that plugin, else install its package or load "
                          "its file with --plugins-dir DIR (or TLBENCH_PLUGINS_DIR), for every command that reads this grid.")
    grid = write_grid('name = "x"\nbackbones = ["test_efficientnet"]\nstrategies = ["linar_probe"]\n'
                      'datasets = ["digits"]\n')
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path)
    assert code == 2 and "Did you mean: linear_probe" in err and "--plugins-dir" not in err  # a typo


def test_broken_plugin_is_reported_and_skipped(tmp_path, cli):
    (tmp_path / "broken.py").write_text("import this_module_does_not_exist\n")
    (tmp_path / "fine.py").write_text(plugin_source("fine"))
    registry = load_registry(str(tmp_path))
    assert "fine" in registry.names("strategies")
    assert [why for plugin, why in registry.broken if plugin.endswith("broken.py")] == [
        "ModuleNotFoundError: No module named 'this_module_does_not_exist'"]
    code, out, err = cli("ls", "strategies", "--plugins-dir", tmp_path)
    assert code == 0
    assert "broken.py" in err and "skipped" in err and "fine" in out


def test_misspelt_hook_is_reported_not_ignored(tmp_path):
    (tmp_path / "typo.py").write_text(textwrap.dedent('''
        import tlbench

        @tlbench.hookimpl
        def register_strategys(register):
            pass
    '''))
    registry = load_registry(str(tmp_path))
    (why,) = [why for plugin, why in registry.broken if plugin.endswith("typo.py")]
    assert "register_strategys" in why and "register_strategies" in why


def test_registering_something_that_is_not_a_strategy_is_reported(tmp_path):
    (tmp_path / "wrong.py").write_text(textwrap.dedent('''
        import tlbench

        @tlbench.hookimpl
        def register_strategies(register):
            register(object)
    '''))
    registry = load_registry(str(tmp_path))
    (why,) = [why for plugin, why in registry.broken if plugin.endswith("wrong.py")]
    assert "tlbench.Strategy" in why


def test_options_that_are_not_a_dataclass_are_reported_and_the_listing_still_works(tmp_path, cli):
    """A forgotten @dataclass: the plugin is skipped with the fix, and `tlbench ls -v` lists the
    rest instead of failing with a traceback."""
    (tmp_path / "plain.py").write_text(textwrap.dedent('''
        import tlbench

        class Plain(tlbench.Strategy):
            """Options without @dataclass."""
            name = "plain"

            class Options:
                lr: float = tlbench.option(0.1, "learning rate")

            def fit(self, model, train, val, ctx):
                return model

        @tlbench.hookimpl
        def register_strategies(register):
            register(Plain)
    '''))
    code, out, err = cli("ls", "strategies", "-v", "--plugins-dir", tmp_path)
    listed = [line.split()[0] for line in out.splitlines() if not line.startswith(" ")]
    assert code == 0 and "Traceback" not in err and "linear_probe" in listed and "plain" not in listed
    assert "plain.py" in err and "Options is not a dataclass: decorate it with @dataclass(frozen=True)" in err



@pytest.mark.parametrize("declaration, expected", [
    ("name = 3", "with the name 3 (int): give it a name, a non-empty string"),
    ("name = ['odd']", "with the name ['odd'] (list)"),
    ("name = 'odd'\n    description = 5", "with the description 5: it must be a string"),
    ("name = 'odd'\n    Options = tlbench.NoOptions()", "Options is not a dataclass"),
    ("name = 'odd'\n    Options = dict", "Options is not a dataclass"),
    ("name = 'odd'\n    @dataclasses.dataclass(frozen=True)\n    class Options:\n        lr: 'Nowhere' = 0.1",
     "whose Options cannot be read (NameError"),
])
def test_a_declaration_of_the_wrong_type_is_a_broken_plugin_not_a_crashed_listing(tmp_path, cli, declaration,
                                                                                  expected):
    """`tlbench ls -v` reads every registered class's name, description and Options: one of the
    wrong type is the plugin reported and skipped, and the rest listed."""
    (tmp_path / "odd.py").write_text(
        "import dataclasses\nimport tlbench\n\nclass Odd(tlbench.Strategy):\n    \"\"\"Odd.\"\"\"\n"
        f"    {declaration}\n\n@tlbench.hookimpl\ndef register_strategies(register):\n    register(Odd)\n")
    code, out, err = cli("ls", "strategies", "-v", "--plugins-dir", tmp_path)
    listed = [line.split()[0] for line in out.splitlines() if not line.startswith(" ")]
    assert code == 0 and "Traceback" not in err and "linear_probe" in listed and "odd" not in listed
    assert "odd.py" in err and expected in err


def test_a_family_that_fails_to_list_its_names_is_said_and_the_rest_listed(tmp_path, cli):
    (tmp_path / "family.py").write_text(textwrap.dedent('''
        import tlbench

        class Family(tlbench.Backbone):
            """Names from a hub it cannot reach."""
            name = "zz*"

            def matching(self, pattern):
                raise RuntimeError("hub unreachable")

        @tlbench.hookimpl
        def register_backbones(register):
            register(Family)
    '''))
    code, out, err = cli("ls", "backbones", "*lite0*", "--plugins-dir", tmp_path)
    assert code == 0 and "Traceback" not in err and "efficientnet_lite0" in out
    assert "Family.matching('*lite0*') failed: RuntimeError: hub unreachable" in err

def test_plugins_registered_in_process_for_one_test():
    class Probe(tlbench.Strategy):
        """In-process plugin."""
        name = "in_process"

    class Plugin:
        @staticmethod
        @tlbench.hookimpl
        def register_strategies(register):
            register(Probe)

    assert load_registry(extra_plugins=[Plugin]).get("strategies", "in_process") is Probe
    assert "in_process" not in load_registry().names("strategies")


def test_missing_plugins_dir_is_a_config_error(tmp_path, cli):
    code, out, err = cli("ls", "strategies", "--plugins-dir", tmp_path / "nope")
    assert code == 2 and "nope" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["--help"], ["ls", "strategies"], ["ls", "datasets"], ["ls", "backbones"],
                                  ["ls", "datasets", "c*"], ["ls", "sinks"]])
def test_cli_start_up_does_not_import_torch(argv):
    code = (
        "import sys, runpy; sys.argv = ['tlbench'] + %r\n"
        "try:\n    runpy.run_module('tlbench.cli', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'timm', 'torchvision', 'pandas', 'numpy', 'wandb', 'mlflow') if m in sys.modules]\n"
        "assert not heavy, heavy\n" % argv
    )
    import subprocess

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_ls_verbose_says_which_options_take_one_value(cli):
    code, out, _ = cli("ls", "strategies", "-v")
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("    ")}
    assert code == 0
    assert "(one value: a list is refused)" in lines["disk_cache_mb"]
    assert "a list is refused" not in lines["blocks"]


def test_ls_backbones_takes_a_pattern_as_timms_list_models_does(cli):
    import timm

    code, out, err = cli("ls", "backbones", "efficientnet_lite*")
    names = [line.split()[0] for line in out.splitlines()]
    assert code == 0 and err == ""
    assert names == timm.list_models("efficientnet_lite*")  # timm's names, nothing else
    assert "bundled with pip" in out.splitlines()[0]  # a featured name keeps its description


@pytest.mark.parametrize("kind, pattern, expected", [
    ("strategies", "l*_probe", ["linear_probe"]),
    ("datasets", "cifar1??", ["cifar100"]),
    ("scores", "*", None),  # every one
])
def test_ls_pattern_filters_every_kind(cli, registry, kind, pattern, expected):
    code, out, err = cli("ls", kind, pattern)
    assert code == 0 and err == ""
    assert [line.split()[0] for line in out.splitlines()] == (expected or registry.names(kind))


def test_ls_pattern_that_matches_nothing_says_so_with_the_closest_names(cli):
    code, out, err = cli("ls", "strategies", "linear_prob")
    assert code == 0 and out == ""
    assert "No strategies match 'linear_prob'" in err and "linear_probe" in err
