"""A challenge any framework can enter: `export` writes planted networks and their data without the ticket
(safetensors or npz, a JSON manifest and a README); `score` reads masks written by any code (NumPy, JAX,
PyTorch), rebuilds the hidden ticket from the seed and runs the ordinary protocol into a results database.
docs/challenge.md says how. Importing this package loads NumPy only; torch comes with `export` and `score`.

``plantseek.challenge.export`` and ``plantseek.challenge.score`` are the functions (their modules are
``plantseek.challenge.export`` / ``.score`` in ``from ... import`` statements)."""
from __future__ import annotations

from .export import export, parse_seeds
from .files import parameter_names, read_arrays, write_arrays
from .manifest import ChallengeError, Manifest, load as load_manifest, run_id
from .score import ScoreReport, SubmittedMask, score

__all__ = ["export", "parse_seeds", "score", "ScoreReport", "SubmittedMask", "load_manifest", "Manifest",
           "ChallengeError", "run_id", "parameter_names", "read_arrays", "write_arrays"]
