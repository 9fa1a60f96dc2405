# io.oracle: NumPy and the reference safetensors package write files, fevo reads them exactly and
# writes them back, NumPy and safetensors read fevo's files back exactly.
#   cmake -DPYTHON=python3 -DSCRIPT=oracle.py -DCHECKER=fevo_test_io -DDIR=out -P run_oracle.cmake
# A missing Python package fails the test (the script says which and how to install it).
foreach(v PYTHON SCRIPT CHECKER DIR)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "run_oracle.cmake: -D${v}=... is required")
  endif()
endforeach()
if(NOT PYTHON)
  message(FATAL_ERROR "io.oracle: FAILED: no python3 found at configure time; the oracle test needs "
                      "python3 with numpy, safetensors and ml_dtypes (python3 -m pip install numpy safetensors ml_dtypes)")
endif()
file(REMOVE_RECURSE "${DIR}")
file(MAKE_DIRECTORY "${DIR}")

execute_process(COMMAND "${PYTHON}" "${SCRIPT}" write "${DIR}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "io.oracle: FAILED: the Python writer failed (exit ${rc})")
endif()
set(ENV{FEVO_IO_ORACLE_DIR} "${DIR}")
execute_process(COMMAND "${CHECKER}" "[oracle]" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "io.oracle: FAILED: fevo did not read the NumPy/safetensors files exactly (exit ${rc})")
endif()
execute_process(COMMAND "${PYTHON}" "${SCRIPT}" verify "${DIR}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "io.oracle: FAILED: NumPy/safetensors did not read fevo's files back exactly (exit ${rc})")
endif()
message(STATUS "io.oracle: passed")
