# Integration tests of api_client and the guests resource against the in-process emulator
# over TLS on loopback.
if(NOT TARGET Boost::unit_test_framework)
    find_package(Boost 1.81 REQUIRED COMPONENTS unit_test_framework)
endif()

add_executable(stampede_api_client_test ${CMAKE_CURRENT_LIST_DIR}/api_client_test.cpp)
target_link_libraries(stampede_api_client_test
    PRIVATE stampede::stampede stampede_emulator Boost::unit_test_framework)
stampede_set_warnings(stampede_api_client_test)
add_test(NAME api_client COMMAND stampede_api_client_test)
set_tests_properties(api_client PROPERTIES LABELS integration TIMEOUT 300)
