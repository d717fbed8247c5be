# Runs one libFuzzer binary for a bounded time over the committed seeds (read-only) plus a scratch
# corpus in the build tree; fails with the reproducer's path if it finds a crash.
# cmake -DFUZZER=path -DSEEDS=dir -DWORK_DIR=dir -DSECONDS=n [-DDICTIONARY=file] -P run_fuzzer.cmake
if(NOT EXISTS "${FUZZER}")
  message(FATAL_ERROR "${FUZZER} is not built (target expertmesh_fuzzers needs clang++ and libclang-rt-dev)")
endif()
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}/corpus" "${WORK_DIR}/artifacts")
set(arguments -max_total_time=${SECONDS} -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
              -artifact_prefix=${WORK_DIR}/artifacts/)
if(DICTIONARY)
  list(APPEND arguments -dict=${DICTIONARY})
endif()
# New inputs go to the first (scratch) directory; the seed directory is only read.
execute_process(COMMAND "${FUZZER}" ${arguments} "${WORK_DIR}/corpus" "${SEEDS}" RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "${FUZZER} failed (exit ${result}); reproducer under ${WORK_DIR}/artifacts")
endif()
