// The one translation unit that compiles stb_image (decoding). Only PNG and JPEG are decoded;
// stb's own dimension cap matches image_limits::max_side, and data.cpp checks every file's header
// against its limits before calling the decoder.
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_NO_STDIO
#define STBI_MAX_DIMENSIONS 16384
#define STB_IMAGE_IMPLEMENTATION
#include <stb/stb_image.h>
