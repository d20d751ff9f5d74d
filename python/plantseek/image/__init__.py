"""The image task: a sparse convolutional ticket found by pruning a trained small VGG-style network, planted
into a wider randomly initialised network of the same family, and sought again (DESIGN.md, "image"). The conv
network family (`plantseek.families.conv`) runs it through `plantseek.seek`; `run_image_ticket` is the
experiment's front end."""
from .models import build, vgg
from .planting import ConvNetwork, PlantedModule, fold_batch_norm, plant_state_dict

__all__ = ["build", "vgg", "ConvNetwork", "PlantedModule", "fold_batch_norm", "plant_state_dict",
           "ImageTicketConfig", "run_image_ticket"]


def __getattr__(name: str):  # PEP 562: the experiment's front end loads the seeking code only when asked for
    if name in ("ImageTicketConfig", "run_image_ticket"):
        from . import experiment

        return getattr(experiment, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
