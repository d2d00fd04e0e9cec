// TResNet's anti-aliasing blur on the GPU: the 3x3 binomial filter [1,2,1]^T [1,2,1] / 16 with
// reflect padding 1 and stride 2, applied to every channel plane, and its gradient.
//
// Layout: contiguous (P, H, W) planes in, (P, ceil(H/2), ceil(W/2)) out, P = batch * channels.
// One thread per output element of each kernel (grid-stride loops); arithmetic in f32 whatever
// the storage type, in the order the CPU kernel uses (horizontal taps, then vertical).

#include <cuda_fp16.h>
#include <cuda_bf16.h>

namespace {

__device__ __forceinline__ float widen(float v) { return v; }
__device__ __forceinline__ float widen(__half v) { return __half2float(v); }
__device__ __forceinline__ float widen(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T narrow(float v);
template <> __device__ __forceinline__ float narrow<float>(float v) { return v; }
template <> __device__ __forceinline__ __half narrow<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 narrow<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Reflect padding 1: -1 -> 1, n -> n - 2.
__device__ __forceinline__ int reflect(int i, int n) {
  return i < 0 ? -i : (i >= n ? 2 * n - 2 - i : i);
}

// Weight with which input index i enters output index o along an axis of length n.
__device__ __forceinline__ float tap_weight(int i, int o, int n) {
  float weight = 0.0f;
  if (reflect(2 * o - 1, n) == i) weight += 0.25f;
  if (2 * o == i) weight += 0.5f;
  if (reflect(2 * o + 1, n) == i) weight += 0.25f;
  return weight;
}

template <typename T>
__device__ void blur_forward(const T* __restrict__ x, T* __restrict__ y, unsigned int planes,
                             int h, int w) {
  const int ho = (h + 1) / 2, wo = (w + 1) / 2;
  const size_t total = static_cast<size_t>(planes) * ho * wo;
  const size_t step = static_cast<size_t>(blockDim.x) * gridDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += step) {
    const int xo = static_cast<int>(i % wo);
    const size_t rest = i / wo;
    const int yo = static_cast<int>(rest % ho);
    const T* plane = x + (rest / ho) * h * w;
    const int left = reflect(2 * xo - 1, w), centre = 2 * xo, right = reflect(2 * xo + 1, w);
    const float taps[3] = {0.25f, 0.5f, 0.25f};
    float sum = 0.0f;
    for (int dy = -1; dy <= 1; ++dy) {
      const T* row = plane + static_cast<size_t>(reflect(2 * yo + dy, h)) * w;
      const float line =
          0.25f * widen(row[left]) + 0.5f * widen(row[centre]) + 0.25f * widen(row[right]);
      sum += taps[dy + 1] * line;
    }
    y[i] = narrow<T>(sum);
  }
}

// Gathers, for every input element, the output gradients of the (at most 3x3) outputs whose
// taps reach it: no atomics, deterministic.
template <typename T>
__device__ void blur_backward(const T* __restrict__ grad_out, T* __restrict__ grad_in,
                              unsigned int planes, int h, int w) {
  const int ho = (h + 1) / 2, wo = (w + 1) / 2;
  const size_t total = static_cast<size_t>(planes) * h * w;
  const size_t step = static_cast<size_t>(blockDim.x) * gridDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += step) {
    const int xi = static_cast<int>(i % w);
    const size_t rest = i / w;
    const int yi = static_cast<int>(rest % h);
    const T* plane = grad_out + (rest / h) * ho * wo;
    const int y_first = max(0, yi / 2 - 1), y_last = min(ho - 1, yi / 2 + 1);
    const int x_first = max(0, xi / 2 - 1), x_last = min(wo - 1, xi / 2 + 1);
    float sum = 0.0f;
    for (int yo = y_first; yo <= y_last; ++yo) {
      const float wy = tap_weight(yi, yo, h);
      if (wy == 0.0f) continue;
      float line = 0.0f;
      for (int xo = x_first; xo <= x_last; ++xo) {
        line += tap_weight(xi, xo, w) * widen(plane[static_cast<size_t>(yo) * wo + xo]);
      }
      sum += wy * line;
    }
    grad_in[i] = narrow<T>(sum);
  }
}

}  // namespace

#define TRESNET_BLUR_KERNELS(T, SUFFIX)                                                     \
  extern "C" __global__ void blur_forward_##SUFFIX(const T* x, T* y, unsigned int planes,   \
                                                   int h, int w) {                          \
    blur_forward<T>(x, y, planes, h, w);                                                    \
  }                                                                                         \
  extern "C" __global__ void blur_backward_##SUFFIX(const T* grad_out, T* grad_in,          \
                                                    unsigned int planes, int h, int w) {    \
    blur_backward<T>(grad_out, grad_in, planes, h, w);                                      \
  }

TRESNET_BLUR_KERNELS(float, f32)
TRESNET_BLUR_KERNELS(__half, f16)
TRESNET_BLUR_KERNELS(__nv_bfloat16, bf16)
