# End-to-end: tandem-bench (bench/load) against a live `tandem serve` on
# 127.0.0.1 with the bundled model: every load mode and dataset, warmup,
# sweeps with their plot, JSON output and failure counting. Asserts counts
# and token totals, never timings. Included from tests/e2e/CMakeLists.txt.
add_test(NAME bench_e2e
  COMMAND ${TANDEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/bench_test.py
    --tandem $<TARGET_FILE:tandem> --bench $<TARGET_FILE:tandem-bench> --work ${TANDEM_TEST_WORK}/bench)
set_tests_properties(bench_e2e PROPERTIES LABELS "e2e" TIMEOUT 900 ENVIRONMENT "OMP_WAIT_POLICY=passive")
