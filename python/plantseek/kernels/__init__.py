"""The kernels of plantseek's native core, one module per concept, each holding its dispatchers, their PyTorch
references and its CUDA launchers:

- `plantseek.kernels.scores`: magnitude, |grad x weight| and SynFlow scores, iterative SynFlow, exact top-k;
- `plantseek.kernels.masks`: bit packing and overlap counts (and the CUDA launcher of the reachability counts);
- `plantseek.kernels.planting_search`: the best-matching host neuron for each ticket neuron;
- `plantseek.kernels.sparse_linear`: the sparse masked linear layer (CSR SpMM / SDDMM, feature-major layout);
- `plantseek.kernels.sparse_stack`: the network-major training step of M sparse MLPs.

`plantseek.kernels.checks` holds the argument checks they share: every dispatcher checks its arguments before it
picks a backend (native CPU, CUDA, or the reference; ``PLANTSEEK_NATIVE=0`` forces the reference) and raises
`ArgumentError` naming the bad one. Each concept has one C++ binding file, csrc/bindings/<concept>.cpp, and one
test file, tests/kernels/test_<concept>.py; docs/native.md says how to add a kernel. The package imports only
`checks`: a concept module loads when it is imported.
"""
from .checks import ArgumentError

CONCEPTS = ("scores", "masks", "planting_search", "sparse_linear", "sparse_stack")

__all__ = ["ArgumentError", "CONCEPTS"]
