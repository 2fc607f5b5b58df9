# End-to-end: the disaggregated cluster (`tandem up`, and tandem-router with
# prefill/decode workers started one by one) through the Python client,
# checked against `tandem generate`: exact tokens through 1P/1D (UCX tcp) and
# 2P/2D (UCX sm/cma), seeded sampling, KV bytes only over UCX, back-pressure,
# every block released on every path, first token from prefill, a prefill
# and a decode worker SIGKILLed, malformed requests, example.py, health, the
# router's readiness following its workers, draining on SIGTERM (router and
# decode worker mid-stream), and `--host ::1` (skipped without IPv6 loopback).
# Included from tests/e2e/CMakeLists.txt. Needs /usr/bin/python3 with
# python3-grpcio and python3-protobuf, and protoc + grpc_python_plugin (stubs
# are generated into the test's work dir). Needs the `tandem` target, which
# builds tandem-router, tandem-prefill-worker and tandem-decode-worker too.
add_test(NAME cluster_e2e
  COMMAND ${TANDEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/cluster_test.py
    --bin-dir ${CMAKE_BINARY_DIR}/bin --source ${CMAKE_SOURCE_DIR} --work ${TANDEM_TEST_WORK}/cluster)
set_tests_properties(cluster_e2e PROPERTIES LABELS "e2e" TIMEOUT 1200 ENVIRONMENT "OMP_WAIT_POLICY=passive")
