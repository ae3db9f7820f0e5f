# Unit tests of the I/O-free policies (retry classification, backoff, rate limiting)
# and of the asynchronous rate_limiter. Included from test/unit/CMakeLists.txt.
if(NOT TARGET Boost::unit_test_framework)
    find_package(Boost 1.81 REQUIRED COMPONENTS unit_test_framework)
endif()

foreach(name IN ITEMS retry backoff rate_limiter)
    set(target stampede_${name}_test)
    add_executable(${target} ${CMAKE_CURRENT_LIST_DIR}/${name}_test.cpp)
    target_link_libraries(${target} PRIVATE stampede::stampede Boost::unit_test_framework)
    target_compile_definitions(${target} PRIVATE BOOST_TEST_DYN_LINK)
    stampede_set_warnings(${target})
    add_test(NAME ${name} COMMAND ${target})
endforeach()
