"""The MLP family: the synthetic tasks' built tickets planted into fully connected hosts (`plantseek.plant`),
trained by the batched native trainer of `plantseek.protocols` (`batched_train_runs`), read out by
`plantseek.measure`. This is the path `plantseek.seek` always had; the family only names its parts."""
from __future__ import annotations

from .. import protocols as _protocols
from .. import tasks as _tasks
from .. import threads as _threads
from .. import train as _train
from ..measure import functional_metrics, output_metrics
from .base import Family, register

_CACHE_MAX_PARAMS = 4_000_000  # planted networks larger than this are not kept in memory


def width_key(width):
    return tuple(width) if isinstance(width, list) else width


def layer_sizes(cfg: dict) -> list[int]:
    task = _tasks.get(cfg["task"])
    width = cfg["width"]
    widths = [int(v) for v in (width if isinstance(width, list) else [width] * (cfg["depth"] - 1))]
    return [task.input_dim] + widths + [task.output_dim]


@register("mlp")
class MLPFamily(Family):
    """Fully connected ReLU networks with built tickets (relu, circle, helix, a user's task)."""

    metrics = "mlp"
    trainer = staticmethod(_protocols.batched_train_runs)

    def check_more(self, run, task):
        from .. import host_init

        if run.depth < task.min_depth:
            raise ValueError(f"task {task.name!r} needs depth >= {task.min_depth} (got {run.depth})")
        if run.init not in host_init.available():
            raise ValueError(f"unknown init {run.init!r}; available: {', '.join(host_init.available())}")

    def plant_key(self, cfg):
        return (cfg["task"], cfg["depth"], width_key(cfg["width"]), cfg["seed"], cfg["init"])

    def plant(self, cfg, data):
        from ..planting import plant

        return plant(cfg["task"], width=cfg["width"], depth=cfg["depth"], seed=cfg["seed"], init=cfg["init"],
                     device="cpu")

    def cacheable(self, cfg):
        full = layer_sizes(cfg)
        return sum(a * b + b for a, b in zip(full[:-1], full[1:])) <= _CACHE_MAX_PARAMS

    def data_key(self, cfg):
        return (cfg["task"], cfg["n_samples"], cfg["noise"], cfg["seed"])

    def data(self, cfg, seed):
        return _tasks.get(cfg["task"]).data(cfg["n_samples"], cfg["noise"], seed)

    def forward(self, net, weights, biases, x):
        return _train.evaluate_outputs([w.unsqueeze(0) for w in weights], [b.unsqueeze(0) for b in biases],
                                       x.unsqueeze(0))[0]

    def ticket_metrics(self, task, net, data):
        ev = task.evaluate(net.ticket.forward(data.x_test), data.y_test)
        out = {"ticket_test_loss": ev["loss"]}
        if "accuracy" in ev:
            out["ticket_test_accuracy"] = ev["accuracy"]
        return out

    def outputs(self, task, run, scaled):
        return output_metrics(task, run, scaled)

    def functional(self, run):
        return functional_metrics(run.weights, run.biases, run.net, run.data.x_test)

    def check_fits(self, cfg, device, what):
        # a run that cannot fit is refused before planting allocates anything (PLANTSEEK_SKIP_MEMORY_CHECK=1: run it)
        from ..memory import check_fits

        check_fits(cfg, device, what=what)

    def threads(self, cfgs):
        """One CPU thread for small groups (see `plantseek.threads.cpu_threads_for`)."""
        c0 = cfgs[0]
        full = layer_sizes(c0)
        work = len(cfgs) * c0["batch_size"] * sum(a * b for a, b in zip(full[:-1], full[1:]))
        return _threads.cpu_threads_for(work, c0["device"])
