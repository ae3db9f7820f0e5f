# Integration tests of the stampede-token program: each test runs the built binary as a
# subprocess against the in-process emulator on loopback, with a private cache directory.
if(NOT TARGET stampede-token OR NOT TARGET stampede_emulator)
    message(STATUS "stampede_token test skipped: stampede-token or stampede_emulator not built")
    return()
endif()
if(NOT TARGET Boost::unit_test_framework)
    find_package(Boost 1.81 REQUIRED COMPONENTS unit_test_framework)
endif()

add_executable(stampede_token_test ${CMAKE_CURRENT_LIST_DIR}/stampede_token_test.cpp)
target_link_libraries(stampede_token_test
    PRIVATE stampede_emulator Boost::unit_test_framework)
target_compile_definitions(stampede_token_test
    PRIVATE STAMPEDE_TOKEN_BINARY="$<TARGET_FILE:stampede-token>")
add_dependencies(stampede_token_test stampede-token)
stampede_set_warnings(stampede_token_test)
add_test(NAME stampede_token COMMAND stampede_token_test)
set_tests_properties(stampede_token PROPERTIES LABELS integration TIMEOUT 600)
