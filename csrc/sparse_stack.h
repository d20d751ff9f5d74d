// One training step of M sparse MLPs at once, network by network (network-major).
//
// The layer-by-layer path (sparse_linear.h through autograd) runs each layer over all M networks before the
// next: for the paper's sweeps (64 width-100 networks) one step touches ~40 MB, more than the last-level
// cache, so every layer reads its activations, indices and weights back from memory (measured: the backward
// kernels take 1.5x as long there as on warm caches). Here each network runs its whole step at once (forward
// pass, loss and its gradient, backward pass with the optimiser update of each layer fused in) while its
// activations (a few hundred KB) stay in the core's caches; networks run in parallel when there are threads.
//
// `train_step` computes the built-in losses itself (cross-entropy, mean squared error). For a caller's own loss,
// `forward` returns the outputs (M, B, n_out) and `backward_step` takes the gradient of the summed loss with
// respect to them. Layers: ReLU after every layer but the last.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

#include "sparse_linear.h"

namespace plantseek {

// The index structure of one layer (see sparse_linear.h).
struct StackLayer {
    CsrView csr;
    CsrView csc;
    const int64_t* csc_perm;
};

// One layer's parameters, updated in place: vals (nnz,) in CSR order, bias (M, n_out), and bias_mask
// (M, n_out: 1 kept, 0 pruned) or null when every bias is kept.
template <class T>
struct StackParams {
    T* vals;
    T* bias;
    const T* bias_mask;
};

// The optimiser (torch.optim.Adam without amsgrad, or torch.optim.SGD with heavy-ball momentum, no
// dampening, no Nesterov), applied elementwise to each network's parameters right after their gradient.
struct StackOptimizer {
    bool adam = true;
    double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
    double weight_decay = 0.0;
    double momentum = 0.0;  // SGD only
};

// 64-byte aligned storage for the activation and gradient buffers: every batch vector of a feature-major row
// then starts on a cache line (a misaligned 64-byte load touches two lines).
template <class T>
struct CacheAligned {
    typedef T value_type;
    CacheAligned() = default;
    template <class U>
    CacheAligned(const CacheAligned<U>&) {}
    T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
    void deallocate(T* p, std::size_t) { ::operator delete(p, std::align_val_t(64)); }
    template <class U>
    bool operator==(const CacheAligned<U>&) const { return true; }
    template <class U>
    bool operator!=(const CacheAligned<U>&) const { return false; }
};
template <class T>
using AlignedVector = std::vector<T, CacheAligned<T>>;

template <class T>
class SparseStack {
public:
    using value_type = T;

    // `layers[l]` maps n[l] inputs to n[l + 1] outputs for each of M networks; the caller keeps the index
    // arrays and parameters alive and has checked them (the binding does).
    SparseStack(std::vector<StackLayer> layers, std::vector<StackParams<T>> params, int64_t M, StackOptimizer opt);

    // out (M, B, n_out) for inputs x (M, B, n_in); keeps the activations for `backward_step`.
    void forward(const T* x, int64_t B, T* out, int n_threads);

    // The gradient, and the optimiser step with learning rate lr, of every parameter for the gradient gout
    // (M, B, n_out) of the loss at the outputs of the last `forward`. The step count advances by one.
    void backward_step(const T* gout, double lr, int n_threads);

    // forward, loss, backward and optimiser step in one pass over each network (its activations stay in cache
    // from the first layer's forward to the first layer's update). The loss is the network's mean over the
    // batch: cross-entropy with `labels` (M, B) in [0, n_out) when given, else the mean squared error against
    // `targets` (M, B, n_out). losses (M,) receives each network's loss; networks with alive[m] == 0 (alive may
    // be null: all alive) get a zero gradient, as in a loss summed over the live networks only.
    void train_step(const T* x, int64_t B, const int64_t* labels, const T* targets, const uint8_t* alive,
                    double lr, T* losses, int n_threads);

    // The gradient of the built-in loss (as train_step computes it) at every weight position, pruned ones
    // included, and at every bias: gw[l] (M, n_out, n_in) and gb[l] (M, n_out), row-major (RigL's grow
    // criterion). No optimiser step: parameters, state and step count are unchanged. Networks with
    // alive[m] == 0 get zero gradients.
    void dense_gradients(const T* x, int64_t B, const int64_t* labels, const T* targets, const uint8_t* alive,
                         const std::vector<T*>& gw, const std::vector<T*>& gb, int n_threads);

    int64_t steps() const { return steps_; }
    int64_t batch() const { return B_; }
    // Optimiser state of layer l: which = 0 first moment (or momentum buffer) of the values, 1 their second
    // moment, 2 and 3 the same for the biases.
    const std::vector<T>& state(int64_t l, int which) const { return state_[4 * l + which]; }
    // Overwrites that state array with data (n values, n its size: the second moments are empty for SGD).
    void set_state(int64_t l, int which, const T* data, int64_t n);
    // Sets the step count: the next step is step `steps` + 1 (Adam's bias corrections, SGD's first step), as if
    // the stack had trained `steps` steps. Every state array is sized at construction, none on the first step.
    void set_steps(int64_t steps);
    // Takes over `old`'s optimiser state and step count after a mask change: the same networks and layer shapes
    // with new index structures. old_pos[l] / new_pos[l] are the flat (network, output, input) positions of
    // each layer's kept weights in CSR order (increasing) in `old` and here: a weight kept by both keeps its
    // state, a new one starts at zero; bias state is zeroed where this stack's bias mask prunes. The caller has
    // checked the positions (the binding does).
    void adopt_state(const SparseStack<T>& old, const std::vector<const int64_t*>& old_pos,
                     const std::vector<const int64_t*>& new_pos);
    int64_t nnz(int64_t l) const { return layers_[l].csr.indptr[M_ * layers_[l].csr.n_rows]; }

private:
    void prepare(int64_t B);                         // sizes the activations for batch B
    void begin_step(double lr);                      // counts the step and its optimiser constants
    int workers(int n_threads, int64_t passes);      // networks run in parallel on this many threads
    template <class F>
    void each_network(int workers, int n_threads, F&& body);  // body(m, inner threads, work buffer)
    void forward_one(int64_t m, const T* x, int inner);
    void backward_one(int64_t m, T* work, int inner);  // work starts with the gradient at the outputs
    T loss_one(int64_t m, const int64_t* labels, const T* targets, bool alive, T* g) const;

    std::vector<StackLayer> layers_;
    std::vector<StackParams<T>> params_;
    int64_t M_;
    StackOptimizer opt_;
    std::vector<int64_t> width_;        // n[0] .. n[L]
    std::vector<AlignedVector<T>> acts_;  // acts_[l]: (M, n[l], Bp) feature-major, acts_[0] the input
    std::vector<std::vector<T>> state_;
    std::vector<std::vector<T>> gvals_;  // per layer (nnz,), written and consumed network by network
    std::vector<AlignedVector<T>> work_;  // per thread: two gradient buffers (max n, Bp) and the bias gradient
    // per layer the CSR structure of every position (row-major order), built by the first dense_gradients: the
    // vectorised sampled products of the backward pass then give the dense gradient
    std::vector<std::vector<int64_t>> dense_indptr_, dense_cols_;
    int64_t nnz_ = 0, n_max_ = 0;  // kept weights of all layers and networks; the widest layer
    int64_t B_ = 0, Bp_ = 0, steps_ = 0;
    double lr_ = 0.0, step_size_ = 0.0, bc2_sqrt_ = 1.0;  // this step's learning rate and Adam's corrections
    bool ready_ = false;  // a forward has run since the last step
};

}  // namespace plantseek
