// The one translation unit that compiles stb_image_write (the PNG files of Fig. 3; the tests also
// write JPEG files with it).
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
