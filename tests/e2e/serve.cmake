# End-to-end: `tandem serve` through the Python client (clients/python), the
# C++ client, grpc health and reflection, checked against `tandem generate`.
# Included from tests/e2e/CMakeLists.txt. Needs /usr/bin/python3 with
# python3-grpcio and python3-protobuf, and protoc + grpc_python_plugin (the
# client generates its stubs into the test's work dir).
add_test(NAME serve_e2e
  COMMAND ${TANDEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/serve_test.py
    --tandem $<TARGET_FILE:tandem> --source ${CMAKE_SOURCE_DIR} --work ${TANDEM_TEST_WORK}/serve)
set_tests_properties(serve_e2e PROPERTIES LABELS "e2e" TIMEOUT 900 ENVIRONMENT "OMP_WAIT_POLICY=passive")
# API keys on every public entry point: `tandem serve` and `tandem up`'s
# router with --api-key-file, SIGHUP rotation, per-key limits.
add_test(NAME api_keys_e2e
  COMMAND ${TANDEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/api_keys_test.py
    --tandem $<TARGET_FILE:tandem> --source ${CMAKE_SOURCE_DIR} --work ${TANDEM_TEST_WORK}/api_keys)
set_tests_properties(api_keys_e2e PROPERTIES LABELS "e2e" TIMEOUT 600 ENVIRONMENT "OMP_WAIT_POLICY=passive")
# `tandem certs`: the cluster CA and role certificates, checked with openssl.
add_test(NAME certs_e2e
  COMMAND ${TANDEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/certs_test.py
    --tandem $<TARGET_FILE:tandem> --work ${TANDEM_TEST_WORK}/certs)
set_tests_properties(certs_e2e PROPERTIES LABELS "e2e" TIMEOUT 120)
# The OpenAI-compatible HTTP API of `tandem serve --http-port` with curl and
# raw sockets: exact texts, SSE framing, errors, disconnects cancel, 64 streams.
add_test(NAME openai_http_e2e
  COMMAND ${TANDEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/openai_http_test.py
    --tandem $<TARGET_FILE:tandem> --work ${TANDEM_TEST_WORK}/openai_http)
set_tests_properties(openai_http_e2e PROPERTIES LABELS "e2e" TIMEOUT 600 ENVIRONMENT "OMP_WAIT_POLICY=passive")
