# Runs one seed program and compares its standard output with the expected file, whose
# first line says how: "# ordered" (line by line) or "# unordered" (the same lines in any
# order, for output whose order is up to the scheduler). The program must exit 0.
# Lines must not contain ";" (CMake lists).
# Usage: cmake -DPROGRAM=path -DEXPECTED=file.txt -P check_output.cmake
file(STRINGS "${EXPECTED}" expected_lines)
list(POP_FRONT expected_lines mode)
if(NOT mode MATCHES "^# (un)?ordered$")
  message(FATAL_ERROR "${EXPECTED}: the first line must be '# ordered' or '# unordered'")
endif()
execute_process(COMMAND "${PROGRAM}" RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 50)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${PROGRAM} exited with ${rc}\nstdout:\n${out}\nstderr:\n${err}")
endif()
string(REGEX REPLACE "\n$" "" out_trimmed "${out}")
string(REPLACE ";" "\\;" out_trimmed "${out_trimmed}")
string(REPLACE "\n" ";" actual_lines "${out_trimmed}")
if(mode STREQUAL "# unordered")
  list(SORT actual_lines)
  list(SORT expected_lines)
endif()
if(NOT actual_lines STREQUAL expected_lines)
  string(REPLACE ";" "\n" want "${expected_lines}")
  message(FATAL_ERROR "${PROGRAM}: output differs.\nexpected (${mode}):\n${want}\ngot:\n${out}\nstderr:\n${err}")
endif()
message(STATUS "${PROGRAM}: output as expected")
