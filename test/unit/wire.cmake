# Unit tests of the token wire format and endpoint URL parsing (no I/O).
if(NOT TARGET Boost::unit_test_framework)
    find_package(Boost 1.81 REQUIRED COMPONENTS unit_test_framework)
endif()

add_executable(stampede_token_wire_test ${CMAKE_CURRENT_LIST_DIR}/token_wire_test.cpp)
target_link_libraries(stampede_token_wire_test
    PRIVATE stampede::stampede Boost::unit_test_framework)
stampede_set_warnings(stampede_token_wire_test)
add_test(NAME token_wire COMMAND stampede_token_wire_test)
