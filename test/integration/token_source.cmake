# token_source against the in-process emulator over TLS.
add_executable(stampede_token_source_integration_test
    ${CMAKE_CURRENT_LIST_DIR}/token_source_test.cpp)
target_link_libraries(stampede_token_source_integration_test
    PRIVATE stampede::stampede stampede_emulator Boost::unit_test_framework)
stampede_set_warnings(stampede_token_source_integration_test)
add_test(NAME token_source_integration COMMAND stampede_token_source_integration_test)
set_tests_properties(token_source_integration PROPERTIES LABELS "integration" TIMEOUT 300)
