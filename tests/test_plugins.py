"""Plugins: pruners, tasks and protocols from installed packages (entry points), modules named by `--import` and
by a sweep file's `imports = [...]` (found in the current directory and the sweep file's), and the same
imports on Dask workers, for a pruner written against torch.nn.Module (`pruners.from_module`)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

import plantseek
from plantseek import plugins, protocols, pruners, tasks
from plantseek.cli import main
from plantseek.pruners import base as pruner_base
from plantseek.store import ResultStore
from plantseek.sweep import run_sweep
from plantseek.sweep.config import SweepConfigError, load_sweep
from plantseek.tasks import base as task_base

PKG_ROOT = str(Path(plantseek.__file__).resolve().parents[1])

# ------------------------------------------------------------------------------------------------ a plugin package

DEMO_PYPROJECT = """
[project]
name = "plantseek-demo-plugin"
version = "0.1"

[project.entry-points."plantseek.pruners"]
demo = "plantseek_demo_plugin.pruners"
demo-smallest = "plantseek_demo_plugin.pruners:Smallest"

[project.entry-points."plantseek.tasks"]
demo = "plantseek_demo_plugin.tasks"

[project.entry-points."plantseek.protocols"]
demo = "plantseek_demo_plugin.protocols"
"""

DEMO_FILES = {
    "plantseek_demo_plugin/__init__.py": "",
    "plantseek_demo_plugin/pruners.py": '''
        import torch
        from torch.nn.utils import prune

        from plantseek import pruners


        @pruners.register("demo-magnitude")
        class DemoMagnitude(pruners.ScorePruner):
            """Keep the largest |w| and |b| (a plugin's pruner)."""

            def scores(self, net, data, generator, mask):
                return [(w.abs(), b.abs()) for w, b in zip(net.weights, net.biases)]


        class Smallest(pruners.ScorePruner):
            """Keep the smallest |w| and |b| (registered by its entry point's name)."""

            def scores(self, net, data, generator, mask):
                return [(-w.abs(), -b.abs()) for w, b in zip(net.weights, net.biases)]


        @pruners.from_module(name="demo-torch-l1")
        def demo_torch_l1(module, data, density, generator):
            """torch.nn.utils.prune global L1 (a plugin's torch.nn.Module pruner)."""
            params = [(m, n) for m in module.modules() if isinstance(m, torch.nn.Linear) for n in ("weight", "bias")]
            total = sum(getattr(m, n).numel() for m, n in params)
            prune.global_unstructured(params, pruning_method=prune.L1Unstructured,
                                      amount=total - pruners.kept_count(density, total))
    ''',
    "plantseek_demo_plugin/tasks.py": '''
        import torch

        from plantseek.tasks import Task, register
        from plantseek.tickets import DTYPE, Ticket, deepen


        @register("demo-absolute")
        class DemoAbsolute(Task):
            """|x| (a plugin's task)."""

            kind, input_dim, output_dim, min_depth = "regression", 1, 1, 2

            def target(self, x):
                return x.abs()

            def build_ticket(self, depth):
                w1 = torch.tensor([[1.0], [-1.0]], dtype=DTYPE)
                w2 = torch.tensor([[1.0, 1.0]], dtype=DTYPE)
                zeros = torch.zeros(2, dtype=DTYPE), torch.zeros(1, dtype=DTYPE)
                return deepen(Ticket([w1, w2], list(zeros), "demo-absolute"), depth, offset=0.0)
    ''',
    "plantseek_demo_plugin/protocols.py": '''
        from dataclasses import replace

        from plantseek import protocols


        @protocols.register("demo-halfshot")
        class DemoHalfShot(protocols.SingleShot):
            """singleshot with half the epochs (a plugin's protocol)."""

            def run(self, runs, dense, settings):
                super().run(runs, dense, replace(settings, epochs=settings.epochs // 2))
    ''',
}

BROKEN_PYPROJECT = """
[project]
name = "plantseek-broken-plugin"
version = "0.2"

[project.entry-points."plantseek.pruners"]
broken = "plantseek_broken_plugin"
"""

BROKEN_FILES = {
    "plantseek_broken_plugin/__init__.py": '''
        import builtins

        builtins.plantseek_broken_imports = getattr(builtins, "plantseek_broken_imports", 0) + 1
        raise RuntimeError("boom: this plugin is broken")
    ''',
}


def install(site: Path, pyproject: str, files: dict[str, str]) -> Path:
    """Install a package into ``site`` as an installer would: its modules, and a ``*.dist-info`` whose
    ``entry_points.txt`` holds the pyproject's ``[project.entry-points]`` (how importlib.metadata finds it)."""
    project = tomllib.loads(pyproject)["project"]
    for rel, text in files.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = []
    for group, eps in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {value}" for name, value in eps.items()]
        lines.append("")
    (info / "entry_points.txt").write_text("\n".join(lines))
    return site


@pytest.fixture
def fresh(monkeypatch):
    """Registries and entry-point loaders as in a new process (restored, with sys.path and the plugin modules,
    afterwards), so that a test's plugins do not leak into other tests."""
    monkeypatch.setattr(pruner_base, "_REGISTRY", dict(pruner_base._REGISTRY))
    monkeypatch.setattr(pruner_base, "_PLUGINS", plugins.EntryPoints("plantseek.pruners", "pruner", pruner_base._adopt))
    monkeypatch.setattr(task_base, "_TASKS", dict(task_base._TASKS))
    monkeypatch.setattr(task_base, "_PLUGINS", plugins.EntryPoints("plantseek.tasks", "task", task_base._adopt))
    monkeypatch.setattr(protocols, "_PROTOCOLS", dict(protocols._PROTOCOLS))
    monkeypatch.setattr(protocols, "_PLUGINS", plugins.EntryPoints("plantseek.protocols", "protocol", protocols._adopt))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(plugins, "_IMPORT_PATHS", [])
    monkeypatch.delenv(plugins.DISABLE_ENV, raising=False)
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("plantseek_demo", "plantseek_broken", "plug_")):
            del sys.modules[name]


def _on_path(site: Path) -> None:
    import importlib

    sys.path.insert(0, str(site))
    importlib.invalidate_caches()


def _env(*paths) -> dict:
    env = dict(os.environ)
    env.pop(plugins.DISABLE_ENV, None)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), PKG_ROOT, env.get("PYTHONPATH", "")])
    return env


# ------------------------------------------------------------------------------------------------ entry points

def test_entry_points_register_pruners_tasks_and_protocols_when_first_looked_up(tmp_path, fresh, monkeypatch):
    import importlib.metadata as md

    _on_path(install(tmp_path / "site", DEMO_PYPROJECT, DEMO_FILES))
    calls = []
    real = md.entry_points
    monkeypatch.setattr(md, "entry_points", lambda **kw: calls.append(kw) or real(**kw))
    assert "plantseek_demo_plugin.pruners" not in sys.modules  # nothing is imported before the registry is used
    names = pruners.available()
    assert {"demo-magnitude", "demo-smallest", "demo-torch-l1"} <= set(names)
    assert "plantseek_demo_plugin.pruners" in sys.modules and "plantseek_demo_plugin.tasks" not in sys.modules
    assert pruners.descriptions()["demo-smallest"].startswith("Keep the smallest")
    assert pruners.get("demo-smallest").name == "demo-smallest"  # an unregistered class: its entry point's name
    pruners.available(), pruners.get("demo-magnitude"), pruners.descriptions()
    assert calls == [{"group": "plantseek.pruners"}]  # loaded once
    assert "demo-absolute" in tasks.available() and "demo-halfshot" in protocols.available()
    assert tasks.get("demo-absolute").ticket(2).depth == 2
    assert protocols.descriptions()["demo-halfshot"].startswith("singleshot with half")


def test_a_plugins_pruner_task_and_protocol_run_through_seek(tmp_path, fresh):
    _on_path(install(tmp_path / "site", DEMO_PYPROJECT, DEMO_FILES))
    run = dict(task="demo-absolute", depth=2, width=8, density=0.5, n_samples=200, seed=0, dtype="float64")
    half = plantseek.seek(**run, pruner="demo-torch-l1", protocol="demo-halfshot", epochs=2)
    ref = plantseek.seek(**run, pruner="magnitude", protocol="singleshot", epochs=1)
    assert half.config["task"] == "demo-absolute" and half.config["protocol"] == "demo-halfshot"
    assert half.metrics["test_loss"] == pytest.approx(ref.metrics["test_loss"], rel=1e-9)
    assert half.metrics["recall"] == ref.metrics["recall"]


def test_entry_points_in_a_new_process_import_nothing_until_listed(tmp_path):
    site = install(tmp_path / "site", DEMO_PYPROJECT, DEMO_FILES)
    code = ("import sys, plantseek, plantseek.pruners, plantseek.tasks, plantseek.protocols\n"
            "print(sorted(m for m in sys.modules if m.startswith('plantseek_demo')))\n"
            "print('demo-magnitude' in plantseek.pruners.available())")
    out = subprocess.run([sys.executable, "-c", code], env=_env(site), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "True"]
    cli = subprocess.run([sys.executable, "-m", "plantseek", "pruners"], env=_env(site), capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr
    assert "demo-torch-l1" in cli.stdout and "demo-smallest" in cli.stdout


def test_a_broken_plugin_is_a_clear_error_naming_its_entry_point(tmp_path, fresh, monkeypatch, capsys):
    import builtins

    monkeypatch.setattr(builtins, "plantseek_broken_imports", 0, raising=False)
    _on_path(install(tmp_path / "site", BROKEN_PYPROJECT, BROKEN_FILES))
    for _ in range(2):  # every lookup says so; the module is not imported again
        with pytest.raises(plugins.PluginError) as err:
            pruners.available()
        text = str(err.value)
        assert "pruner plugin: entry point 'broken' = 'plantseek_broken_plugin'" in text
        assert "group 'plantseek.pruners', distribution plantseek-broken-plugin 0.2" in text
        assert "RuntimeError: boom: this plugin is broken" in text and "plantseek_broken_plugin/__init__.py:4" in text
        assert plugins.DISABLE_ENV in text
    assert builtins.plantseek_broken_imports == 1
    assert isinstance(err.value, ValueError)
    assert tasks.available()  # other groups are not affected
    capsys.readouterr()
    assert main(["pruners"]) == 2  # one line, no traceback
    err_text = capsys.readouterr().err
    assert err_text.startswith("plantseek pruners: error: pruner plugin: entry point 'broken'")
    assert err_text.count("\n") == 1
    monkeypatch.setenv(plugins.DISABLE_ENV, "1")
    monkeypatch.setattr(pruner_base, "_PLUGINS", plugins.EntryPoints("plantseek.pruners", "pruner", pruner_base._adopt))
    assert "magnitude" in pruners.available()


def test_a_broken_plugin_does_not_break_import_plantseek(tmp_path):
    site = install(tmp_path / "site", BROKEN_PYPROJECT, BROKEN_FILES)
    code = "import plantseek, plantseek.pruners, plantseek.tasks, plantseek.protocols, plantseek.cli; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], env=_env(site), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    cli = subprocess.run([sys.executable, "-m", "plantseek", "pruners"], env=_env(site), capture_output=True,
                         text=True, timeout=120)
    assert cli.returncode == 2 and "entry point 'broken'" in cli.stderr and "Traceback" not in cli.stderr


# ------------------------------------------------------------------------------------------------ --import

PLUG_PRUNER = '''
from plantseek import pruners


@pruners.register("{name}")
class Mine(pruners.ScorePruner):
    """Keep the largest |w| and |b| ({name})."""

    def scores(self, net, data, generator, mask):
        return [(w.abs(), b.abs()) for w, b in zip(net.weights, net.biases)]
'''


def test_import_option_before_or_after_the_command(tmp_path, fresh, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the modules are in the current directory, which is not on sys.path
    (tmp_path / "plug_before.py").write_text(PLUG_PRUNER.format(name="plug-before"))
    (tmp_path / "plug_after.py").write_text(PLUG_PRUNER.format(name="plug-after"))
    (tmp_path / "plug_task.py").write_text(textwrap.dedent(DEMO_FILES["plantseek_demo_plugin/tasks.py"])
                                           .replace("demo-absolute", "plug-absolute"))
    assert main(["--import", "plug_before", "pruners", "--import", "plug_after"]) == 0
    out = capsys.readouterr().out
    assert "plug-before" in out and "plug-after" in out
    assert sys.path[0] == str(tmp_path)
    # imported before the parser is built: plant's --task choices list the imported task
    assert main(["--import", "plug_task", "plant", "--task", "plug-absolute", "--depth", "2", "--width", "4"]) == 0
    assert "ticket_nnz" in capsys.readouterr().out


def test_import_errors_are_one_line_naming_the_module(tmp_path, fresh, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plug_raises.py").write_text("x = 1\nraise RuntimeError('bad plugin')\n")
    (tmp_path / "plug_needs.py").write_text("import plug_missing_dependency\n")
    cases = {
        "plug_nosuch": f"no module named 'plug_nosuch' in {tmp_path} (searched first) or the installed packages",
        "plug_raises": "importing 'plug_raises' failed: RuntimeError: bad plugin (",
        "plug_needs": "importing 'plug_needs' failed: ModuleNotFoundError: No module named 'plug_missing_dependency'",
        "plug_nosuch.py": "give the module's name ('plug_nosuch'), not its file",
    }
    for module, message in cases.items():
        assert main(["--import", module, "pruners"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("plantseek: error: --import: ") and message in err and err.count("\n") == 1, err
    assert main(["--import", "plug_raises", "info"]) == 2
    assert "plug_raises.py:2)" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ sweep files

SWEEP = """
[sweep]
imports = ["{module}"]
tasks = ["relu"]
pruners = ["magnitude", "{pruner}"]
protocols = ["singleshot"]
densities = [0.5, 0.1]
seeds = [0, 1]
depth = 3
width = 12
epochs = 1
n_samples = 200
dtype = "float64"
"""

L1_MODULE = '''
import torch
from torch.nn.utils import prune

from plantseek import pruners


@pruners.from_module(name="{name}")
def torch_l1(module, data, density, generator):
    """torch.nn.utils.prune.global_unstructured with L1Unstructured."""
    params = [(m, n) for m in module.modules() if isinstance(m, torch.nn.Linear) for n in ("weight", "bias")]
    total = sum(getattr(m, n).numel() for m, n in params)
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured,
                              amount=total - pruners.kept_count(density, total))
'''


def test_sweep_imports_find_the_sweep_files_directory_and_the_current_one(tmp_path, fresh, monkeypatch):
    exp, elsewhere = tmp_path / "exp", tmp_path / "elsewhere"
    exp.mkdir(), elsewhere.mkdir()
    (exp / "plug_beside.py").write_text(PLUG_PRUNER.format(name="plug-beside"))
    (elsewhere / "plug_cwd.py").write_text(PLUG_PRUNER.format(name="plug-cwd"))
    monkeypatch.chdir(elsewhere)
    (exp / "a.toml").write_text(SWEEP.format(module="plug_beside", pruner="plug-beside"))
    (exp / "b.toml").write_text(SWEEP.format(module="plug_cwd", pruner="plug-cwd"))
    assert len(load_sweep(exp / "a.toml").runs) == 8  # the module beside the sweep file
    assert len(load_sweep(exp / "b.toml").runs) == 8  # the module in the current directory
    assert plugins.import_paths() == [str(exp), str(elsewhere)]
    (exp / "c.toml").write_text(SWEEP.format(module="plug_nowhere", pruner="plug-beside"))
    with pytest.raises(SweepConfigError, match=r"c.toml: key 'imports': no module named 'plug_nowhere' in .*exp, "
                                               r".*elsewhere \(searched first\)"):
        load_sweep(exp / "c.toml")


def test_the_plantseek_command_finds_the_users_module_as_a_new_user_runs_it(tmp_path):
    """The console script (whose sys.path has neither directory) with --import and with a sweep file."""
    script = Path(sys.executable).with_name("plantseek")
    if not script.exists():
        pytest.skip("no plantseek console script beside this Python")
    (tmp_path / "plug_console.py").write_text(L1_MODULE.format(name="console-torch-l1"))
    (tmp_path / "s.toml").write_text(SWEEP.format(module="plug_console", pruner="console-torch-l1"))
    env = _env()
    seek = subprocess.run([str(script), "--import", "plug_console", "seek", "--task", "relu", "--depth", "3",
                           "--width", "12", "--pruner", "console-torch-l1", "--density", "0.1", "--epochs", "1",
                           "--n-samples", "200"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert seek.returncode == 0, seek.stderr
    assert "console-torch-l1" in seek.stdout and "recall" in seek.stdout
    sweep = subprocess.run([str(script), "sweep", "s.toml", "--db", "r.db", "--no-progress"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert sweep.returncode == 0, sweep.stderr
    with ResultStore(tmp_path / "r.db") as store:
        assert sorted({r["config"]["pruner"] for r in store.records() if r["status"] == "ok"}) == [
            "console-torch-l1", "magnitude"]


# ------------------------------------------------------------------------------------------------ Dask workers

@pytest.fixture(scope="module")
def cluster():
    """Two worker processes started before any plugin module exists (their sys.path has none of its
    directories): what `--executor dask --scheduler tcp://...` meets."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        yield c


def _by_pruner(db: Path) -> dict:
    with ResultStore(db) as store:
        recs = store.records()
    assert recs and all(r["status"] == "ok" for r in recs), [r["error"] for r in recs if r["status"] != "ok"]
    by: dict = {}
    for r in recs:
        c = r["config"]
        by.setdefault((c["density"], c["seed"]), {})[c["pruner"]] = r
    return by


def test_dask_workers_import_the_sweeps_modules_and_run_a_wrapped_pruner(tmp_path, fresh, monkeypatch, cluster,
                                                                          capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plug_dask_l1.py").write_text(L1_MODULE.format(name="dask-torch-l1"))
    (tmp_path / "s.toml").write_text(SWEEP.format(module="plug_dask_l1", pruner="dask-torch-l1"))
    db = tmp_path / "r.db"
    rep = run_sweep(tmp_path / "s.toml", db, executor="dask", scheduler=cluster.scheduler_address, progress=False,
                    log=lambda m: None)
    assert (rep.ok, rep.failed) == (8, 0)
    from distributed import Client

    with Client(cluster) as client:  # the workers imported the module, found in the client's current directory
        seen = client.run(lambda: "plug_dask_l1" in sys.modules and sys.path[0])
    assert list(seen.values()) == [str(tmp_path)] * 2
    by = _by_pruner(db)
    assert len(by) == 4
    for pair in by.values():  # torch's L1 gives magnitude's masks, so the same trained networks
        ours, ref = pair["dask-torch-l1"]["metrics"], pair["magnitude"]["metrics"]
        for key in ("test_loss", "recall", "kept_density"):
            assert ours[key] == pytest.approx(ref[key], rel=1e-9), key
    with ResultStore(db) as store:  # the workers' masks reached the database: torch's L1 masks are magnitude's
        for pair in by.values():
            ours, ref = (store.masks(pair[p]["key"]) for p in ("dask-torch-l1", "magnitude"))
            assert ours is not None and ours == ref
    capsys.readouterr()
    assert main(["results", str(db)]) == 0
    assert "dask-torch-l1" in capsys.readouterr().out
    assert main(["report", str(db), "--out", str(tmp_path / "rep"), "--no-progress", "--no-svg"]) == 0
    assert "dask-torch-l1" in (tmp_path / "rep" / "index.html").read_text()


def test_dask_workers_import_the_commands_import_modules_too(tmp_path, fresh, monkeypatch, cluster):
    """`plantseek --import MODULE sweep ...` with a sweep file that names no imports."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plug_cli_l1.py").write_text(L1_MODULE.format(name="cli-dask-torch-l1"))
    (tmp_path / "s.toml").write_text(SWEEP.format(module="plug_cli_l1", pruner="cli-dask-torch-l1")
                                     .replace('imports = ["plug_cli_l1"]\n', ""))
    assert "imports" not in (tmp_path / "s.toml").read_text()
    assert main(["--import", "plug_cli_l1", "sweep", "s.toml", "--db", "r.db", "--executor", "dask", "--scheduler",
                 cluster.scheduler_address, "--no-progress"]) == 0
    assert len(_by_pruner(tmp_path / "r.db")) == 4
    assert plugins.worker_imports() == []  # only while the command ran


def test_a_module_the_workers_cannot_import_stops_the_dask_sweep_before_any_run(tmp_path, fresh, monkeypatch,
                                                                                  cluster):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plug_gone.py").write_text(L1_MODULE.format(name="gone-torch-l1"))
    (tmp_path / "s.toml").write_text(SWEEP.format(module="plug_gone", pruner="gone-torch-l1"))
    sweep = load_sweep(tmp_path / "s.toml")  # imported here, in the client
    (tmp_path / "plug_gone.py").unlink()  # ... and not importable on the workers
    with pytest.raises(ValueError, match=r"Dask worker on .*: imports: no module named 'plug_gone'"):
        run_sweep(sweep, tmp_path / "r.db", executor="dask", scheduler=cluster.scheduler_address, progress=False,
                  log=lambda m: None)
    if (tmp_path / "r.db").exists():
        with ResultStore(tmp_path / "r.db") as store:
            assert store.records() == []
