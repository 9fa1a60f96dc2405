# libzip for fevo::io (its .npz reader): the header zip.h and the library, as the imported target
# fevo::libzip. Debian's libzip CMake package refers to tools that libzip-dev does not ship, so the
# two are looked for directly; FEVO_LIBZIP_INCLUDE_DIR and FEVO_LIBZIP_LIBRARY (cache variables)
# name them where they are not found. Sets fevo_libzip_FOUND.
find_path(FEVO_LIBZIP_INCLUDE_DIR zip.h)
find_library(FEVO_LIBZIP_LIBRARY zip)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(fevo_libzip REQUIRED_VARS FEVO_LIBZIP_LIBRARY FEVO_LIBZIP_INCLUDE_DIR)
if(fevo_libzip_FOUND AND NOT TARGET fevo::libzip)
  add_library(fevo::libzip UNKNOWN IMPORTED)
  set_target_properties(fevo::libzip PROPERTIES IMPORTED_LOCATION "${FEVO_LIBZIP_LIBRARY}"
                                                INTERFACE_INCLUDE_DIRECTORIES "${FEVO_LIBZIP_INCLUDE_DIR}")
endif()
mark_as_advanced(FEVO_LIBZIP_INCLUDE_DIR FEVO_LIBZIP_LIBRARY)
