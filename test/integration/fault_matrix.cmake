# Every emulator fault in three situations (a cold start with many waiters, a refresh ahead
# of expiry, the API's 401 path) against the in-process emulator over TLS on loopback.
# Included from test/integration/CMakeLists.txt.
if(NOT TARGET Boost::unit_test_framework)
    find_package(Boost 1.81 REQUIRED COMPONENTS unit_test_framework)
endif()

add_executable(stampede_fault_matrix_test ${CMAKE_CURRENT_LIST_DIR}/fault_matrix_test.cpp)
target_link_libraries(stampede_fault_matrix_test
    PRIVATE stampede::stampede stampede_emulator Boost::unit_test_framework)
stampede_set_warnings(stampede_fault_matrix_test)
add_test(NAME fault_matrix COMMAND stampede_fault_matrix_test)
set_tests_properties(fault_matrix PROPERTIES LABELS integration TIMEOUT 300)
