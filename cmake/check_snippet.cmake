# cmake -DEXAMPLE=file.cpp -DREADME=README.md -DTAG=name -P check_snippet.cmake
# Fails unless the lines between "// example-begin TAG" and "// example-end TAG" in EXAMPLE
# appear, with their indentation removed, as one block in README.
file(READ "${EXAMPLE}" src)
string(REGEX MATCH "// example-begin ${TAG}\n(.*)// example-end ${TAG}" _ "${src}")
if(NOT CMAKE_MATCH_1)
  message(FATAL_ERROR "no example-begin/end ${TAG} markers in ${EXAMPLE}")
endif()
string(REGEX REPLACE "(^|\n)  " "\\1" snippet "${CMAKE_MATCH_1}")
file(READ "${README}" readme)
string(FIND "${readme}" "${snippet}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "README.md does not contain the example '${TAG}' from ${EXAMPLE} verbatim:\n${snippet}")
endif()
