# cmake -DPREFIX=<installed fevo> -DPARTIAL=<dir> -DDROP=<component> -P partial_prefix.cmake
# Makes PARTIAL a copy of the fevo installed in PREFIX as if fevo had been built without its DROP
# component: the package files without fevo-<DROP>-targets.cmake, and the headers (a link).
file(REMOVE_RECURSE "${PARTIAL}")
file(MAKE_DIRECTORY "${PARTIAL}/share/cmake")
file(COPY "${PREFIX}/share/cmake/fevo" DESTINATION "${PARTIAL}/share/cmake")
file(REMOVE "${PARTIAL}/share/cmake/fevo/fevo-${DROP}-targets.cmake")
file(CREATE_LINK "${PREFIX}/include" "${PARTIAL}/include" SYMBOLIC)
