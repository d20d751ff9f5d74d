"""Learned tickets: the conv family's ticket source (the Plant 'n' Seek paper's fourth experiment).

`learn_ticket` trains a small VGG-style network (`models.build`, the layout at ``ticket_width``) on the task,
prunes it to ``ticket_target_density`` with a registered pruner (``ticket_pruner`` with its options and
``ticket_scope``) and fine-tunes the kept weights: the result, exact zeros where pruned, is the ticket that the
conv family plants (`plantseek.image.planting.plant_state_dict`) as the MLP family plants a built one.

Randomness: the small network's initialisation, its pruner and its training shuffles have their own streams
derived from the run's seed (`plantseek.seek.derive_seed`: "ticket-init", "ticket-prune", "ticket-train").
Training runs on the run's device in its dtype, so a learned ticket depends on both (its cache key has them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from . import models
from .planting import ConvNetwork
from .training import masked, outputs, train_params


@dataclass
class LearnedTicket:
    """A ticket found by a pruner in a trained small network, with the story of how it was found."""

    state_dict: dict  # the small network's state dict (float64, CPU), zeros where pruned
    mask: list  # the pruner's mask on the small network
    story: dict  # small_dense_test_accuracy, ticket_pruned_test_accuracy, ticket_small_test_accuracy, ...

    @property
    def nnz(self) -> int:
        return int(self.story["ticket_nnz"])


def layout_of(cfg: dict, task) -> str:
    """The run's layout name: ``layout``, else the task's ``default_layout``."""
    return cfg.get("layout") or task.default_layout


def family_kwargs(task) -> dict:
    """`models.vgg`'s keywords for a task's images and classes."""
    c, h, w = task.input_shape
    return dict(in_channels=c, num_classes=task.output_dim, image_size=(h, w))


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == y).double().mean())


def learn_ticket(cfg: dict, task, data) -> LearnedTicket:
    """Train, prune and fine-tune the small network of configuration ``cfg`` (flat `plantseek.seek` options) on
    ``data`` (CPU, float64); runs on ``cfg["device"]`` in ``cfg["dtype"]``."""
    from .. import pruners
    from ..device import resolve_device, resolve_dtype
    from ..seek import derive_seed

    device, dtype = resolve_device(cfg["device"]), resolve_dtype(cfg["dtype"])
    layout = layout_of(cfg, task)
    seed, progress = cfg["seed"], bool(cfg.get("progress"))
    small = models.build(layout, cfg["ticket_width"], seed=derive_seed(seed, "ticket-init"), init="default",
                         **family_kwargs(task)).to(device=device, dtype=dtype)
    net = ConvNetwork(small, task.input_shape)
    d = data.to(device, dtype)
    gen = torch.Generator().manual_seed(derive_seed(seed, "ticket-train"))
    recipe = dict(loss=task.loss, lr=cfg["ticket_lr"], batch_size=cfg["ticket_batch_size"], optimizer="adam",
                  generator=gen, progress=progress)
    w, b, _ = train_params(net, net.weights, net.biases, None, d.x_train, d.y_train,
                           epochs=cfg["ticket_train_epochs"], desc="train small network", **recipe)
    dense_acc = _accuracy(outputs(net, w, b, d.x_test), d.y_test)
    trained = ConvNetwork(_loaded(small, w, b), task.input_shape)
    pruner = pruners.get(cfg["ticket_pruner"], **dict(cfg["ticket_pruner_options"]))
    g_prune = torch.Generator(device=device).manual_seed(derive_seed(seed, "ticket-prune"))
    mask = pruner.prune(trained, d, float(cfg["ticket_target_density"]), scope=cfg["ticket_scope"], generator=g_prune)
    pruned_acc = _accuracy(outputs(trained, *masked(w, b, mask), d.x_test), d.y_test)
    w, b, _ = train_params(trained, w, b, mask, d.x_train, d.y_train, epochs=cfg["ticket_finetune_epochs"],
                           desc="fine-tune ticket", **recipe)
    ticket_acc = _accuracy(outputs(trained, w, b, d.x_test), d.y_test)
    state = {k: v.detach().to("cpu", torch.float64).clone() for k, v in _loaded(small, w, b).state_dict().items()}
    n = sum(v.numel() for v in state.values())
    nnz = sum(int((v != 0).sum()) for v in state.values())
    story = {"small_dense_test_accuracy": dense_acc, "ticket_pruned_test_accuracy": pruned_acc,
             "ticket_small_test_accuracy": ticket_acc, "ticket_nnz": nnz, "ticket_small_density": nnz / n}
    return LearnedTicket(state, [(wm.cpu(), bm.cpu()) for wm, bm in mask], story)


def _loaded(module: torch.nn.Module, weights, biases) -> torch.nn.Module:
    """``module`` with its Conv2d/Linear parameters set to ``weights``/``biases`` (in place; returned)."""
    layers = [m for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        for m, w, b in zip(layers, weights, biases):
            m.weight.copy_(w)
            m.bias.copy_(b)
    return module


def planted(cfg: dict, task, ticket: LearnedTicket, data) -> Any:
    """The learned ticket planted into the run's host (`host_channels`) drawn from the run's seed by its init,
    on the CPU in float64, with the ticket's story, ``planting_exactness`` (max relative error of the masked host
    against ``output_scale`` x the ticket on up to 256 test images) and ``host_params`` in ``config["story"]``."""
    from .planting import plant_state_dict

    host = models.vgg(layout_of(cfg, task), host_multiplier(cfg, task), **family_kwargs(task))
    net = plant_state_dict(ticket.state_dict, host, seed=cfg["seed"], init=cfg["init"], input_shape=task.input_shape)
    x = data.x_test[:256]
    ref = net.output_scale * net.ticket_forward(x)
    got = net.forward(x, net.ticket_mask)
    exact = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-300))
    net.config["story"] = {**ticket.story, "planting_exactness": exact, "host_params": int(net.n_params)}
    return net


# ------------------------------------------------------------------------------------------------ shapes

def first_channels(layout: str) -> int:
    """The channels of a layout's first layer at width 1 (what ``width`` counts for conv tasks)."""
    items, _ = models._check_layout(layout)
    return int(next(i for i in items if isinstance(i, int)))


def host_multiplier(cfg: dict, task) -> float:
    """The host's width multiplier: ``width`` (the host's first-layer channels) over the layout's first layer."""
    return float(cfg["width"]) / first_channels(layout_of(cfg, task))


def channels(layout: str, width: float) -> list[int]:
    """Output channels / units of every hidden Conv2d/Linear layer of `models.vgg(layout, width)`."""
    items, head = models._check_layout(layout)
    return [models.scaled(i, width) for i in items if isinstance(i, int)] + [models.scaled(h, width) for h in head or []]
