"""The image task: a sparse convolutional ticket found by pruning a trained small VGG-style network, planted
into a wider randomly initialised network of the same family, and sought again (DESIGN.md, "image")."""
from .models import build, vgg
from .planting import ConvNetwork, PlantedModule, fold_batch_norm, plant_state_dict

__all__ = ["build", "vgg", "ConvNetwork", "PlantedModule", "fold_batch_norm", "plant_state_dict"]
