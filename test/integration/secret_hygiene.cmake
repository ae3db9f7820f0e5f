# Secret hygiene of the token source and the API client against the in-process emulator
# over TLS on loopback, with the logger at trace. Included from
# test/integration/CMakeLists.txt.
if(NOT TARGET Boost::unit_test_framework)
    find_package(Boost 1.81 REQUIRED COMPONENTS unit_test_framework)
endif()

add_executable(stampede_secret_hygiene_test ${CMAKE_CURRENT_LIST_DIR}/secret_hygiene_test.cpp)
target_link_libraries(stampede_secret_hygiene_test
    PRIVATE stampede::stampede stampede_emulator Boost::unit_test_framework)
stampede_set_warnings(stampede_secret_hygiene_test)
add_test(NAME secret_hygiene COMMAND stampede_secret_hygiene_test)
set_tests_properties(secret_hygiene PROPERTIES LABELS integration TIMEOUT 300)
