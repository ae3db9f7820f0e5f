# Integration tests of http_connection against the in-process emulator on loopback.
if(NOT TARGET Boost::unit_test_framework)
    find_package(Boost 1.81 REQUIRED COMPONENTS unit_test_framework)
endif()

add_executable(stampede_transport_test ${CMAKE_CURRENT_LIST_DIR}/transport_test.cpp)
target_link_libraries(stampede_transport_test
    PRIVATE stampede::stampede stampede_emulator Boost::unit_test_framework)
stampede_set_warnings(stampede_transport_test)
add_test(NAME transport COMMAND stampede_transport_test)
set_tests_properties(transport PROPERTIES LABELS integration TIMEOUT 300)
