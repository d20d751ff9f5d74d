#include "sparse_stack.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <utility>

#include "common.h"

namespace plantseek {

namespace {

// Below this many multiply-adds a step runs its networks on the calling thread.
constexpr int64_t kParallelWork = int64_t(1) << 20;

// The constants of one optimiser step (torch's formulas: Adam's bias corrections, SGD's first step).
struct StepConstants {
    bool adam;
    double lr, beta1, beta2, eps, weight_decay, momentum;
    double step_size;  // Adam: lr / (1 - beta1^t)
    double bc2_sqrt;   // Adam: sqrt(1 - beta2^t)
    bool first;        // SGD: the first step copies the gradient into the momentum buffer
};

// One optimiser step of n parameters p with gradients g (times mask, when given) and state s1, s2.
template <class T>
void update(T* p, const T* g, const T* mask, T* s1, T* s2, int64_t n, const StepConstants& c) {
    const T wd = static_cast<T>(c.weight_decay);
    if (c.adam) {
        const T a1 = static_cast<T>(1.0 - c.beta1), b2 = static_cast<T>(c.beta2), a2 = static_cast<T>(1.0 - c.beta2);
        const T step = static_cast<T>(c.step_size), bc2 = static_cast<T>(c.bc2_sqrt), eps = static_cast<T>(c.eps);
        for (int64_t i = 0; i < n; ++i) {
            T gi = mask != nullptr ? g[i] * mask[i] : g[i];
            if (wd != T(0)) gi += wd * p[i];
            const T m1 = s1[i] + a1 * (gi - s1[i]);  // torch's lerp for weights below 0.5
            const T m2 = s2[i] * b2 + a2 * gi * gi;
            s1[i] = m1;
            s2[i] = m2;
            p[i] -= step * m1 / (std::sqrt(m2) / bc2 + eps);
        }
        return;
    }
    const T lr = static_cast<T>(c.lr), mom = static_cast<T>(c.momentum);
    for (int64_t i = 0; i < n; ++i) {
        T gi = mask != nullptr ? g[i] * mask[i] : g[i];
        if (wd != T(0)) gi += wd * p[i];
        if (mom != T(0)) {
            s1[i] = c.first ? gi : s1[i] * mom + gi;
            gi = s1[i];
        }
        p[i] -= lr * gi;
    }
}

// `update` over `threads` chunks when n is large (a single wide network), else on the calling thread.
template <class T>
void update_chunks(T* p, const T* g, const T* mask, T* s1, T* s2, int64_t n, const StepConstants& c, int threads) {
    constexpr int64_t chunk = int64_t(1) << 16;
    if (threads <= 1 || n <= chunk) {
        update<T>(p, g, mask, s1, s2, n, c);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t i = 0; i < n; i += chunk) {
        const int64_t k = std::min(chunk, n - i);
        update<T>(p + i, g + i, mask == nullptr ? nullptr : mask + i, s1 + i, s2 == nullptr ? nullptr : s2 + i, k, c);
    }
}

}  // namespace

template <class T>
SparseStack<T>::SparseStack(std::vector<StackLayer> layers, std::vector<StackParams<T>> params, int64_t M,
                            StackOptimizer opt)
    : layers_(std::move(layers)), params_(std::move(params)), M_(M), opt_(opt) {
    if (layers_.empty() || layers_.size() != params_.size())
        throw std::invalid_argument("SparseStack needs one parameter set per layer and at least one layer");
    width_.push_back(layers_[0].csr.n_cols);
    for (const auto& layer : layers_) width_.push_back(layer.csr.n_rows);
    n_max_ = *std::max_element(width_.begin(), width_.end());
    acts_.resize(width_.size());
    for (size_t l = 0; l < layers_.size(); ++l) {
        const int64_t nnz = layers_[l].csr.indptr[M_ * layers_[l].csr.n_rows];
        nnz_ += nnz;
        const int64_t nb = M_ * layers_[l].csr.n_rows;
        state_.emplace_back(static_cast<size_t>(nnz), T(0));
        state_.emplace_back(static_cast<size_t>(opt_.adam ? nnz : 0), T(0));
        state_.emplace_back(static_cast<size_t>(nb), T(0));
        state_.emplace_back(static_cast<size_t>(opt_.adam ? nb : 0), T(0));
        gvals_.emplace_back(static_cast<size_t>(nnz), T(0));
    }
}

template <class T>
void SparseStack<T>::prepare(int64_t B) {
    const int64_t Bp = padded_batch(B);
    for (size_t l = 0; l < acts_.size(); ++l)
        if (acts_[l].size() < static_cast<size_t>(M_ * width_[l] * Bp)) acts_[l].resize(M_ * width_[l] * Bp);
    B_ = B;
    Bp_ = Bp;
}

template <class T>
void SparseStack<T>::begin_step(double lr) {
    ready_ = false;
    ++steps_;
    lr_ = lr;
    step_size_ = lr / (1.0 - std::pow(opt_.beta1, static_cast<double>(steps_)));
    bc2_sqrt_ = std::sqrt(1.0 - std::pow(opt_.beta2, static_cast<double>(steps_)));
}

template <class T>
void SparseStack<T>::set_state(int64_t l, int which, const T* data, int64_t n) {
    if (l < 0 || l >= static_cast<int64_t>(layers_.size()) || which < 0 || which > 3)
        throw std::invalid_argument("set_state: l must name a layer and which lie in 0..3");
    std::vector<T>& s = state_[4 * l + which];
    if (n != static_cast<int64_t>(s.size()))
        throw std::invalid_argument("set_state: got " + std::to_string(n) + " values for a state of " +
                                    std::to_string(s.size()));
    std::copy(data, data + n, s.begin());
}

template <class T>
void SparseStack<T>::set_steps(int64_t steps) {
    if (steps < 0) throw std::invalid_argument("set_steps: the step count must be >= 0");
    steps_ = steps;
}

template <class T>
void SparseStack<T>::adopt_state(const SparseStack<T>& old, const std::vector<const int64_t*>& old_pos,
                                 const std::vector<const int64_t*>& new_pos) {
    const int64_t L = static_cast<int64_t>(layers_.size());
    for (int64_t l = 0; l < L; ++l) {
        const int64_t n_old = old.nnz(l), n_new = nnz(l);
        const int64_t* po = old_pos[l];
        const int64_t* pn = new_pos[l];
        for (int which = 0; which < 2; ++which) {
            const std::vector<T>& from = old.state_[4 * l + which];
            std::vector<T>& to = state_[4 * l + which];
            if (to.empty()) continue;  // SGD keeps no second moment
            int64_t i = 0;
            for (int64_t j = 0; j < n_new; ++j) {  // both position lists increase: one merge
                while (i < n_old && po[i] < pn[j]) ++i;
                to[j] = (i < n_old && po[i] == pn[j]) ? from[i] : T(0);
            }
        }
        const T* mask = params_[l].bias_mask;
        for (int which = 2; which < 4; ++which) {
            const std::vector<T>& from = old.state_[4 * l + which];
            std::vector<T>& to = state_[4 * l + which];
            for (size_t k = 0; k < to.size(); ++k) to[k] = mask != nullptr && mask[k] == T(0) ? T(0) : from[k];
        }
    }
    steps_ = old.steps_;
}

template <class T>
int SparseStack<T>::workers(int n_threads, int64_t passes) {
    const int threads = resolve_threads(n_threads);
    const bool across = threads > 1 && M_ > 1 && passes * nnz_ * Bp_ > kParallelWork;
    const size_t work_size = static_cast<size_t>(2 * n_max_ * Bp_ + n_max_);
    work_.resize(across ? threads : 1);
    for (auto& w : work_)
        if (w.size() < work_size) w.resize(work_size);
    return across ? threads : 1;
}

template <class T>
template <class F>
void SparseStack<T>::each_network(int workers, int n_threads, F&& body) {
    if (workers > 1) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(workers)
        for (int64_t m = 0; m < M_; ++m) body(m, 1, work_[thread_index()].data());
    } else {
        const int inner = resolve_threads(n_threads);
        for (int64_t m = 0; m < M_; ++m) body(m, inner, work_[0].data());
    }
}

template <class T>
void SparseStack<T>::forward_one(int64_t m, const T* x, int inner) {
    const int64_t B = B_, Bp = Bp_, L = static_cast<int64_t>(layers_.size());
    to_feature_major<T>(x + m * B * width_[0], 1, B, width_[0], Bp, acts_[0].data() + m * width_[0] * Bp, 1);
    for (int64_t l = 0; l < L; ++l) {
        const int64_t n_in = width_[l], n_out = width_[l + 1];
        forward_network<T>(acts_[l].data() + m * n_in * Bp, m, B, Bp, layers_[l].csr, params_[l].vals,
                           params_[l].bias + m * n_out, l + 1 < L, acts_[l + 1].data() + m * n_out * Bp, inner);
    }
}

template <class T>
void SparseStack<T>::backward_one(int64_t m, T* work, int inner) {
    const int64_t B = B_, Bp = Bp_, L = static_cast<int64_t>(layers_.size());
    const StepConstants c{opt_.adam, lr_, opt_.beta1, opt_.beta2, opt_.eps, opt_.weight_decay, opt_.momentum,
                          step_size_, bc2_sqrt_, steps_ == 1};
    T* ga = work;  // holds the gradient at the outputs (n_out, Bp) on entry
    T* gb = work + n_max_ * Bp;
    T* gbias = work + 2 * n_max_ * Bp;
    for (int64_t l = L - 1; l >= 0; --l) {
        const int64_t n_in = width_[l], n_out = width_[l + 1];
        const StackLayer& layer = layers_[l];
        const StackParams<T>& p = params_[l];
        const T* y = l + 1 < L ? acts_[l + 1].data() + m * n_out * Bp : nullptr;
        gradient_network<T>(ga, y, n_out, B, Bp, ga, gbias);
        T* gv = gvals_[l].data();
        // the input gradient uses the values before this step's update
        backward_network<T>(ga, acts_[l].data() + m * n_in * Bp, m, B, Bp, layer.csr, p.vals, layer.csc,
                            layer.csc_perm, l > 0 ? gb : nullptr, gv, inner);
        const int64_t e0 = layer.csr.indptr[m * n_out], e1 = layer.csr.indptr[(m + 1) * n_out];
        update_chunks<T>(p.vals + e0, gv + e0, nullptr, state_[4 * l].data() + e0,
                         c.adam ? state_[4 * l + 1].data() + e0 : nullptr, e1 - e0, c, inner);
        const int64_t b0 = m * n_out;
        update<T>(p.bias + b0, gbias, p.bias_mask != nullptr ? p.bias_mask + b0 : nullptr,
                  state_[4 * l + 2].data() + b0, c.adam ? state_[4 * l + 3].data() + b0 : nullptr, n_out, c);
        std::swap(ga, gb);
    }
}

template <class T>
T SparseStack<T>::loss_one(int64_t m, const int64_t* labels, const T* targets, bool alive, T* g) const {
    const int64_t B = B_, Bp = Bp_, n = width_.back();
    const T* out = acts_.back().data() + m * n * Bp;
    double total = 0.0;
    if (labels != nullptr) {  // mean cross-entropy over the batch: gradient (softmax - one-hot) / B
        const int64_t* y = labels + m * B;
        for (int64_t b = 0; b < B; ++b) {
            T top = out[b];
            for (int64_t j = 1; j < n; ++j) top = std::max(top, out[j * Bp + b]);
            if (!std::isfinite(top)) top = T(0);  // infinities and NaN then propagate through exp and log
            T sum = T(0);
            for (int64_t j = 0; j < n; ++j) sum += std::exp(out[j * Bp + b] - top);
            total += static_cast<double>(top + std::log(sum) - out[y[b] * Bp + b]);
            if (!alive) continue;
            for (int64_t j = 0; j < n; ++j)
                g[j * Bp + b] = (std::exp(out[j * Bp + b] - top) / sum - (j == y[b] ? T(1) : T(0))) / static_cast<T>(B);
        }
        total /= static_cast<double>(B);
    } else {  // mean squared error over the batch and the outputs: gradient 2 (o - t) / (B n)
        const T* t = targets + m * B * n;
        const T scale = T(2) / static_cast<T>(B * n);
        for (int64_t b = 0; b < B; ++b)
            for (int64_t j = 0; j < n; ++j) {
                const T d = out[j * Bp + b] - t[b * n + j];
                total += static_cast<double>(d * d);
                if (alive) g[j * Bp + b] = scale * d;
            }
        total /= static_cast<double>(B * n);
    }
    if (!alive)
        for (int64_t j = 0; j < n; ++j) std::fill(g + j * Bp, g + j * Bp + B, T(0));
    return static_cast<T>(total);
}

template <class T>
void SparseStack<T>::forward(const T* x, int64_t B, T* out, int n_threads) {
    prepare(B);
    const int64_t L = static_cast<int64_t>(layers_.size());
    each_network(workers(n_threads, 1), n_threads, [&](int64_t m, int inner, T*) {
        forward_one(m, x, inner);
        from_feature_major<T>(acts_[L].data() + m * width_[L] * Bp_, 1, width_[L], Bp_, B_, out + m * B_ * width_[L], 1);
    });
    ready_ = true;
}

template <class T>
void SparseStack<T>::backward_step(const T* gout, double lr, int n_threads) {
    if (!ready_) throw std::logic_error("backward_step needs the outputs of a forward pass first");
    begin_step(lr);
    const int64_t L = static_cast<int64_t>(layers_.size());
    each_network(workers(n_threads, 2), n_threads, [&](int64_t m, int inner, T* work) {
        to_feature_major<T>(gout + m * B_ * width_[L], 1, B_, width_[L], Bp_, work, 1);
        backward_one(m, work, inner);
    });
}

template <class T>
void SparseStack<T>::train_step(const T* x, int64_t B, const int64_t* labels, const T* targets,
                                const uint8_t* alive, double lr, T* losses, int n_threads) {
    prepare(B);
    begin_step(lr);
    each_network(workers(n_threads, 3), n_threads, [&](int64_t m, int inner, T* work) {
        forward_one(m, x, inner);
        losses[m] = loss_one(m, labels, targets, alive == nullptr || alive[m] != 0, work);
        backward_one(m, work, inner);
    });
}

template <class T>
void SparseStack<T>::dense_gradients(const T* x, int64_t B, const int64_t* labels, const T* targets,
                                     const uint8_t* alive, const std::vector<T*>& gw, const std::vector<T*>& gb,
                                     int n_threads) {
    prepare(B);
    ready_ = false;  // the activations are this pass's: a backward_step needs its own forward
    const int64_t L = static_cast<int64_t>(layers_.size());
    if (dense_indptr_.empty()) {
        for (int64_t l = 0; l < L; ++l) {
            const int64_t n_in = width_[l], n_out = width_[l + 1];
            std::vector<int64_t> indptr(static_cast<size_t>(M_ * n_out + 1)), cols(static_cast<size_t>(M_ * n_out * n_in));
            for (int64_t r = 0; r <= M_ * n_out; ++r) indptr[r] = r * n_in;
            for (int64_t e = 0; e < M_ * n_out * n_in; ++e) cols[e] = e % n_in;
            dense_indptr_.push_back(std::move(indptr));
            dense_cols_.push_back(std::move(cols));
        }
    }
    each_network(workers(n_threads, 3), n_threads, [&](int64_t m, int inner, T* work) {
        const int64_t Bp = Bp_;
        forward_one(m, x, inner);
        loss_one(m, labels, targets, alive == nullptr || alive[m] != 0, work);
        T* ga = work;  // the gradient at layer l's outputs (n_out, Bp)
        T* gnext = work + n_max_ * Bp;
        T* gbias = work + 2 * n_max_ * Bp;
        for (int64_t l = L - 1; l >= 0; --l) {
            const int64_t n_in = width_[l], n_out = width_[l + 1];
            const StackLayer& layer = layers_[l];
            const T* y = l + 1 < L ? acts_[l + 1].data() + m * n_out * Bp : nullptr;
            gradient_network<T>(ga, y, n_out, B, Bp, ga, gbias);
            std::copy(gbias, gbias + n_out, gb[l] + m * n_out);
            const T* a = acts_[l].data() + m * n_in * Bp;
            // every position's product over the batch: the backward pass's gradient of the values, on the
            // structure that keeps everything (its CSR order is row-major: gw[l]'s layout)
            const CsrView all{dense_indptr_[l].data(), dense_cols_[l].data(), n_out, n_in};
            backward_network<T>(ga, a, m, B, Bp, all, nullptr, layer.csc, layer.csc_perm, nullptr, gw[l], inner);
            if (l > 0) {
                backward_network<T>(ga, a, m, B, Bp, layer.csr, params_[l].vals, layer.csc, layer.csc_perm, gnext,
                                    nullptr, inner);
                std::swap(ga, gnext);
            }
        }
    });
}

template class SparseStack<float>;
template class SparseStack<double>;

}  // namespace plantseek
