# A token fetch re-run with a fault at each I/O step, against scripted TLS servers on
# 127.0.0.1. Included from test/integration/CMakeLists.txt.
if(NOT TARGET Boost::unit_test_framework)
    find_package(Boost 1.81 REQUIRED COMPONENTS unit_test_framework)
endif()

add_executable(stampede_fault_steps_test ${CMAKE_CURRENT_LIST_DIR}/fault_steps_test.cpp)
target_link_libraries(stampede_fault_steps_test
    PRIVATE stampede::stampede Boost::unit_test_framework OpenSSL::SSL OpenSSL::Crypto)
stampede_set_warnings(stampede_fault_steps_test)
add_test(NAME fault_steps COMMAND stampede_fault_steps_test)
set_tests_properties(fault_steps PROPERTIES LABELS integration TIMEOUT 300)
