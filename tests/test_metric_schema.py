"""The metric schema: one declaration of every metric, what real runs emit against it, legacy names, the CLI."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from plantseek import metric_schema as schema
from plantseek.store import CONFIG_COLUMNS, ResultStore, RunRecord, summary_table, to_dataframe

FAST = dict(depth=3, width=30, n_samples=400, epochs=1, rounds=2, round_epochs=1, progress=False, device="cpu")


# ------------------------------------------------------------------------------------------------ the registry

def test_every_declaration_is_well_formed():
    names = [m.name for m in schema.METRICS]
    assert len(names) == len(set(names))
    for i, m in enumerate(schema.METRICS):
        assert m.order == i and m.kind in schema.KINDS, m
        assert set(m.protocols) <= set(schema.PROTOCOLS) and m.protocols, m
        assert set(m.families) <= set(schema.FAMILIES) and m.families, m
        assert set(m.requires) <= set(schema.CONDITIONS), m
        assert m.doc and "\n" not in m.doc and m.doc == m.doc.strip(), m
        assert m.per_layer == ("{i}" in m.name) and m.optional == bool(m.requires)
        assert schema.lookup(m.name) is m and schema.get(schema.expand(m, 3)[-1]) is m
    bookkeeping = [c.name for c in schema.BOOKKEEPING_COLUMNS]
    assert schema.BOOKKEEPING == tuple(bookkeeping) and not set(bookkeeping) & set(names)
    assert schema.headline() == ["kept_density", "test_accuracy", "test_loss", "recall", "functional_recall"]


def test_the_protocols_are_the_registered_ones():
    from plantseek import protocols

    assert set(schema.PROTOCOLS) <= set(protocols.available())


def test_no_metric_is_named_like_a_configuration_key():
    """`density` is the configuration key (the density asked for); the kept fraction is `kept_density`."""
    from plantseek import spec

    config = set(CONFIG_COLUMNS) | set(spec.defaults())  # the image experiment's rows: in its own test
    declared = {m.name for m in schema.METRICS}
    assert "density" in config and "kept_density" in declared
    assert not declared & config
    assert not any(schema.is_declared(c) for c in config)


def test_lookup_expand_order_and_headline():
    assert schema.get("recall_layer_12").name == "recall_layer_{i}"
    assert schema.get("output_scale_fitted_2").name == "output_scale_fitted_{k}"
    assert schema.lookup("recall_3") is None and schema.lookup("density") is None
    with pytest.raises(KeyError, match="plantseek metrics"):
        schema.get("density")
    assert schema.expand("recall_layer_{i}", 3) == ["recall_layer_0", "recall_layer_1", "recall_layer_2"]
    assert schema.expand("recall", 3) == ["recall"]
    cols = ["zz_2", "recall_layer_10", "my_metric", "recall_layer_2", "test_loss", "kept_density", "zz_10"]
    assert schema.order(cols) == ["kept_density", "test_loss", "recall_layer_2", "recall_layer_10", "my_metric",
                                  "zz_2", "zz_10"]
    assert schema.headline(["recall", "test_loss", "x"]) == ["test_loss", "recall"]
    assert schema.performance(["test_loss", "test_accuracy"]) == "test_accuracy"
    assert schema.performance(["test_loss"]) == "test_loss" and schema.performance(["recall"]) is None


def test_expected_follows_protocol_family_and_conditions():
    weak = set(schema.expected("singleshot", kind="classification", n_layers=2))
    strong = set(schema.expected("strong", kind="regression", n_layers=2, n_outputs=3, dense_baseline=False))
    assert {"test_accuracy", "train_loss", "rescale_factor", "dense_test_accuracy", "recall_layer_1"} <= weak
    assert not {"test_loss_rescaled", "output_scale_fitted", "recall_layer_2", "train_accuracy"} & weak
    assert {"test_loss_rescaled", "output_scale_fitted", "output_scale_fitted_2", "functional_recall"} <= strong
    assert not {"test_accuracy", "train_loss", "dense_test_loss", "dense_epochs"} & strong
    image = set(schema.expected("strong", "image", kind="classification", n_layers=5))
    assert {"train_accuracy", "planting_exactness", "layer_collapse", "recall_layer_4"} <= image
    assert not {"functional_recall", "effective_density", "dead_neurons"} & image


# ------------------------------------------------------------------------------------------------ producers

def _check_against_schema(metrics: dict, expected: list[str]) -> None:
    undeclared = sorted(k for k in metrics if not schema.is_declared(k))
    assert not undeclared, f"emitted but not declared in plantseek.metric_schema: {undeclared}"
    missing = sorted(set(expected) - set(metrics))
    assert not missing, f"declared but missing: {missing}"


@pytest.mark.parametrize("task,protocol,pruner,options", [
    ("circle", "singleshot", "synflow", {}),
    ("relu", "multishot", "magnitude", {"dense_baseline": False, "rescale": "none"}),
    ("helix", "strong", "edge-popup", {"pruner_options": {"epochs": 1}}),
])
def test_every_key_a_seek_run_emits_is_declared_and_none_is_missing(task, protocol, pruner, options):
    from plantseek import seek, tasks

    r = seek(task=task, protocol=protocol, pruner=pruner, density=0.3, **FAST, **options)
    t = tasks.get(task)
    expected = schema.expected(protocol, "mlp", kind="classification" if t.kind == "classification" else "regression",
                               n_layers=FAST["depth"], n_outputs=t.output_dim,
                               dense_baseline=options.get("dense_baseline", True),
                               rescale=options.get("rescale", "fit") != "none")
    _check_against_schema(r.metrics, expected)
    assert list(r.metrics) == schema.order(r.metrics)  # measure returns them in the schema's order
    assert "density" not in r.metrics and r.config["density"] == 0.3


def test_every_key_the_image_experiment_emits_is_declared_and_none_is_missing(tmp_path):
    from plantseek.image.experiment import run_image_ticket

    res = run_image_ticket(task="digits", ticket_pruner="magnitude", ticket_density=0.2, host_width=2, n_train=200,
                           train_epochs=1, finetune_epochs=1, seeker_options={"epochs": 1}, densities=["ticket"],
                           device="cpu", progress=False, threads=1, db=str(tmp_path / "r.db"))
    n_layers = len(res.planted.ticket_mask)
    expected = schema.expected("strong", "image", kind="classification", n_layers=n_layers)
    for row in res.rows:
        _check_against_schema(row["metrics"], expected)
        assert "time_s" not in row["metrics"] and "density" not in row["metrics"]
        assert not set(row["metrics"]) & set(row["config"])  # no metric is named like a configuration key
    assert all(r["kept_density"] is not None and r["train_time_s"] > 0 for r in res.table())
    with ResultStore(tmp_path / "r.db") as store:
        recs = store.records()
    # the rows are stored as every sweep run is (the image experiment's own writer is gone): keyed by their spec,
    # the record's duration is its batch's wall time, of which the run's train_time_s is its share
    from plantseek.spec import run_key

    assert all(r["status"] == "ok" and r["key"] == run_key(r["config"]) for r in recs)
    assert all(0 < r["metrics"]["train_time_s"] <= r["duration_s"] for r in recs)


def test_one_layer_collapse_rule_for_mlp_and_conv_masks():
    from plantseek import metrics
    from plantseek.measure import mask_metrics

    class Net:  # what mask_metrics reads of a planted network
        ticket_density, ticket_weight_density = 0.1, 0.1

        def __init__(self, mask):
            self.ticket_mask = mask

    conv = [(torch.ones(2, 1, 3, 3, dtype=torch.bool), torch.ones(2, dtype=torch.bool)),
            (torch.zeros(3, 8, dtype=torch.bool), torch.ones(3, dtype=torch.bool))]
    mlp = [(torch.ones(4, 2, dtype=torch.bool), torch.ones(4, dtype=torch.bool)),
           (torch.zeros(3, 4, dtype=torch.bool), torch.ones(3, dtype=torch.bool))]
    for mask in (conv, mlp):
        m = mask_metrics(mask, Net(mask))
        assert m["layer_collapse"] is True and metrics.layer_collapse(mask) is True
    assert "effective_density" in mask_metrics(mlp, Net(mlp))
    assert "effective_density" not in mask_metrics(conv, Net(conv))
    assert metrics.connectivity(mlp)["layer_collapse"] is True  # the same rule, from the reachability pass


def test_measure_refuses_an_undeclared_metric():
    from plantseek.measure import measure

    class Net:
        hiding, output_scale = {"median_percentile": 0.5}, 1e-3

    m = measure(Net(), outputs={"test_loss": 1.0}, masks={"kept_density": 0.1}, ticket={}, requested_density=0.1,
                time_s=0.5)
    assert m["train_time_s"] == 0.5 and list(m) == schema.order(m)
    with pytest.raises(ValueError, match="not_a_metric.*plantseek.metric_schema"):
        measure(Net(), outputs={"not_a_metric": 1.0}, masks={}, ticket={}, requested_density=0.1, time_s=0.0)


def test_the_fake_seeker_emits_what_the_schema_expects():
    from sweep_fake import fake_metrics

    for task, protocol, n_out in (("circle", "singleshot", 4), ("relu", "multishot", 1), ("helix", "strong", 3)):
        kw = dict(task=task, depth=3, width=30, pruner="synflow", density=0.1, protocol=protocol, seed=0)
        kind = "classification" if task == "circle" else "regression"
        m = fake_metrics(kw)
        assert sorted(m) == sorted(schema.expected(protocol, kind=kind, n_layers=3, n_outputs=n_out))


# ------------------------------------------------------------------------------------------------ legacy names

def test_records_of_old_databases_read_the_kept_density(tmp_path):
    """Databases written before the rename store the kept fraction as `density` (and the image experiment's
    time as `time_s`): they are read under today's names."""
    db = tmp_path / "old.db"
    cfg = {"task": "circle", "pruner": "random", "protocol": "singleshot", "density": 0.1, "seed": 0, "depth": 3,
           "width": 20}
    with ResultStore(db) as store:
        store.put(RunRecord(key="k", config=cfg, status="ok", version="0",
                            metrics={"density": 0.0998, "time_s": 2.5, "test_loss": 0.3, "recall": 0.2}))
        (rec,) = store.records()
    assert rec["metrics"] == {"kept_density": 0.0998, "train_time_s": 2.5, "test_loss": 0.3, "recall": 0.2}
    assert rec["config"]["density"] == 0.1
    df = to_dataframe([rec])
    assert df.loc[0, "kept_density"] == 0.0998 and df.loc[0, "density"] == 0.1
    assert "density_measured" not in df.columns
    summary = summary_table(df)
    assert summary.loc[0, "kept_density"] == pytest.approx(0.0998) and summary.loc[0, "test_loss"] == 0.3
    assert schema.upgrade({"density": 1.0, "kept_density": 0.5}) == {"density": 1.0, "kept_density": 0.5}


def test_old_exported_csvs_read_the_kept_density(tmp_path):
    from plantseek.report.findings import load_rows

    rows = [{"task": "circle", "pruner": "p", "protocol": "singleshot", "density": 0.1, "seed": s, "depth": 2,
             "width": 10, "density_measured": 0.099, "test_accuracy": 0.9, "status": "ok"} for s in range(2)]
    pd.DataFrame(rows).to_csv(tmp_path / "old.csv", index=False)
    df, config_cols = load_rows(tmp_path / "old.csv")
    assert "kept_density" in df and "density_measured" not in df and "kept_density" not in config_cols
    assert (df["x"] == 0.099).all() and "density" in config_cols


# ------------------------------------------------------------------------------------------------ CLI

def test_cli_lists_the_schema(capsys):
    from plantseek.cli import main

    assert main(["metrics"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["name", "per-layer", "unit", "protocols", "doc"]
    listed = [line.split()[0] for line in lines[1:]]
    assert listed == [m.name for m in schema.METRICS]
    assert "recall_layer_{i}  yes" in out and "train_time_s" in out and json.dumps(schema.table())
