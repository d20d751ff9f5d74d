"""Sweep files: parsing, validation errors, grid expansion and stable run keys."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from plantseek.sweep import SweepConfigError, parse_sweep, run_key
from plantseek.sweep.config import RunConfig, canonical_json, legacy_run_key

ISSUE_EXAMPLE = (Path(__file__).resolve().parents[1] / "examples" / "issue_example.toml").read_text()  # the issue's sweep


def test_issue_example_expands_to_the_product():
    sweep = parse_sweep(ISSUE_EXAMPLE)
    assert len(sweep) == 2 * (2 * 3 + 1) * 1 * 2  # the ticket oracle once, at density "ticket"
    first = sweep.runs[0].to_dict()
    assert {k: first[k] for k in ("task", "pruner", "protocol", "density", "seed", "depth", "width", "epochs")} == \
        {"task": "circle", "pruner": "random", "protocol": "singleshot", "density": 0.1, "seed": 0,
         "depth": 3, "width": 30, "epochs": 1}
    keys = [r.key for r in sweep.runs]
    assert len(set(keys)) == len(keys)
    assert {r.density for r in sweep.runs} == {0.1, 0.01, "ticket"}


def test_keys_are_stable_and_depend_on_every_setting():
    a = parse_sweep(ISSUE_EXAMPLE).runs
    b = parse_sweep(ISSUE_EXAMPLE.replace('tasks = ["circle", "relu"]', 'task = ["relu", "circle"]')).runs
    assert {r.key for r in a} == {r.key for r in b}  # spelling and order do not matter
    cfg = a[0].to_dict()
    assert legacy_run_key(cfg, "1.0") != legacy_run_key(cfg, "1.1")  # the old scheme held the version
    assert a[0].key == run_key(cfg)  # the new one does not (tests/test_spec.py: literal keys)
    for k, v in [("epochs", 2), ("width", 31), ("density", 0.2), ("seed", 5), ("lr", 0.01)]:
        assert run_key({**cfg, k: v}) != run_key(cfg)
    # 1 and 1.0 are the same density
    c = parse_sweep(ISSUE_EXAMPLE.replace("densities = [0.1, 0.01, \"ticket\"]", "densities = [1]")).runs[0]
    d = parse_sweep(ISSUE_EXAMPLE.replace("densities = [0.1, 0.01, \"ticket\"]", "densities = [1.0]")).runs[0]
    assert c.key == d.key


def test_legacy_key_is_sha256_of_canonical_json_with_version():
    import hashlib

    cfg = {"task": "relu", "pruner": "random", "protocol": "singleshot", "density": 0.5, "seed": 0, "depth": 2,
           "width": 10}
    expected = hashlib.sha256(
        b'{"config":{"density":0.5,"depth":2,"protocol":"singleshot","pruner":"random","seed":0,"task":"relu",'
        b'"width":10},"plantseek_version":"9.9"}').hexdigest()
    assert legacy_run_key(cfg, "9.9") == expected
    assert RunConfig.from_dict(cfg).key == run_key(cfg) == RunConfig.from_dict(cfg).spec.key


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=5),
                       st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(),
                                 st.booleans(), st.lists(st.integers(), max_size=3)), max_size=6))
def test_canonical_json_ignores_key_order(d):
    items = list(d.items())
    assert canonical_json(dict(items)) == canonical_json(dict(reversed(items)))
    assert json.loads(canonical_json(d)) == json.loads(json.dumps(d))


def test_experiments_override_and_union():
    text = """
    [sweep]
    name = "paper-ish"
    tasks = ["relu"]
    pruners = ["random", "magnitude"]
    densities = [0.1, 1]
    depth = [2, 4]
    width = 20
    epochs = 2
    seeds = {start = 3, count = 2}

    [[experiment]]
    name = "singleshot"
    protocol = "singleshot"

    [[experiment]]
    name = "strong"
    protocol = "strong"
    pruner = ["snip", {name = "synflow", iterations = 100}]
    seeds = [0]
    """
    sweep = parse_sweep(text)
    assert sweep.name == "paper-ish"
    single = [r for r in sweep.runs if r.protocol == "singleshot"]
    strong = [r for r in sweep.runs if r.protocol == "strong"]
    assert len(single) == 2 * 2 * 2 * 2 and {r.seed for r in single} == {3, 4}
    assert len(strong) == 2 * 2 * 2 and {r.seed for r in strong} == {0}
    syn = [r for r in strong if r.pruner == "synflow"]
    assert syn and syn[0].pruner_options == {"iterations": 100}
    assert syn[0].pruner_label == "synflow[iterations=100]"
    assert syn[0].to_dict()["pruner_options"] == {"iterations": 100}
    # runs that differ only in pruner, density and seed share a group (batched together)
    assert len({r.group_key for r in single}) == 2  # two depths


def test_uneven_width_and_training_options_in_the_grid():
    sweep = parse_sweep("""
    [sweep]
    task = "circle"
    pruner = "random"
    protocol = "singleshot"
    density = 0.5
    seed = 0
    depth = 3
    width = [[40, 20], 30]
    lr = [1e-3, 1e-2]
    batch_size = 32
    """)
    assert len(sweep) == 4
    assert {json.dumps(r.width) for r in sweep.runs} == {"[40, 20]", "30"}
    assert {r.options["lr"] for r in sweep.runs} == {1e-3, 1e-2}
    assert all(r.options["batch_size"] == 32 for r in sweep.runs)
    kw = sweep.runs[0].seek_kwargs(device="cpu")
    assert kw["device"] == "cpu" and kw["lr"] == 1e-3 and kw["width"] == [40, 20]


def test_defaults_of_seek_complete_the_key():
    from plantseek.spec import defaults as spec_defaults

    defaults = spec_defaults()
    a = parse_sweep(ISSUE_EXAMPLE).runs[0]
    b = parse_sweep(ISSUE_EXAMPLE + f"lr = {defaults['lr']!r}\nbatch_size = {defaults['batch_size']}\n").runs[0]
    assert a.key == b.key and a.options["lr"] == defaults["lr"]
    c = parse_sweep(ISSUE_EXAMPLE + "lr = 0.123\n").runs[0]
    assert c.key != a.key
    assert "device" not in a.to_dict() and "progress" not in a.to_dict()


def test_duplicates_are_dropped():
    sweep = parse_sweep(ISSUE_EXAMPLE + '\n[[experiment]]\nepochs = 1\n[[experiment]]\nepochs = [1, 2]\n')
    assert len(sweep) == 28 * 2


@pytest.mark.parametrize("bad, words", [
    ('protocols = ["singleshot", "twoshot"]', ["'protocols'", "'twoshot'", "singleshot, multishot, strong"]),
    ('densities = [0.1, 1.5]', ["'densities'", "1.5", "(0, 1]", '"ticket"']),
    ('densities = ["half"]', ["'densities'", "'half'"]),
    ('tasks = ["circle", "square"]', ["'tasks'", "'square'", "circle", "relu"]),
    ('pruners = ["synfloww"]', ["'pruners'", "'synfloww'", "synflow", "random"]),
    ('seeds = [-1]', ["'seeds'", "-1", "non-negative"]),
    ('depth = 0', ["'depth'", "0", ">= 1"]),
    ('width = "wide"', ["'width'", "'wide'"]),
    ('epochs = 1.5', ["'epochs'", "1.5"]),
    ('dtype = "float16"', ["'dtype'", "float32, float64"]),
    ('learning_rate = 0.1', ["unknown key 'learning_rate'", "allowed keys", "densities"]),
    ('densities = []', ["'densities'", "empty"]),
    ('prune_bias = "no"', ["'prune_bias'", "'no'", "true, false"]),
    ('dense_baseline = ["false"]', ["'dense_baseline'", "'false'", "true, false"]),
    ('densities = [0.1, 1e-12]', ["'density'", "'circle'", "keeps none of the 1144", "(1/1144)"]),
    ('noise = 1.5', ["'noise'", "task 'circle'", "[0, 1]", "1.5"]),
    ('noise = -0.1', ["'noise'", "task 'circle'", "-0.1"]),
    ('noise = nan', ["'noise'", "nan"]),
])
def test_validation_errors_name_the_key_and_the_allowed_values(bad, words):
    lines = [ln for ln in ISSUE_EXAMPLE.strip().splitlines()]
    key = bad.split("=")[0].strip()
    lines = [ln for ln in lines if ln.split("=")[0].strip() != key] + [bad]
    with pytest.raises(SweepConfigError) as info:
        parse_sweep("\n".join(lines), origin="bad.toml")
    msg = str(info.value)
    assert msg.startswith("bad.toml: [sweep]")
    for w in words:
        assert w in msg, msg


CIRCLE_SWEEP = """
[sweep]
task = "circle"
pruners = ["random", "synflow"]
protocol = "singleshot"
densities = [0.1, 0.5]
seeds = [0, 1]
epochs = 1
"""


@pytest.mark.parametrize("bad, words", [
    ("depth = 4\nwidth = [30, 10]", ["'width'", "10", "'circle'", "depth 4", "at least 18", "width >= 18"]),
    ("depth = 4\nwidth = 10", ["'width'", "10", "'circle'", "depth 4", "at least 18", "width >= 18"]),
    ("depth = 4\nwidth = [[30, 30]]", ["'width'", "[30, 30]", "one entry per hidden layer"]),
    ("depth = 1\nwidth = 30", ["'depth'", "bad value 1", "'circle'", ">= 2"]),
    ('depth = 3\nwidth = 30\noptimizer = "adamw"', ["'optimizer'", "'adamw'", "adam, sgd"]),
    ('depth = 3\nwidth = 30\nscope = "row"', ["'scope'", "'row'", "global, layer"]),
    ('depth = 3\nwidth = 30\nimpl = ["auto", "fast"]', ["'impl'", "'fast'", "auto, dense, sparse"]),
    ('depth = 3\nwidth = 30\ninit = "xavier"', ["'init'", "'xavier'", "he-scaled"]),
    ('depth = 3\nwidth = 30\nrescale = "fit-odd"', ["'rescale'", "'fit-odd'", "fit-even"]),
])
def test_every_run_setting_is_checked_before_the_first_run(tmp_path, bad, words):
    """What used to pass validation and then fail every run: a host narrower than the ticket, a depth below
    the task's minimum, and values outside seek's choices (`plantseek.seek.option_choices`)."""
    from plantseek.sweep import load_sweep

    f = tmp_path / "bad.toml"
    f.write_text(CIRCLE_SWEEP + bad + "\n")
    with pytest.raises(SweepConfigError) as info:
        load_sweep(f)
    msg = str(info.value)
    assert msg.startswith(f"{f}: [sweep]"), msg
    for w in words:
        assert w in msg, msg


def test_valid_settings_pass_with_their_keys():
    ok = parse_sweep(CIRCLE_SWEEP + 'depth = 4\nwidths = [18, [20, 30, 18]]\noptimizer = "sgd"\nscope = "layer"\n'
                     'impl = "dense"\ninit = "he"\n')
    assert len(ok) == 2 * 2 * 2 * 2
    assert {(r.options["optimizer"], r.options["scope"], r.options["impl"], r.options["init"]) for r in ok.runs} \
        == {("sgd", "layer", "dense", "he")}
    # the checks add no key: the file's runs are what they were
    plain = parse_sweep(CIRCLE_SWEEP + "depth = 3\nwidth = 30\n")
    assert len({r.key for r in plain.runs}) == len(plain) == 8


def test_density_ticket_in_any_case_is_the_same_run():
    lower = parse_sweep(ISSUE_EXAMPLE)
    text = ISSUE_EXAMPLE.replace('0.01, "ticket"]', '0.01, "Ticket"]')
    assert '"Ticket"' in text
    upper = parse_sweep(text)
    assert [r.key for r in upper.runs] == [r.key for r in lower.runs]
    assert {r.density for r in upper.runs} == {0.1, 0.01, "ticket"}


ORACLE_SWEEP = """
[sweep]
task = "circle"
pruners = [{pruners}]
protocols = ["singleshot", "strong"]
densities = [{densities}]
seeds = [0, 1]
depth = 3
width = 30
epochs = 1
"""


def test_ticket_oracle_runs_once_per_configuration(tmp_path, capsys):
    """The oracle keeps the planted mask whatever density is asked: one run per configuration, at density
    "ticket"; the other pruners' runs and keys are what they were."""
    both = parse_sweep(ORACLE_SWEEP.format(pruners='"random", "ticket"', densities='0.1, 0.5, "ticket"'))
    oracle = [r for r in both.runs if r.pruner == "ticket"]
    assert len(oracle) == 2 * 2 and {r.density for r in oracle} == {"ticket"}  # protocols x seeds
    assert len(both) == 2 * 2 * 3 + 4
    alone = parse_sweep(ORACLE_SWEEP.format(pruners='"random"', densities='0.1, 0.5, "ticket"'))
    assert [r.key for r in both.runs if r.pruner == "random"] == [r.key for r in alone.runs]
    at_ticket = parse_sweep(ORACLE_SWEEP.format(pruners='"ticket"', densities='"ticket"'))
    assert [r.key for r in oracle] == [r.key for r in at_ticket.runs]  # results stored before still count
    assert at_ticket.notes == []
    # densities without "ticket": the oracle still runs, at its own density
    numeric = parse_sweep(ORACLE_SWEEP.format(pruners='"ticket"', densities="0.1, 0.5"))
    assert [r.key for r in numeric.runs] == [r.key for r in at_ticket.runs]
    (note,) = both.notes
    assert "once per configuration" in note and "(4 runs)" in note and "(8 runs fewer)" in note
    from plantseek.cli import main

    f = tmp_path / "s.toml"
    f.write_text(ORACLE_SWEEP.format(pruners='"random", "ticket"', densities='0.1, 0.5, "ticket"'))
    assert main(["sweep", str(f), "--db", str(tmp_path / "r.db"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "16 runs, 0 already in" in out and "note: pruner 'ticket' (the oracle)" in out


def test_booleans_and_regression_noise_that_are_fine():
    sweep = parse_sweep(ISSUE_EXAMPLE + 'prune_bias = false\ndense_baseline = [true, false]\n')
    assert {(r.options["prune_bias"], r.options["dense_baseline"]) for r in sweep.runs} == {(False, True), (False, False)}
    relu = parse_sweep(ISSUE_EXAMPLE.replace('tasks = ["circle", "relu"]', 'tasks = ["relu"]') + "noise = 1.5\n")
    assert {r.options["noise"] for r in relu.runs} == {1.5}  # a standard deviation for regression


def test_structural_errors():
    with pytest.raises(SweepConfigError, match="missing key.*'pruner'"):
        parse_sweep('[sweep]\ntask="relu"\nprotocol="strong"\ndensity=0.1\nseed=0\ndepth=2\nwidth=10\n')
    with pytest.raises(SweepConfigError, match="not valid TOML"):
        parse_sweep("[sweep\n")
    with pytest.raises(SweepConfigError, match="missing \\[sweep\\]"):
        parse_sweep("[experiment]\n")
    with pytest.raises(SweepConfigError, match="unknown top-level"):
        parse_sweep(ISSUE_EXAMPLE + "\n[sweeps]\nx=1\n")
    with pytest.raises(SweepConfigError, match="imports.*no_such_module_xyz"):
        parse_sweep(ISSUE_EXAMPLE.replace("[sweep]", '[sweep]\nimports = ["no_such_module_xyz"]'))
    with pytest.raises(SweepConfigError, match="given twice"):
        parse_sweep(ISSUE_EXAMPLE + "seed = 3\n")
    with pytest.raises(SweepConfigError, match=r"\[\[experiment\]\] #1.*'protocol'"):
        parse_sweep(ISSUE_EXAMPLE + '[[experiment]]\nprotocol = "bogus"\n')


def test_load_sweep_file_names_the_file(tmp_path):
    from plantseek.sweep import load_sweep

    p = tmp_path / "mine.toml"
    p.write_text(ISSUE_EXAMPLE)
    sweep = load_sweep(p)
    assert sweep.name == "mine" and sweep.source == ISSUE_EXAMPLE and len(sweep) == 28
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        load_sweep(tmp_path / "nope.toml")


def test_example_files_parse():
    from pathlib import Path

    from plantseek.sweep import load_sweep

    root = Path(__file__).resolve().parents[1] / "examples"
    files = sorted(root.glob("*.toml"))
    assert files, "examples/*.toml missing"
    for f in files:
        assert len(load_sweep(f)) > 0
