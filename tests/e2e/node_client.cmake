# End-to-end: the Node.js client (clients/node) against `tandem serve`, and the
# official `openai` npm SDK against `tandem up --http-port` (test/openai_http.test.js), with
# Node's built-in test runner. The script runs `npm ci` in clients/node first
# (from the npm registry, into the git-ignored clients/node/node_modules); with
# no node/npm, or no registry, it exits 77 and CTest reports the test skipped.
# Included from tests/e2e/CMakeLists.txt.
add_test(NAME node_client_e2e
  COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/node_client_test.sh
    --tandem $<TARGET_FILE:tandem> --source ${CMAKE_SOURCE_DIR} --work ${TANDEM_TEST_WORK}/node_client)
set_tests_properties(node_client_e2e PROPERTIES LABELS "e2e" TIMEOUT 900 SKIP_RETURN_CODE 77
  ENVIRONMENT "OMP_WAIT_POLICY=passive")
