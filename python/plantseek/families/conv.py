"""The conv family: VGG-style image networks (the image tasks digits and cifar10) with learned tickets.

- **ticket source**: a learned ticket (`plantseek.image.ticket.learn_ticket`: train a small network of the run's
  ``layout`` at ``ticket_width``, prune it to ``ticket_target_density`` with ``ticket_pruner``, fine-tune),
  cached per (task, data, seed, ticket settings, device, dtype), so that a sweep over seekers, densities and host
  widths trains each small network once;
- **planting**: `plantseek.image.planting.plant_state_dict` into a host of the same layout whose first layer has
  ``width`` channels (every layer scales with it: width 64 on digits is 4x the layout's 16, 16, M, 32, M, head
  64), drawn from ``seed`` by ``init`` ("he-scaled" or "default");
- **training block**: `plantseek.image.training.train_params`, one run after the other (Adam or SGD, masked
  entries stay zero), after the weak protocols' rescale (`plantseek.image.training.rescaled`);
- **protocols**: strong and singleshot (multishot rewinds trained conv networks, which is not built);
- ``depth`` (the layout fixes it), ``n_samples`` (the data set is fixed; ``n_train``/``n_test`` subsample it),
  ``impl`` and a list ``width`` do not apply and are refused when given.
"""
from __future__ import annotations

import os

from .. import spec as _spec
from .. import tasks as _tasks
from ..measure import output_metrics
from .base import LRU, Family, register

_LEARNED = LRU(16)  # learned tickets (small: the small networks' state dicts)

TICKET_KEYS = ("layout", "ticket_width", "ticket_pruner", "ticket_pruner_options", "ticket_target_density",
               "ticket_scope", "ticket_train_epochs", "ticket_finetune_epochs", "ticket_lr", "ticket_batch_size",
               "dtype", "device")


def train_runs(runs, masks, settings, epochs, desc="train", start=None) -> None:
    """The conv family's training block (`plantseek.protocols.Settings.trainer`): each run from its planted
    weights (or `start`) under its mask, rescaled by ``settings.rescale``, trained ``epochs`` epochs; a run that
    fails keeps its error and the others carry on."""
    import time

    from ..image.training import masked, rescaled, train_params

    for k, (r, m) in enumerate(zip(runs, masks)):
        t0 = time.perf_counter()
        try:
            w, b = masked(*(start[k] if start is not None else (r.net.weights, r.net.biases)), m)
            if settings.rescale != "none":
                w, b, g = rescaled(r.net, w, b, r.data.x_train, r.data.y_train, settings.task.kind,
                                   balance=settings.rescale == "fit")
                r.extra["rescale_factor"] = g
            r.weights, r.biases, r.extra["train_loss"] = train_params(
                r.net, w, b, m, r.data.x_train, r.data.y_train, loss=settings.task.loss, epochs=epochs,
                lr=settings.lr, batch_size=settings.batch_size, optimizer=settings.optimizer,
                generator=r.train_generator, progress=settings.progress, desc=f"{desc}: {r.label}")
        except Exception as exc:  # noqa: BLE001 - the protocols' contract: a failing run must not stop the group
            r.error = exc
        r.time_s += time.perf_counter() - t0


@register("conv")
class ConvFamily(Family):
    """VGG-style conv networks with tickets learned by a pruner (the image tasks)."""

    metrics = "image"
    protocols = ("singleshot", "strong")
    trainer = staticmethod(train_runs)

    def why_not(self, protocol):
        if protocol == "multishot":
            return "; multishot (train, prune, rewind) is not built for conv networks"
        if protocol in ("gradual", "dynamic"):
            return f"; {protocol} changes the mask while training, which the conv trainer does not do"
        return ""

    # ---- checks
    def check_more(self, run, task):
        from .. import pruners
        from ..image import models
        from ..image.ticket import channels, first_channels

        flat = run.flat()
        layout = flat["layout"] or task.default_layout
        if layout not in models.available():
            raise ValueError(f"unknown layout {layout!r}; available: {', '.join(models.available())}")
        if isinstance(flat["width"], list):
            raise ValueError(f"task {task.name!r} (the conv family): width must be one integer, the host's "
                             f"first-layer channels (the layout scales with it), got {flat['width']!r}")
        if run.init not in models.INITS:
            raise ValueError(f"task {task.name!r} (the conv family): init must be one of "
                             f"{', '.join(sorted(models.INITS))}, got {run.init!r}")
        name = flat["ticket_pruner"]
        if name not in pruners.available() or name == "ticket":
            allowed = [p for p in pruners.available() if p != "ticket"]
            raise ValueError(f"ticket_pruner must be a registered pruner that finds a ticket (not the oracle), got "
                             f"{name!r}; available: {', '.join(allowed)}")
        small = channels(layout, flat["ticket_width"])
        host = channels(layout, flat["width"] / first_channels(layout))
        if any(h < s for h, s in zip(host, small)):
            w = int(flat["width"])
            while any(h < s for h, s in zip(channels(layout, w / first_channels(layout)), small)):
                w += 1
            raise ValueError(f"width {flat['width']} (the host's first-layer channels) gives a host with channels "
                             f"and units {host}, narrower than the ticket network's {small} (layout {layout!r} at "
                             f"ticket_width {flat['ticket_width']:g}); width must be >= {w}")

    # ---- ticket source, planting and data
    def ticket_key(self, cfg):
        values = tuple(_spec.canonical_json(cfg[k]) if isinstance(cfg[k], dict) else cfg[k] for k in TICKET_KEYS)
        return self.data_key(cfg) + values

    def plant_key(self, cfg):
        return self.ticket_key(cfg) + (cfg["width"], cfg["init"])

    def plant(self, cfg, data):
        from ..image.ticket import learn_ticket, planted

        task, d = _tasks.get(cfg["task"]), data()

        def learn():
            with self.threads([cfg]):
                return learn_ticket(cfg, task, d)

        return planted(cfg, task, _LEARNED.get_or(self.ticket_key(cfg), learn), d)

    def learned(self, cfg):
        """The cached learned ticket of `cfg`, or None when it has not been learned (yet, or any more)."""
        return _LEARNED.get(self.ticket_key(cfg))

    def data_key(self, cfg):
        data_dir = cfg.get("data_dir") or os.environ.get("PLANTSEEK_DATA")
        return (cfg["task"], cfg["noise"], cfg["seed"], cfg["n_train"], cfg["n_test"], data_dir)

    def data(self, cfg, seed):
        return _tasks.get(cfg["task"]).data(noise=cfg["noise"], seed=seed, n_train=cfg["n_train"],
                                            n_test=cfg["n_test"], data_dir=cfg.get("data_dir"))

    # ---- running and reading out
    def forward(self, net, weights, biases, x):
        from ..image.training import outputs

        return outputs(net, weights, biases, x)

    def ticket_metrics(self, task, net, data):
        from ..image.training import predict

        ev = task.evaluate(predict(net.ticket_forward, data.x_test), data.y_test)
        return {"ticket_test_loss": ev["loss"], "ticket_test_accuracy": ev["accuracy"], **net.config.get("story", {})}

    def outputs(self, task, run, scaled):
        m = output_metrics(task, run, scaled, forward=self.forward)
        train = self.forward(run.net, run.weights, run.biases, run.data.x_train)
        m["train_accuracy"] = float((train.argmax(dim=1) == run.data.y_train).double().mean())
        return m

    def check_fits(self, cfg, device, what):
        """The host's parameters counted on the meta device (nothing allocated) against the free memory."""
        import torch

        from ..image import models
        from ..image.ticket import family_kwargs, host_multiplier, layout_of
        from ..memory import check_params_fit

        task = _tasks.get(cfg["task"])
        with torch.device("meta"):
            host = models.vgg(layout_of(cfg, task), host_multiplier(cfg, task), **family_kwargs(task))
        n_params = sum(p.numel() for p in host.parameters())
        check_params_fit(n_params, device, dtype=cfg["dtype"], protocol=cfg["protocol"], what=what,
                         shape=f"layout {layout_of(cfg, task)!r} at width {cfg['width']}")

    def threads(self, cfgs):
        # one thread on the CPU unless PLANTSEEK_TRAIN_THREADS says otherwise: measured on the 2-core development
        # machine while other jobs ran, one epoch of the small digits network took 0.9 s on one thread and 5 to
        # 44 s on two (OpenMP threads waiting on busy cores); batches of 32 small images are too little to split
        from ..threads import cpu_threads_for

        return cpu_threads_for(0, cfgs[0]["device"])

    def clear_caches(self):
        _LEARNED.clear()
