# Unit tests of the settings' request parameters and the token cache key (no I/O).
# Included from test/unit/CMakeLists.txt.
if(NOT TARGET Boost::unit_test_framework)
    find_package(Boost 1.81 REQUIRED COMPONENTS unit_test_framework)
endif()

add_executable(stampede_settings_test ${CMAKE_CURRENT_LIST_DIR}/settings_test.cpp)
target_link_libraries(stampede_settings_test
    PRIVATE stampede::stampede Boost::unit_test_framework)
stampede_set_warnings(stampede_settings_test)
add_test(NAME settings COMMAND stampede_settings_test)
