// fevo: configuration macros shared by every header. Every fevo header includes it first.
#pragma once

// fevo is C++17. Under an older standard the first thing the compiler says is this, and then it
// stops (the #include of a file that does not exist ends compilation), instead of a page of
// errors from deep inside fevo (a C++14 compiler reads the hexadecimal float literals of
// fevo::cpu as "exponent has no digits"). With CMake, link a fevo target: it asks for cxx_std_17.
#if (defined(_MSVC_LANG) ? _MSVC_LANG : __cplusplus) < 201703L
#error "fevo needs C++17 or newer: compile with -std=c++17 (or link a fevo:: CMake target, which asks for it)"
#include <fevo_needs_cxx17_see_the_error_above>
#endif

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
