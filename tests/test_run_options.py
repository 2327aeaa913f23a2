"""One declaration per run option (protocol.RUN_OPTIONS) and per pass option (PASS_OPTIONS: --energy-seconds,
--profile-iterations, ...): `bench deploy`, the standalone agent's `run`, a plan's settings and the Python API read
every option alike, and the help of both CLIs comes from the same table."""

from __future__ import annotations

import pytest
import yaml

from edgebench_agent.protocol import PASS_DEFAULTS, PASS_OPTIONS, PASS_SWITCHES, RUN_DEFAULTS, RUN_OPTIONS, RequestError
from tests.conftest import EXAMPLES

MODEL = EXAMPLES / "cnn.onnx"
FRONTED = [o for o in RUN_OPTIONS if o.flag]
SPELLINGS = {
    "int": ["3", "1", "0", "-1", "1024", "1025", "1.5", "2.0", "abc", "", "1e3", " 2", "nan", "99999999999"],
    "float": ["0.5", "2", "0", "-1", "-0.25", "1e-3", "abc", "", "nan", "inf", "1e400", " 3"],
    "choice": ["all", "basic", "ALL", "none", "", "disable"],
}


def _typed(spelling: str, folder):
    """What a plan's YAML (edgebench's reading of it), or a notebook user typing the same, makes of the spelling."""
    from edgebench.yamlconf import load_yaml

    path = folder / "value.yaml"
    path.write_text(f"value: {spelling!r}" if spelling.strip() in ("", "nan", "inf") else f"value: {spelling}")
    return load_yaml(path).data["value"]


def _switch(option, on: bool = True) -> list[str]:
    """A pass option's switch (--energy for --energy-seconds), as a flag; none for a run option."""
    return [PASS_SWITCHES[option.block]] if on and hasattr(option, "block") else []


def _host_cli(option, spelling: str, capsys, switch: bool = True) -> bool:
    """`bench deploy MODEL --flag SPELLING --target no-such-board`, parsed and checked in this process: every
    option is checked before the target is looked up, so an accepted spelling ends at the unknown target."""
    import typer

    from edgebench.cli import app

    command = typer.main.get_command(app)
    try:
        command.main(["deploy", str(MODEL), *_switch(option, switch), option.flag, spelling, "--target", "no-such-board"],
                     standalone_mode=False)
    except SystemExit:
        pass
    except Exception as exc:  # click's own usage errors (a value typer cannot convert)
        return _ends_at_target(str(exc))
    return _ends_at_target(capsys.readouterr().err)


def _ends_at_target(text: str) -> bool:
    return "no-such-board" in text


def _agent(option, spelling: str, switch: bool = True) -> bool:
    from edgebench_agent.__main__ import _request_from_flags, build_parser
    from edgebench_agent.protocol import normalize_run_request

    try:
        flags = ["run", str(MODEL), *_switch(option, switch), option.flag, spelling]
        normalize_run_request(_request_from_flags(build_parser().parse_args(flags)))
    except RequestError:
        return False
    return True


def _plan(option, spelling: str, tmp_path, switch: bool = True) -> bool:
    from edgebench.errors import BenchError
    from edgebench.stages.plan import prepare

    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"name": "p", "models": [{"name": "cnn", "path": str(MODEL)}], "targets": ["local"],
                                    "settings": {option.plan: _typed(spelling, tmp_path),
                                                 **({s[2:]: True for s in _switch(option, switch)})}}))
    try:
        prepare(path, dry_run=True)
    except BenchError:
        return False
    return True


def _api(option, spelling: str, tmp_path, switch: bool = True) -> bool:
    import edgebench.api as eb
    from edgebench.errors import BenchError

    try:
        eb.deploy(MODEL, target="no-such-board", **{option.name: _typed(spelling, tmp_path)},
                  **({s[2:]: True for s in _switch(option, switch)}))
    except BenchError as exc:
        return _ends_at_target(str(exc))
    raise AssertionError("a deploy to no-such-board ran")


@pytest.mark.bad_input
@pytest.mark.parametrize("option", [o for o in FRONTED if o.plan] + list(PASS_OPTIONS), ids=lambda o: o.name)
def test_every_front_accepts_and_refuses_the_same_spellings(option, tmp_path, capsys):
    for spelling in SPELLINGS[option.kind]:
        seen = {"bench deploy": _host_cli(option, spelling, capsys), "agent run": _agent(option, spelling),
                "plan": _plan(option, spelling, tmp_path), "api": _api(option, spelling, tmp_path)}
        assert len(set(seen.values())) == 1, (option.name, spelling, seen)
    if hasattr(option, "block"):  # and without its pass's switch, every front refuses it
        seen = {"bench deploy": _host_cli(option, "1", capsys, switch=False), "agent run": _agent(option, "1", False),
                "plan": _plan(option, "1", tmp_path, False), "api": _api(option, "1", tmp_path, False)}
        assert set(seen.values()) == {False}, (option.name, seen)


def test_each_run_option_is_on_every_front_with_the_protocols_help_and_default():
    """The table is the list: every run option with a flag is a `bench deploy` option and an agent `run` flag with
    the protocol's help and default, every one with a plan key a plan setting, and the API takes its name."""
    import typer

    from edgebench.cli import app
    from edgebench.cli_help import readable
    from edgebench.stages.plan import SETTINGS
    from edgebench_agent.__main__ import build_parser

    deploy = readable(typer.main.get_command(app).commands["deploy"])  # as `bench deploy --help` shows it
    host = {opt: param for param in deploy.params for opt in param.opts}
    run_parser = next(a for a in build_parser()._actions if getattr(a, "choices", None) and "run" in a.choices).choices["run"]
    agent = {opt: action for action in run_parser._actions for opt in action.option_strings}
    for option in FRONTED:
        assert option.flag in host, f"bench deploy has no {option.flag}"
        assert option.flag in agent, f"the agent's run has no {option.flag}"
        words = option.help.split("(")[0].strip().lower()
        assert words in (host[option.flag].help or "").lower(), (option.flag, host[option.flag].help)
        assert words in agent[option.flag].help.lower(), (option.flag, agent[option.flag].help)
        default = RUN_DEFAULTS[option.field]
        if default is not None and not option.field.endswith("threads"):  # (the host says whose default 0 is)
            assert f"[default: {default}]" in host[option.flag].help, host[option.flag].help
            assert f"[default: {default}]" in agent[option.flag].help, agent[option.flag].help
        assert agent[option.flag].dest == option.field
        if option.plan:
            assert SETTINGS[option.plan][1] == option.field
    for option in PASS_OPTIONS:
        default = f"[default: {PASS_DEFAULTS[option.block][option.key]:g}]"
        for front in (host, agent):
            assert option.flag in front and option.help in front[option.flag].help, (option.flag, front[option.flag].help)
            assert default in front[option.flag].help and PASS_SWITCHES[option.block] in front[option.flag].help
        assert option.plan in SETTINGS


def test_compare_and_history_take_one_set_of_defaults():
    """results.defaults.ANALYSIS_DEFAULTS is what every comparison front defaults to: both commands' options, the
    API, the stages' requests and the functions under them."""
    import inspect

    import typer

    import edgebench.api as eb
    from edgebench.cli import app
    from edgebench.options import group_keys, percent
    from edgebench.results import report, stats
    from edgebench.results.defaults import ANALYSIS_DEFAULTS as D
    from edgebench.stages.compare import CompareRequest
    from edgebench.stages.history import HistoryRequest

    commands = typer.main.get_command(app).commands
    for command, metric in (("compare", D.compare_metric), ("history", D.history_metric)):
        params = {p.name: p.default for p in commands[command].params}
        assert group_keys(params["by"]) == D.by and params["alpha"] == D.alpha, command
        assert percent(params["min_effect"], "--min-effect") == pytest.approx(D.min_effect) and params["metric"] == metric
    assert {p.name: p.default for p in commands["history"].params}["window"] == D.window
    for function, metric in ((eb.compare, D.compare_metric), (eb.history, D.history_metric)):
        defaults = {name: p.default for name, p in inspect.signature(function).parameters.items()}
        assert tuple(defaults["by"]) == D.by and defaults["metric"] == metric, function
        assert (defaults["alpha"], defaults["min_effect"]) == (D.alpha, D.min_effect), function
    assert inspect.signature(eb.history).parameters["window"].default == D.window
    for request, metric in ((CompareRequest([]), D.compare_metric), (HistoryRequest([]), D.history_metric)):
        assert (request.by, request.metric, request.alpha, request.min_effect) == (D.by, metric, D.alpha,
                                                                                   D.min_effect), request
    assert HistoryRequest([]).window == D.window
    for function in (report.compare_runs, report.compare_records, stats.compare_samples):
        parameters = inspect.signature(function).parameters
        assert parameters["alpha"].default == D.alpha and parameters["min_effect"].default == D.min_effect
        if "by" in parameters:
            assert parameters["by"].default == D.by and parameters["metric"].default == D.compare_metric


# A load scenario's flags, each with a spelling set; the plan and the API take the scenario object instead.
SCENARIO_FLAGS = {
    "--samples-per-query": ("multi-stream", "samples_per_query",
                            ["8", "1", "0", "-2", "2.0", "abc", "", " 3", "1_000", "99999999"]),
    "--concurrency": ("offline", "concurrency", ["1", "4", "0", "-1", "1.5", "x", " 2"]),
    "--qps": ("server", "qps", ["100", "0.5", "auto", "Auto", "AUTO", "0", "-3", "nan", "inf", "1e2", "x", ""]),
    "--scenario": ("", None, ["offline", "single-stream", "Offline", "servr", ""]),  # the name itself
}


def _scenario_host(flag, scenario, spelling, capsys) -> bool:
    import typer

    from edgebench.cli import app

    try:
        typer.main.get_command(app).main(["deploy", str(MODEL), *(["--scenario", scenario] if scenario else []), flag,
                                          spelling, "--target", "no-such-board"], standalone_mode=False)
    except SystemExit:
        pass
    except Exception as exc:
        return _ends_at_target(str(exc))
    return _ends_at_target(capsys.readouterr().err)


def _scenario_agent(flag, scenario, spelling) -> bool:
    from edgebench_agent.__main__ import _request_from_flags, build_parser
    from edgebench_agent.protocol import normalize_run_request

    try:
        normalize_run_request(_request_from_flags(build_parser().parse_args(
            ["run", str(MODEL), *(["--scenario", scenario] if scenario else []), flag, spelling])))
    except (RequestError, SystemExit):  # (argparse's own refusal of a choice)
        return False
    return True


def _scenario_object(scenario, key, spelling, tmp_path) -> dict:
    return {"name": scenario, key: _typed(spelling, tmp_path)} if key else {"name": spelling}


@pytest.mark.bad_input
@pytest.mark.parametrize("flag", list(SCENARIO_FLAGS))
def test_every_front_reads_a_scenario_alike(flag, tmp_path, capsys):
    """`bench deploy --scenario S --flag X`, the agent's `run` with the same flags, a plan's `scenario:` object and
    the API's take and refuse the same spellings (the qps as a YAML or Python value: 1e2 a number, Auto a string)."""
    import edgebench.api as eb
    from edgebench.errors import BenchError
    from edgebench.stages.plan import prepare

    scenario, key, spellings = SCENARIO_FLAGS[flag]
    for spelling in spellings:
        plan = tmp_path / "plan.yaml"
        plan.write_text(yaml.safe_dump({"name": "p", "models": [{"name": "cnn", "path": str(MODEL)}],
                                        "targets": ["local"],
                                        "settings": {"scenario": _scenario_object(scenario, key, spelling, tmp_path)}}))
        try:
            prepare(plan, dry_run=True)
            in_plan = True
        except BenchError:
            in_plan = False
        try:
            eb.deploy(MODEL, target="no-such-board", scenario=_scenario_object(scenario, key, spelling, tmp_path))
            raise AssertionError("a deploy to no-such-board ran")
        except BenchError as exc:
            in_api = _ends_at_target(str(exc))
        seen = {"bench deploy": _scenario_host(flag, scenario, spelling, capsys),
                "agent run": _scenario_agent(flag, scenario, spelling), "plan": in_plan, "api": in_api}
        assert len(set(seen.values())) == 1, (flag, spelling, seen)


def test_a_pass_asked_for_alone_is_the_same_cell_as_one_with_its_defaults_spelled_out(tmp_path):
    """`cooldown: true` and `cooldown: true, cooldown_margin: 3` are one run: the request (and the plan cell key
    that hashes it) holds the pass block with its defaults filled in, as before the options were declared."""
    from edgebench.stages.plan import load_plan, matrix
    from edgebench.boards.targets import load_inventory
    from edgebench_agent.protocol import pass_blocks

    assert pass_blocks({"cooldown": True, "profile": True}, {}) == {
        "cooldown": {"margin_c": PASS_DEFAULTS["cooldown"]["margin_c"], "timeout_s": PASS_DEFAULTS["cooldown"]["timeout_s"]},
        "profile": {"iterations": PASS_DEFAULTS["profile"]["iterations"]}}
    keys = []
    for extra in ({}, {"cooldown_margin": PASS_DEFAULTS["cooldown"]["margin_c"], "profile_iterations": 20}):
        path = tmp_path / f"plan{len(keys)}.yaml"
        path.write_text(yaml.safe_dump({"name": "p", "models": [{"name": "cnn", "path": str(MODEL)}], "targets": ["local"],
                                        "settings": {"cooldown": True, "profile": True, **extra}}))
        inventory = load_inventory(None)
        keys.append([cell.key for cell in matrix(load_plan(path, inventory), {"cnn": [("original", MODEL)]}, inventory)])
    assert keys[0] == keys[1] and len(keys[0]) == 1


def test_the_run_timeout_leaves_room_for_each_sessions_cool_down():
    """--cooldown-timeout 600 on a hot board: each session may wait that long first, and the run's own timeout
    (from its maximums) counts it, so the wait never gets the run killed."""
    from edgebench_agent.protocol import default_run_timeout, normalize_run_request

    plain = default_run_timeout(normalize_run_request({"model": "m.onnx", "repeats": 3}))
    cooling = default_run_timeout(normalize_run_request({"model": "m.onnx", "repeats": 3, "cooldown": {"timeout_s": 600}}))
    assert cooling - plain == pytest.approx(3 * 600)
