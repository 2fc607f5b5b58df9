# End-to-end: tandem-bench (bench/load) against a live `tandem serve` on
# 127.0.0.1 with the bundled model: every load mode and dataset, warmup,
# sweeps with their plot, JSON output and failure counting. Asserts counts
# and token totals, never timings. Included from tests/e2e/CMakeLists.txt.
add_test(NAME bench_e2e
  COMMAND ${TANDEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/bench_test.py
    --tandem $<TARGET_FILE:tandem> --bench $<TARGET_FILE:tandem-bench> --work ${TANDEM_TEST_WORK}/bench)
set_tests_properties(bench_e2e PROPERTIES LABELS "e2e" TIMEOUT 900 ENVIRONMENT "OMP_WAIT_POLICY=passive")

# tandem-bench --backend openai against a fake OpenAI-compatible server (the
# test file itself, `--serve`: Python's ThreadingHTTPServer on 127.0.0.1,
# stopped by PID): token counts, stamped events, request bodies, HTTP 400,
# error events, timeouts, connection refused, 64 concurrent streams. Needs
# no model; asserts counts and orderings, never timings.
add_test(NAME bench_openai_test
  COMMAND ${TANDEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/bench_openai_test.py
    --bench $<TARGET_FILE:tandem-bench> --work ${TANDEM_TEST_WORK}/bench_openai)
set_tests_properties(bench_openai_test PROPERTIES LABELS "integration" TIMEOUT 300)

# tandem-sim (bench/sim): calibrate on the bundled model with the real
# engine, run (every request completed, deterministic), plan (a row per
# split and a recommendation), bad input refused with exit 2.
add_test(NAME sim_cli_test
  COMMAND ${TANDEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/sim_cli_test.py
    --sim $<TARGET_FILE:tandem-sim> --model ${CMAKE_SOURCE_DIR}/models/tandem-shakespeare --work ${TANDEM_TEST_WORK}/sim)
set_tests_properties(sim_cli_test PROPERTIES LABELS "e2e" TIMEOUT 600)
