# End-to-end across three "hosts": the router, a prefill worker and a decode
# worker each in their own network namespace (one address each, joined by a
# bridge in a fourth), KV over UCX TCP between the worker namespaces, and the
# test client in the router's namespace; tokens equal `tandem generate`.
# Included from tests/e2e/CMakeLists.txt. Needs root and iproute2 (CI has
# both); elsewhere it exits 77 with the reason and CTest reports it skipped.
# Needs the `tandem` target (it builds the router and both workers too).
add_test(NAME multihost_e2e
  COMMAND ${TANDEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/multihost_test.py
    --bin-dir ${CMAKE_BINARY_DIR}/bin --source ${CMAKE_SOURCE_DIR} --work ${TANDEM_TEST_WORK}/multihost)
set_tests_properties(multihost_e2e PROPERTIES LABELS "e2e" TIMEOUT 600 SKIP_RETURN_CODE 77
  ENVIRONMENT "OMP_WAIT_POLICY=passive")
