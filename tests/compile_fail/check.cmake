# Compiles one snippet (-fsyntax-only) and checks the outcome against its first line:
#   // expect: <regex>    the compile must fail with exactly one error, whose text matches
#   // expect: compiles   the compile must succeed (the control: proves the setup works)
# and the whole diagnostic must stay short (at most MAX_LINES lines).
# Usage: cmake -DCXX=... -DINCLUDES=a|b -DSOURCE=file.cpp [-DMAX_LINES=12] -P check.cmake
if(NOT MAX_LINES)
  set(MAX_LINES 12)
endif()
file(STRINGS "${SOURCE}" first LIMIT_COUNT 1)
if(NOT first MATCHES "^// expect: (.+)$")
  message(FATAL_ERROR "${SOURCE}: the first line must be `// expect: <regex>` or `// expect: compiles`")
endif()
set(expect "${CMAKE_MATCH_1}")
string(REPLACE "|" ";" include_list "${INCLUDES}")
set(include_flags)
foreach(dir ${include_list})
  list(APPEND include_flags "-I${dir}")
endforeach()
execute_process(
  COMMAND "${CXX}" -std=c++20 -fsyntax-only -fno-diagnostics-color ${include_flags} "${SOURCE}"
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE out
  ERROR_VARIABLE err
  TIMEOUT 100)
set(diag "${out}${err}")
if(expect STREQUAL "compiles")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${SOURCE} should compile, but:\n${diag}")
  endif()
  message(STATUS "${SOURCE}: compiles, as expected")
  return()
endif()
if(rc EQUAL 0)
  message(FATAL_ERROR "${SOURCE} compiled, but it should fail with: ${expect}")
endif()
string(REGEX MATCHALL "error: [^\n]*" errors "${diag}")
list(LENGTH errors error_count)
string(REGEX MATCHALL "\n" newlines "${diag}")
list(LENGTH newlines line_count)
if(NOT error_count EQUAL 1)
  message(FATAL_ERROR "${SOURCE}: expected exactly one error, got ${error_count}:\n${diag}")
endif()
if(NOT errors MATCHES "${expect}")
  message(FATAL_ERROR "${SOURCE}: the error does not say \"${expect}\":\n${diag}")
endif()
if(line_count GREATER MAX_LINES)
  message(FATAL_ERROR "${SOURCE}: ${line_count} lines of diagnostics (at most ${MAX_LINES}):\n${diag}")
endif()
message(STATUS "${SOURCE}: ${line_count} lines, one error: ${errors}")
