# End-to-end: every process's Prometheus metrics, scraped by a real
# Prometheus server (Debian package `prometheus`, installed by
# scripts/install_deps.sh --test): exact token and request counts against
# what the Python client saw, promtool on every live /metrics, bad flags,
# and the Grafana dashboards' expressions against the live metrics.
# Included from tests/e2e/CMakeLists.txt; needs the `tandem` target (which
# builds the router and both workers).
add_test(NAME metrics_e2e
  COMMAND ${TANDEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/metrics_test.py
    --bin-dir ${CMAKE_BINARY_DIR}/bin --source ${CMAKE_SOURCE_DIR} --work ${TANDEM_TEST_WORK}/metrics)
set_tests_properties(metrics_e2e PROPERTIES LABELS "e2e" TIMEOUT 600 ENVIRONMENT "OMP_WAIT_POLICY=passive")
