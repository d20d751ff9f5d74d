"""plantseek: plant known sparse winning tickets in random networks and measure how well pruners find them."""
from __future__ import annotations

__version__ = "0.1.0"

from . import native, tasks, tickets
from .tickets import Ticket
from .planting import PlantedNetwork, load, plant
from .seek import SeekResult, seek, seek_batch  # noqa: E402  (the attribute `seek` is the function)
from .image.planting import PlantedModule, plant_state_dict  # noqa: F401  (image task: conv tickets)

__all__ = ["__version__", "native", "tasks", "tickets", "Ticket", "PlantedNetwork", "plant", "load", "seek", "seek_batch", "SeekResult"]
