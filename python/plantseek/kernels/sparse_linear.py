"""Sparse masked linear: ``x @ (weight * weight_mask).T + bias * bias_mask`` on CSR kernels for extreme sparsity
(dispatchers, PyTorch references and CUDA launchers side by side).

`masked_linear(x, weight, weight_mask, bias, bias_mask)` computes ``x @ (weight * weight_mask).T +
bias * bias_mask`` and is differentiable in x, weight and bias; the gradients of weight and bias are zero
wherever their mask is False. Two implementations compute it:

- **dense**: the formula above with PyTorch ops (`masked_linear_reference`, also the reference of the sparse
  path);
- **sparse**: the native kernels of `plantseek._C` (CPU) or `plantseek._C_cuda` (CUDA tensors): the kept
  weights are held in CSR (rebuilt only when the mask changes; their values are gathered from the dense
  weight at every call, so optimiser updates of the dense weight are seen), the forward pass is an SpMM,
  grad_x an SpMM with the transpose, grad_weight an SDDMM at the kept positions only and grad_bias a sum
  over the batch.

``impl="auto"`` takes the sparse path when a native module serves the device and the mask's density is
below `crossover_density()` (measured on the development machine, see ``docs/native.md``; override with
the environment variable ``PLANTSEEK_SPARSE_CROSSOVER``, e.g. ``0`` = always dense, ``1.01`` = always
sparse). On CUDA tensors "auto" stays dense unless ``PLANTSEEK_SPARSE_CROSSOVER_CUDA`` is set (no GPU crossover
measured yet). ``PLANTSEEK_NATIVE=0`` forces the references everywhere.

Both unbatched and batched forms are supported:

- weight ``(out, in)``, mask ``(out, in)``, bias ``(out,)``, x ``(..., in)`` -> ``(..., out)``;
- weight ``(M, out, in)``, mask ``(M, out, in)``, bias ``(M, out)``, x ``(M, B, in)`` -> ``(M, B, out)``:
  M independent networks of one shape, as the batched trainer uses them.

For trainers that keep only the kept weights as parameters: `sparse_linear` (row-major) and `sparse_linear_fm`
(feature-major, bias and ReLU fused; `to_feature_major` / `from_feature_major`), each with a ``*_reference``.
Arguments are checked by the dispatchers alike for every backend (ArgumentError naming the argument); the
layer `plantseek.sparse_layers.MaskedLinear` wraps `masked_linear` as a torch module.

C++: csrc/sparse_linear.{h,cpp}, csrc/bindings/sparse_linear.cpp, csrc/cuda/sparse_linear_cuda.{h,cu},
csrc/cuda/bindings/sparse_linear.cpp. Tests: tests/kernels/test_sparse_linear.py.
"""
from __future__ import annotations

import math
import os
import weakref
from dataclasses import dataclass

import torch

from .. import native
from .checks import ArgumentError

# dispatcher -> its reference (tests/kernels/test_layout.py checks every concept module has such pairs)
KERNELS = {"masked_linear": "masked_linear_reference", "sparse_linear": "sparse_linear_reference",
           "sparse_linear_fm": "sparse_linear_fm_reference", "to_feature_major": "to_feature_major_reference",
           "from_feature_major": "from_feature_major_reference", "build_structure": "build_structure_reference"}

# Density below which impl="auto" uses the sparse kernels. Measured with `python bench/bench_kernels.py
# --threads 1` on the development machine (AMD EPYC Zen 4, torch 2.13 CPU, float32, batch 256, square
# layers, forward + backward with the dense weight gradient): the sparse path became slower than the dense
# one between densities 0.3 and 0.4 at width 1024 and between 0.2 and 0.3 at width 4096 (bench/RESULTS.md).
SPARSE_CROSSOVER_DENSITY = 0.25

IMPLS = ("auto", "sparse", "dense")


# On CUDA devices "auto" stays dense: the CUDA kernels are unit-tested where a GPU exists, but no crossover
# has been measured on a GPU yet (cuBLAS makes the dense path far cheaper there). Set
# PLANTSEEK_SPARSE_CROSSOVER_CUDA to a measured density to enable it, or pass impl="sparse".
CUDA_SPARSE_CROSSOVER_DENSITY = 0.0


def crossover_density(device: str | torch.device = "cpu") -> float:
    """Density below which ``impl="auto"`` picks the sparse path on ``device``'s type.

    CPU: `SPARSE_CROSSOVER_DENSITY` (env ``PLANTSEEK_SPARSE_CROSSOVER``); CUDA:
    `CUDA_SPARSE_CROSSOVER_DENSITY` (env ``PLANTSEEK_SPARSE_CROSSOVER_CUDA``).
    """
    kind = device.type if isinstance(device, torch.device) else str(device).split(":")[0]
    if kind == "cuda":
        return _env_density("PLANTSEEK_SPARSE_CROSSOVER_CUDA", CUDA_SPARSE_CROSSOVER_DENSITY)
    return _env_density("PLANTSEEK_SPARSE_CROSSOVER", SPARSE_CROSSOVER_DENSITY)


def _env_density(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {value!r}") from exc


# --------------------------------------------------------------------------------------------- structure


@dataclass
class CsrStructure:
    """CSR (and CSC) index structure of a stacked (M, out, in) mask, on the mask's device (int64).

    Rows are r = m * out + j; ``pos[e]`` is the flat index of CSR entry e in the (M, out, in) weight.
    The CSC structure has rows c = m * in + i with entries ``csc_rows[e']`` (= j) and ``csc_perm[e']``
    (the CSR entry it holds). ``rows[e]`` is the row of CSR entry e (used by the CUDA SDDMM).
    """

    M: int
    n_out: int
    n_in: int
    indptr: torch.Tensor
    cols: torch.Tensor
    rows: torch.Tensor
    pos: torch.Tensor
    csc_indptr: torch.Tensor
    csc_rows: torch.Tensor
    csc_perm: torch.Tensor

    @property
    def nnz(self) -> int:
        return int(self.cols.numel())


def build_structure(mask: torch.Tensor) -> CsrStructure:
    """CSR and CSC structure of a bool mask of shape (M, out, in) (no caching): one native pass over a CPU mask
    (`plantseek._C.csr_structure`), `build_structure_reference` elsewhere."""
    _check_structure_mask(mask)
    ext = native.cpu_module() if mask.device.type == "cpu" else None
    if ext is None or not hasattr(ext, "csr_structure"):
        return build_structure_reference(mask)
    M, n_out, n_in = (int(s) for s in mask.shape)
    arrays = [torch.from_numpy(a) for a in ext.csr_structure(_np(mask))]
    return CsrStructure(M, n_out, n_in, *arrays)


def _check_structure_mask(mask) -> None:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise ArgumentError(f"weight_mask must be a bool tensor, got "
                            f"{mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__}")
    if mask.dim() != 3:
        raise ArgumentError(f"expected a (M, out, in) mask, got shape {tuple(mask.shape)}")


def build_structure_reference(mask: torch.Tensor) -> CsrStructure:
    """`build_structure` in PyTorch operations (the reference of the native builder; any device)."""
    _check_structure_mask(mask)
    M, n_out, n_in = (int(s) for s in mask.shape)
    dev = mask.device
    flat = mask.reshape(M * n_out, n_in)
    nz = flat.nonzero()
    rows, cols = nz[:, 0].contiguous(), nz[:, 1].contiguous()
    counts = torch.bincount(rows, minlength=M * n_out)
    indptr = torch.zeros(M * n_out + 1, dtype=torch.int64, device=dev)
    torch.cumsum(counts, 0, out=indptr[1:])
    pos = rows * n_in + cols
    m = torch.div(rows, n_out, rounding_mode="floor")
    j = rows - m * n_out
    csc_row_of_entry = m * n_in + cols  # CSC row (network, input) of each CSR entry
    key = csc_row_of_entry * max(n_out, 1) + j
    csc_perm = torch.sort(key, stable=True).indices
    csc_rows = j[csc_perm].contiguous()
    csc_counts = torch.bincount(csc_row_of_entry, minlength=M * n_in)
    csc_indptr = torch.zeros(M * n_in + 1, dtype=torch.int64, device=dev)
    torch.cumsum(csc_counts, 0, out=csc_indptr[1:])
    return CsrStructure(M, n_out, n_in, indptr, cols, rows, pos, csc_indptr, csc_rows, csc_perm.contiguous())


class _MaskCache:
    """Per-mask-tensor cache of derived data, invalidated when the tensor is modified in place."""

    def __init__(self, limit: int = 64):
        self._entries: dict[int, tuple] = {}
        self._limit = limit

    def get(self, mask: torch.Tensor, kind: str, make):
        key = (id(mask), kind)
        stamp = (mask._version, mask.data_ptr(), tuple(mask.shape), mask.device)
        entry = self._entries.get(key)
        if entry is not None:
            ref, old_stamp, value = entry
            if ref() is mask and old_stamp == stamp:
                return value
        value = make()
        if len(self._entries) >= self._limit:
            self._entries = {k: v for k, v in self._entries.items() if v[0]() is not None}
            while len(self._entries) >= self._limit:
                self._entries.pop(next(iter(self._entries)))
        self._entries[key] = (weakref.ref(mask), stamp, value)
        return value


_cache = _MaskCache()


def mask_structure(mask: torch.Tensor) -> CsrStructure:
    """The cached CSR structure of a (M, out, in) or (out, in) bool mask (rebuilt when the mask changes)."""
    return _cache.get(mask, "csr", lambda: build_structure(mask if mask.dim() == 3 else mask.unsqueeze(0)))


def mask_density(mask: torch.Tensor) -> float:
    """Fraction of True entries (cached per mask version)."""
    if mask.numel() == 0:
        return 0.0
    return _cache.get(mask, "density", lambda: float(mask.sum()) / mask.numel())


# --------------------------------------------------------------------------------------------- functional


def masked_linear_reference(x, weight, weight_mask, bias=None, bias_mask=None):
    """Dense masked PyTorch formula (the reference of the sparse path); same shapes and checks as
    `masked_linear`."""
    _check_args(x, weight, weight_mask, bias, bias_mask, "dense")
    return _masked_linear_torch(x, weight, weight_mask, bias, bias_mask)


def _masked_linear_torch(x, weight, weight_mask, bias, bias_mask):
    w = weight * weight_mask
    b = None if bias is None else (bias if bias_mask is None else bias * bias_mask)
    if weight.dim() == 3:
        y = torch.matmul(x, w.transpose(1, 2))
        return y if b is None else y + b.unsqueeze(1)
    y = torch.matmul(x, w.t())
    return y if b is None else y + b


def _check_args(x, weight, weight_mask, bias, bias_mask, impl):
    if impl not in IMPLS:
        raise ArgumentError(f"impl must be one of {IMPLS}, got {impl!r}")
    for name, t in (("x", x), ("weight", weight), ("weight_mask", weight_mask)):
        if not isinstance(t, torch.Tensor):
            raise ArgumentError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if weight.dim() not in (2, 3):
        raise ArgumentError(f"weight must be (out, in) or (M, out, in), got shape {tuple(weight.shape)}")
    if weight_mask.shape != weight.shape:
        raise ArgumentError(f"weight_mask shape {tuple(weight_mask.shape)} != weight shape {tuple(weight.shape)}")
    if weight_mask.dtype != torch.bool:
        raise ArgumentError(f"weight_mask must be a bool tensor, got {weight_mask.dtype}")
    if not weight.is_floating_point():
        raise ArgumentError(f"weight must be a floating-point tensor, got {weight.dtype}")
    if x.dtype != weight.dtype:
        raise ArgumentError(f"x has dtype {x.dtype} but weight has {weight.dtype}")
    out_shape = weight.shape[:-1]
    if bias is not None:
        if tuple(bias.shape) != tuple(out_shape):
            raise ArgumentError(f"bias must have shape {tuple(out_shape)}, got {tuple(bias.shape)}")
        if bias.dtype != weight.dtype:
            raise ArgumentError(f"bias has dtype {bias.dtype} but weight has {weight.dtype}")
    if bias_mask is not None:
        if bias is None:
            raise ArgumentError("bias_mask given without bias")
        if tuple(bias_mask.shape) != tuple(out_shape):
            raise ArgumentError(f"bias_mask must have shape {tuple(out_shape)}, got {tuple(bias_mask.shape)}")
        if bias_mask.dtype != torch.bool:
            raise ArgumentError(f"bias_mask must be a bool tensor, got {bias_mask.dtype}")
    tensors = [("x", x), ("weight_mask", weight_mask)] + ([("bias", bias)] if bias is not None else []) + (
        [("bias_mask", bias_mask)] if bias_mask is not None else [])
    for name, t in tensors:
        if t.device != weight.device:
            raise ArgumentError(f"{name} is on {t.device} but weight is on {weight.device}")
    n_in = weight.shape[-1]
    if weight.dim() == 3:
        if x.dim() != 3 or x.shape[0] != weight.shape[0] or x.shape[2] != n_in:
            raise ArgumentError(f"batched weight {tuple(weight.shape)} needs x of shape "
                                f"({weight.shape[0]}, B, {n_in}), got {tuple(x.shape)}")
    elif x.dim() < 1 or x.shape[-1] != n_in:
        raise ArgumentError(f"x must have shape (..., {n_in}), got {tuple(x.shape)}")


def _use_sparse(weight, weight_mask, impl) -> bool:
    if impl == "dense":
        return False
    if native.module_for(weight.device) is None or weight.dtype not in (torch.float32, torch.float64):
        return False
    if impl == "sparse":
        return True
    return mask_density(weight_mask) < crossover_density(weight.device)


def masked_linear(x, weight, weight_mask, bias=None, bias_mask=None, impl: str = "auto"):
    """``x @ (weight * weight_mask).T + bias * bias_mask``, dense or sparse (see the module docstring).

    impl: "auto" (sparse below `crossover_density()` when a native module serves the device), "sparse"
    (the native kernels; the dense reference when none is available) or "dense".
    """
    _check_args(x, weight, weight_mask, bias, bias_mask, impl)
    if not _use_sparse(weight, weight_mask, impl):
        return _masked_linear_torch(x, weight, weight_mask, bias, bias_mask)
    batched = weight.dim() == 3
    if batched:
        x3, w3, m3 = x, weight, weight_mask
        b2 = None if bias is None else bias
        bm2 = None if bias_mask is None else bias_mask
    else:
        lead = x.shape[:-1]
        x3 = x.reshape(1, math.prod(lead), x.shape[-1])
        w3, m3 = weight.unsqueeze(0), weight_mask
        b2 = None if bias is None else bias.unsqueeze(0)
        bm2 = None if bias_mask is None else bias_mask.unsqueeze(0)
    structure = mask_structure(m3)
    # Gathering the kept values through autograd gives the dense weight its gradient (zero where masked).
    vals = w3.reshape(-1).index_select(0, structure.pos)
    y = sparse_linear(x3, vals, structure, None if b2 is None else (b2 if bm2 is None else b2 * bm2))
    if batched:
        return y
    return y.reshape(*lead, weight.shape[0])


def padded_batch(batch: int) -> int:
    """Batch lanes of a feature-major activation: `batch` rounded up to a multiple of 16 (the kernels' unit)."""
    return (int(batch) + 15) // 16 * 16


def _native_layout(t: torch.Tensor) -> bool:
    """Whether the native layout copies serve `t` (a float32/float64 CPU tensor with the core loaded)."""
    return t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and native.cpu_module() is not None


def to_feature_major(x: torch.Tensor) -> torch.Tensor:
    """(M, B, n) -> the feature-major (M, n, padded_batch(B)) layout of `sparse_linear_fm`, padding lanes zero
    (differentiable; a cache-blocked native copy on the CPU, `to_feature_major_reference` elsewhere)."""
    _check_layout("x", x)
    return _ToFeatureMajor.apply(x) if _native_layout(x) else _to_fm_torch(x)


def from_feature_major(xt: torch.Tensor, batch: int) -> torch.Tensor:
    """Feature-major (M, n, Bp) -> contiguous (M, batch, n) (differentiable; the inverse of `to_feature_major`)."""
    _check_layout("xt", xt, batch)
    return _FromFeatureMajor.apply(xt, int(batch)) if _native_layout(xt) else _from_fm_torch(xt, int(batch))


def to_feature_major_reference(x: torch.Tensor) -> torch.Tensor:
    """PyTorch formula of `to_feature_major` (torch's transposing copy is not cache-blocked: 3.5 ms against
    about 1 ms native for 256 x 4096 float32 here)."""
    _check_layout("x", x)
    return _to_fm_torch(x)


def from_feature_major_reference(xt: torch.Tensor, batch: int) -> torch.Tensor:
    """PyTorch formula of `from_feature_major`."""
    _check_layout("xt", xt, batch)
    return _from_fm_torch(xt, int(batch))


def _to_fm_torch(x):
    B = x.shape[1]
    return torch.nn.functional.pad(x.transpose(1, 2), (0, padded_batch(B) - B)).contiguous()


def _from_fm_torch(xt, batch):
    return xt[:, :, :batch].transpose(1, 2).contiguous()


def _check_layout(name: str, t, batch=None) -> None:
    """x (M, B, n), or feature-major xt (M, n, padded_batch(batch)); floating-point."""
    if not isinstance(t, torch.Tensor) or t.dim() != 3 or not t.is_floating_point():
        raise ArgumentError(f"{name} must be a 3-D floating-point tensor, got "
                            f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}"
                            f"{' ' + str(t.dtype) if isinstance(t, torch.Tensor) else ''}")
    if batch is not None and (isinstance(batch, bool) or int(batch) < 0 or t.shape[2] != padded_batch(batch)):
        raise ArgumentError(f"{name} must have {padded_batch(max(int(batch), 0))} (padded) batch lanes for batch "
                            f"{batch!r}, got shape {tuple(t.shape)}")


class _ToFeatureMajor(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.batch = x.shape[1]
        ext = native.cpu_module()
        return torch.from_numpy(ext.to_feature_major(x.detach().contiguous().numpy(), torch.get_num_threads()))

    @staticmethod
    def backward(ctx, grad):
        return from_feature_major(grad, ctx.batch)


class _FromFeatureMajor(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xt, batch):
        ext = native.cpu_module()
        return torch.from_numpy(ext.from_feature_major(xt.detach().contiguous().numpy(), batch,
                                                       torch.get_num_threads()))

    @staticmethod
    def backward(ctx, grad):
        return to_feature_major(grad), None


def sparse_linear(x: torch.Tensor, values: torch.Tensor, structure: CsrStructure, bias: torch.Tensor | None = None):
    """y = x W^T (+ bias) with W given by its kept ``values`` in the CSR order of ``structure``
    (`mask_structure(mask)`); differentiable in x, values and bias. For trainers that keep only the kept
    weights as parameters: no dense weight, no dense gradient. Shapes: x (M, B, in), values (nnz,),
    bias (M, out) -> (M, B, out), float32 or float64. The native kernels of x's device;
    `sparse_linear_reference` where none serves it."""
    _check_sparse_args(x, values, structure, bias, feature_major=False)
    if native.module_for(x.device) is None:
        return _sparse_linear_torch(x, values, structure, bias)
    if x.device.type == "cuda":
        y = _SparseLinearCuda.apply(x, values, structure)
        return y if bias is None else y + bias.unsqueeze(1)
    B = x.shape[1]
    yt = _SparseLinearFM.apply(to_feature_major(x), values, bias, structure, B, False)
    return from_feature_major(yt, B)


def sparse_linear_reference(x: torch.Tensor, values: torch.Tensor, structure: CsrStructure,
                            bias: torch.Tensor | None = None) -> torch.Tensor:
    """PyTorch formula of `sparse_linear`: the kept values scattered into a dense weight, then a batched matmul
    (differentiable in x, values and bias; any device)."""
    _check_sparse_args(x, values, structure, bias, feature_major=False)
    return _sparse_linear_torch(x, values, structure, bias)


def _sparse_linear_torch(x, values, structure, bias):
    s = structure
    w = torch.zeros(s.M * s.n_out * s.n_in, dtype=values.dtype, device=values.device).index_put((s.pos,), values)
    y = torch.matmul(x, w.view(s.M, s.n_out, s.n_in).transpose(1, 2))
    return y if bias is None else y + bias.unsqueeze(1)


def sparse_linear_fm(xt: torch.Tensor, values: torch.Tensor, structure: CsrStructure, batch: int,
                     bias: torch.Tensor | None = None, relu: bool = False) -> torch.Tensor:
    """`sparse_linear` (then ReLU when `relu`) on feature-major activations: xt (M, in, Bp) -> (M, out, Bp),
    Bp = padded_batch(batch), padding lanes zero (`to_feature_major`, `from_feature_major`). A chain of sparse
    layers stays in this layout, so the batched trainer transposes only where the chain starts and ends.
    `sparse_linear_fm_reference` where no native module serves xt's device."""
    _check_sparse_args(xt, values, structure, bias, feature_major=True, batch=batch)
    if native.module_for(xt.device) is None:
        return _sparse_linear_fm_torch(xt, values, structure, int(batch), bias, relu)
    if xt.device.type == "cuda":  # the CUDA kernels work row-major: convert around them
        y = _SparseLinearCuda.apply(from_feature_major(xt, batch), values, structure)
        if bias is not None:
            y = y + bias.unsqueeze(1)
        return to_feature_major(torch.relu(y) if relu else y)
    return _SparseLinearFM.apply(xt, values, bias, structure, int(batch), bool(relu))


def sparse_linear_fm_reference(xt: torch.Tensor, values: torch.Tensor, structure: CsrStructure, batch: int,
                               bias: torch.Tensor | None = None, relu: bool = False) -> torch.Tensor:
    """PyTorch formula of `sparse_linear_fm` (through the row-major layout; any device)."""
    _check_sparse_args(xt, values, structure, bias, feature_major=True, batch=batch)
    return _sparse_linear_fm_torch(xt, values, structure, int(batch), bias, relu)


def _sparse_linear_fm_torch(xt, values, structure, batch, bias, relu):
    y = _sparse_linear_torch(_from_fm_torch(xt, batch), values, structure, bias)
    return _to_fm_torch(torch.relu(y) if relu else y)


def _check_sparse_args(x, values, structure, bias, feature_major: bool, batch: int | None = None) -> None:
    if not isinstance(structure, CsrStructure):
        raise ArgumentError(f"structure must be a CsrStructure (mask_structure(mask)), got {type(structure).__name__}")
    name = "xt" if feature_major else "x"
    if not isinstance(x, torch.Tensor) or x.dtype not in (torch.float32, torch.float64):
        raise ArgumentError(f"{name} must be a float32 or float64 tensor, got "
                            f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
    if feature_major:
        if batch is None or isinstance(batch, bool) or int(batch) < 0:
            raise ArgumentError(f"batch must be an integer >= 0, got {batch!r}")
        want = (structure.M, structure.n_in, padded_batch(batch))
        if tuple(x.shape) != want:
            raise ArgumentError(f"xt must have shape {want} (feature-major, batch {batch} padded), got "
                                f"{tuple(x.shape)}")
    elif x.dim() != 3 or x.shape[0] != structure.M or x.shape[2] != structure.n_in:
        raise ArgumentError(f"x must have shape ({structure.M}, B, {structure.n_in}), got {tuple(x.shape)}")
    if (not isinstance(values, torch.Tensor) or values.shape != (structure.nnz,) or values.dtype != x.dtype
            or values.device != x.device):
        raise ArgumentError(f"values must be a ({structure.nnz},) {x.dtype} tensor on {x.device}")
    if bias is not None and (not isinstance(bias, torch.Tensor) or bias.shape != (structure.M, structure.n_out)
                             or bias.dtype != x.dtype or bias.device != x.device):
        raise ArgumentError(f"bias must be a ({structure.M}, {structure.n_out}) {x.dtype} tensor on {x.device}")


def _np(t: torch.Tensor):
    return t.detach().contiguous().numpy()


def native_pattern(structure: CsrStructure):
    """The validated native copy (`plantseek._C.SparsePattern`) of a CPU structure, built once per structure."""
    pat = structure.__dict__.get("_pattern")
    if pat is None:
        pat = native.cpu_module().SparsePattern(_np(structure.indptr), _np(structure.cols), _np(structure.csc_indptr),
                                                _np(structure.csc_rows), _np(structure.csc_perm), structure.M,
                                                structure.n_out, structure.n_in)
        structure.__dict__["_pattern"] = pat
    return pat


class _SparseLinearFM(torch.autograd.Function):
    """yt = W xt + b (then ReLU) on the CPU kernels, feature-major; vals (nnz,) the kept weights in CSR order."""

    @staticmethod
    def forward(ctx, xt, vals, bias, structure, batch, relu):
        xt = xt.detach().contiguous()
        vals = vals.detach().contiguous()
        ext = native.cpu_module()
        pat = native_pattern(structure)
        b = None if bias is None else bias.detach().contiguous().numpy()
        yt = torch.from_numpy(ext.sparse_fm_forward(xt.numpy(), pat, vals.numpy(), b, relu, batch,
                                                    torch.get_num_threads()))
        ctx.save_for_backward(xt, vals, yt if relu else None)
        ctx.ext, ctx.pattern, ctx.batch, ctx.has_bias = ext, pat, batch, bias is not None
        return yt

    @staticmethod
    def backward(ctx, grad_yt):
        xt, vals, yt = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        if not (need_x or need_w or need_b):
            return None, None, None, None, None, None
        gx, gv, gb = ctx.ext.sparse_fm_backward(
            grad_yt.contiguous().numpy(), xt.numpy(), None if yt is None else yt.numpy(), ctx.pattern, vals.numpy(),
            ctx.batch, need_x, need_w, need_b and ctx.has_bias, torch.get_num_threads())
        as_tensor = (lambda a: None if a is None else torch.from_numpy(a))
        return as_tensor(gx), as_tensor(gv), as_tensor(gb), None, None, None


class _SparseLinearCuda(torch.autograd.Function):
    """y = x W^T on the CUDA kernels, row-major; x (M, B, in), vals (nnz,) the kept weights in CSR order."""

    @staticmethod
    def forward(ctx, x, vals, structure):
        x = x.detach().contiguous()
        vals = vals.detach().contiguous()
        y = _cuda_forward(x, vals, structure)
        ctx.save_for_backward(x, vals)
        ctx.structure = structure
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, vals = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_x or need_w):
            return None, None, None
        gx, gvals = _cuda_backward(grad_y.contiguous(), x, vals, ctx.structure, need_x, need_w)
        return (gx if need_x else None), (gvals if need_w else None), None


# --------------------------------------------------------------------------------------------- CUDA launchers
# plantseek._C_cuda takes device pointers (tensor.data_ptr()) and the current stream of the tensors' device; the
# dispatchers have checked shapes, dtypes and devices, so these only make the buffers contiguous.


def _dtype_name(dtype: torch.dtype) -> str:
    if dtype == torch.float32:
        return "float32"
    if dtype == torch.float64:
        return "float64"
    raise ArgumentError(f"CUDA sparse kernels support float32 and float64, got {dtype}")


def _cuda_forward(x: torch.Tensor, vals: torch.Tensor, s: CsrStructure) -> torch.Tensor:
    """y (M, B, out) = x W^T on the GPU for the CSR structure `s`."""
    ext = native.require_cuda_module()
    dev = x.device
    x, vals = x.contiguous(), vals.contiguous()
    M, B, n_in = x.shape
    y = torch.empty(M, B, s.n_out, dtype=x.dtype, device=dev)
    with torch.cuda.device(dev):
        ext.spmm(x.data_ptr(), s.indptr.data_ptr(), s.cols.data_ptr(), vals.data_ptr(), 0, y.data_ptr(), M, B,
                 s.n_out, n_in, _dtype_name(x.dtype), native.cuda_stream(dev))
    return y


def _cuda_backward(gy: torch.Tensor, x: torch.Tensor, vals: torch.Tensor, s: CsrStructure, need_x: bool,
                   need_w: bool):
    """(grad_x or None, grad_vals or None) on the GPU: SpMM through the CSC structure, SDDMM at kept entries."""
    ext = native.require_cuda_module()
    dev = gy.device
    gy, x = gy.contiguous(), x.contiguous()
    M, B, n_out = gy.shape
    n_in = x.shape[2]
    name = _dtype_name(gy.dtype)
    gx = gvals = None
    with torch.cuda.device(dev):
        stream = native.cuda_stream(dev)
        if need_x:
            vals_csc = torch.empty_like(vals)
            if vals.numel():
                ext.gather(vals.data_ptr(), s.csc_perm.data_ptr(), vals_csc.data_ptr(), vals.numel(), name, stream)
            gx = torch.empty(M, B, n_in, dtype=gy.dtype, device=dev)
            ext.spmm(gy.data_ptr(), s.csc_indptr.data_ptr(), s.csc_rows.data_ptr(), vals_csc.data_ptr(), 0,
                     gx.data_ptr(), M, B, n_in, n_out, name, stream)
        if need_w:
            gvals = torch.empty_like(vals)
            ext.sddmm(gy.data_ptr(), x.data_ptr(), s.rows.data_ptr(), s.cols.data_ptr(), gvals.data_ptr(),
                      vals.numel(), B, n_out, n_in, name, stream)
    return gx, gvals
