// fevo: configuration macros shared by every header.
#pragma once

#define FEVO_VERSION_MAJOR 0
#define FEVO_VERSION_MINOR 1
#define FEVO_VERSION_PATCH 0

// -ffast-math lets the compiler assume that no value is NaN or infinite, which deletes the
// checks that make a non-finite weight change count as "changed" (never as "unchanged").
#if defined(__FAST_MATH__) || defined(__FINITE_MATH_ONLY__) && __FINITE_MATH_ONLY__
#error "fevo must not be compiled with -ffast-math or -ffinite-math-only: they delete its NaN/Inf checks"
#endif

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FEVO_HOST_DEVICE __host__ __device__
#else
#define FEVO_HOST_DEVICE
#endif

#if defined(__CUDA_ARCH__)
#define FEVO_DEVICE_CODE 1
#else
#define FEVO_DEVICE_CODE 0
#endif
