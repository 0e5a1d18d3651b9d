// Depthwise stage of tf.nn.separable_conv2d, for the CuPy backend (impls/cupy_backend.py).
//
// One thread per element of the intermediate, a grid-stride loop over all of them. The intermediate is
// written row-major as [N, OH, OW, C, M], which is the [N*OH*OW, C*M] matrix that the pointwise stage
// (cuBLAS GEMM through cupy.matmul) reads. The input is read in its own layout through element steps
// (step_n, step_h, step_w, step_c), so NHWC and NCHW need no transposition; the filter is the contiguous
// [KH, KW, C, M] tensor.
//
// Numerics (impls/cupy_kernels.py:depthwise_standin mirrors this exactly, and CI runs that):
// - float32 and float16 accumulate in float32, float64 in float64; bfloat16 arrives as float32 (its values
//   widened exactly by the Python side) and uses the float32 instantiation.
// - Taps are summed in order (i, j) starting from +0, each product and each sum rounded to nearest even
//   (__fmul_rn/__fadd_rn: never contracted into an FMA), so the stand-in can reproduce it bit for bit.
// - Padding is zeros that are multiplied like any input value (so 0 * Inf = NaN, as in the oracle and
//   TensorFlow's CPU kernels); the padded input is never materialized.
// - float16 is stored as its 16-bit pattern (unsigned short) and converted with the PTX cvt instructions
//   (cvt.rn rounds the float32 sum to nearest even, overflowing to Inf), so no header is needed: the
//   source compiles as it is under NVRTC and nvcc.
// - All index arithmetic is 64-bit: tensors may have more than 2**31 elements.

template <typename T> struct Traits;

template <> struct Traits<unsigned short> {  // float16 bits
    typedef float Acc;
    static __device__ __forceinline__ float load(unsigned short bits) {
        float value;
        asm("cvt.f32.f16 %0, %1;" : "=f"(value) : "h"(bits));
        return value;
    }
    static __device__ __forceinline__ unsigned short store(float value) {
        unsigned short bits;
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(bits) : "f"(value));
        return bits;
    }
};

template <> struct Traits<float> {
    typedef float Acc;
    static __device__ __forceinline__ float load(float value) { return value; }
    static __device__ __forceinline__ float store(float value) { return value; }
};

template <> struct Traits<double> {
    typedef double Acc;
    static __device__ __forceinline__ double load(double value) { return value; }
    static __device__ __forceinline__ double store(double value) { return value; }
};

static __device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
static __device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
static __device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
static __device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

// The parameters after the three pointers are DepthwiseGeometry's fields, in its order (a CI test
// checks this against impls/cupy_kernels.py).
#define SEPCONV_DEPTHWISE_PARAMS(T)                                                                     \
    const T* __restrict__ input, const T* __restrict__ filter, T* __restrict__ out,                     \
    long long batch, long long channels, long long multiplier, long long in_h, long long in_w,          \
    long long out_h, long long out_w, long long kernel_h, long long kernel_w,                           \
    long long stride_h, long long stride_w, long long rate_h, long long rate_w,                         \
    long long pad_top, long long pad_left,                                                              \
    long long step_n, long long step_h, long long step_w, long long step_c

template <typename T>
static __device__ __forceinline__ void depthwise(SEPCONV_DEPTHWISE_PARAMS(T)) {
    typedef typename Traits<T>::Acc Acc;
    const long long total = batch * out_h * out_w * channels * multiplier;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x; index < total; index += stride) {
        long long rest = index;
        const long long m = rest % multiplier;
        rest /= multiplier;
        const long long c = rest % channels;
        rest /= channels;
        const long long ox = rest % out_w;
        rest /= out_w;
        const long long oy = rest % out_h;
        const long long b = rest / out_h;
        Acc acc = 0;
        for (long long i = 0; i < kernel_h; ++i) {
            const long long iy = oy * stride_h - pad_top + i * rate_h;
            const bool inside_h = iy >= 0 && iy < in_h;
            for (long long j = 0; j < kernel_w; ++j) {
                const long long ix = ox * stride_w - pad_left + j * rate_w;
                Acc x = 0;  // padding: a zero, multiplied like any input value
                if (inside_h && ix >= 0 && ix < in_w) {
                    x = Traits<T>::load(input[b * step_n + iy * step_h + ix * step_w + c * step_c]);
                }
                const Acc w = Traits<T>::load(filter[((i * kernel_w + j) * channels + c) * multiplier + m]);
                acc = add_rn(acc, mul_rn(x, w));
            }
        }
        out[index] = Traits<T>::store(acc);
    }
}

extern "C" __global__ void sepconv_depthwise_float16(SEPCONV_DEPTHWISE_PARAMS(unsigned short)) {
    depthwise<unsigned short>(input, filter, out, batch, channels, multiplier, in_h, in_w, out_h, out_w,
                              kernel_h, kernel_w, stride_h, stride_w, rate_h, rate_w, pad_top, pad_left,
                              step_n, step_h, step_w, step_c);
}

extern "C" __global__ void sepconv_depthwise_float32(SEPCONV_DEPTHWISE_PARAMS(float)) {
    depthwise<float>(input, filter, out, batch, channels, multiplier, in_h, in_w, out_h, out_w,
                     kernel_h, kernel_w, stride_h, stride_w, rate_h, rate_w, pad_top, pad_left,
                     step_n, step_h, step_w, step_c);
}

extern "C" __global__ void sepconv_depthwise_float64(SEPCONV_DEPTHWISE_PARAMS(double)) {
    depthwise<double>(input, filter, out, batch, channels, multiplier, in_h, in_w, out_h, out_w,
                      kernel_h, kernel_w, stride_h, stride_w, rate_h, rate_w, pad_top, pad_left,
                      step_n, step_h, step_w, step_c);
}

// --- the backward pass (impls/cupy_backend.py: separable_conv2d_backprop) -----------------------------------
//
// Two kernels over the same geometry, each one thread per element it writes, sums in the order below from
// +0 with every product and sum rounded to nearest even (impls/cupy_kernels.py mirrors them exactly):
// - the depthwise filter's gradient, [KH, KW, C, M]: the sum over b, oy, ox (in that order) of the input
//   element tap (i, j) reads for output (b, oy, ox) (padding: a zero, multiplied like any value) times the
//   gradient reaching the intermediate, `grad` ([N, OH, OW, C, M]);
// - the input's gradient, written in the input's own layout (the step_* of the geometry): the sum over
//   taps (i, j) whose output position (b, oy, ox) reads this element, then over m, of grad * filter.
#define SEPCONV_BACKWARD_PARAMS(T)                                                                      \
    const T* __restrict__ data, const T* __restrict__ grad, T* __restrict__ out,                        \
    long long batch, long long channels, long long multiplier, long long in_h, long long in_w,          \
    long long out_h, long long out_w, long long kernel_h, long long kernel_w,                           \
    long long stride_h, long long stride_w, long long rate_h, long long rate_w,                         \
    long long pad_top, long long pad_left,                                                              \
    long long step_n, long long step_h, long long step_w, long long step_c

#define SEPCONV_BACKWARD_ARGS                                                                           \
    data, grad, out, batch, channels, multiplier, in_h, in_w, out_h, out_w, kernel_h, kernel_w,         \
    stride_h, stride_w, rate_h, rate_w, pad_top, pad_left, step_n, step_h, step_w, step_c

// data: the input, in its layout; grad: the intermediate's gradient; out: the filter's gradient.
template <typename T>
static __device__ __forceinline__ void filter_gradient(SEPCONV_BACKWARD_PARAMS(T)) {
    typedef typename Traits<T>::Acc Acc;
    const long long total = kernel_h * kernel_w * channels * multiplier;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x; index < total; index += stride) {
        long long rest = index;
        const long long m = rest % multiplier;
        rest /= multiplier;
        const long long c = rest % channels;
        rest /= channels;
        const long long j = rest % kernel_w;
        const long long i = rest / kernel_w;
        Acc acc = 0;
        for (long long b = 0; b < batch; ++b) {
            for (long long oy = 0; oy < out_h; ++oy) {
                const long long iy = oy * stride_h - pad_top + i * rate_h;
                const bool inside_h = iy >= 0 && iy < in_h;
                for (long long ox = 0; ox < out_w; ++ox) {
                    const long long ix = ox * stride_w - pad_left + j * rate_w;
                    Acc x = 0;  // padding: a zero, multiplied like any input value
                    if (inside_h && ix >= 0 && ix < in_w) {
                        x = Traits<T>::load(data[b * step_n + iy * step_h + ix * step_w + c * step_c]);
                    }
                    const Acc g = Traits<T>::load(grad[(((b * out_h + oy) * out_w + ox) * channels + c) * multiplier + m]);
                    acc = add_rn(acc, mul_rn(x, g));
                }
            }
        }
        out[index] = Traits<T>::store(acc);
    }
}

// data: the depthwise filter [KH, KW, C, M]; grad: the intermediate's gradient; out: the input's gradient.
template <typename T>
static __device__ __forceinline__ void input_gradient(SEPCONV_BACKWARD_PARAMS(T)) {
    typedef typename Traits<T>::Acc Acc;
    const long long total = batch * in_h * in_w * channels;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x; index < total; index += stride) {
        long long rest = index;  // (b, y, x, c), row-major
        const long long c = rest % channels;
        rest /= channels;
        const long long x = rest % in_w;
        rest /= in_w;
        const long long y = rest % in_h;
        const long long b = rest / in_h;
        Acc acc = 0;
        for (long long i = 0; i < kernel_h; ++i) {
            const long long ny = y + pad_top - i * rate_h;  // oy * stride_h, if a whole oy in range reads y
            if (ny < 0 || ny % stride_h != 0 || ny / stride_h >= out_h) continue;
            const long long oy = ny / stride_h;
            for (long long j = 0; j < kernel_w; ++j) {
                const long long nx = x + pad_left - j * rate_w;
                if (nx < 0 || nx % stride_w != 0 || nx / stride_w >= out_w) continue;
                const long long ox = nx / stride_w;
                for (long long m = 0; m < multiplier; ++m) {
                    const Acc g = Traits<T>::load(grad[(((b * out_h + oy) * out_w + ox) * channels + c) * multiplier + m]);
                    const Acc w = Traits<T>::load(data[((i * kernel_w + j) * channels + c) * multiplier + m]);
                    acc = add_rn(acc, mul_rn(g, w));
                }
            }
        }
        out[b * step_n + y * step_h + x * step_w + c * step_c] = Traits<T>::store(acc);
    }
}

extern "C" __global__ void sepconv_filter_gradient_float16(SEPCONV_BACKWARD_PARAMS(unsigned short)) {
    filter_gradient<unsigned short>(SEPCONV_BACKWARD_ARGS);
}
extern "C" __global__ void sepconv_filter_gradient_float32(SEPCONV_BACKWARD_PARAMS(float)) {
    filter_gradient<float>(SEPCONV_BACKWARD_ARGS);
}
extern "C" __global__ void sepconv_filter_gradient_float64(SEPCONV_BACKWARD_PARAMS(double)) {
    filter_gradient<double>(SEPCONV_BACKWARD_ARGS);
}
extern "C" __global__ void sepconv_input_gradient_float16(SEPCONV_BACKWARD_PARAMS(unsigned short)) {
    input_gradient<unsigned short>(SEPCONV_BACKWARD_ARGS);
}
extern "C" __global__ void sepconv_input_gradient_float32(SEPCONV_BACKWARD_PARAMS(float)) {
    input_gradient<float>(SEPCONV_BACKWARD_ARGS);
}
extern "C" __global__ void sepconv_input_gradient_float64(SEPCONV_BACKWARD_PARAMS(double)) {
    input_gradient<double>(SEPCONV_BACKWARD_ARGS);
}
