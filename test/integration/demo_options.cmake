# Runs stampede-demo with invalid options. Included from test/integration/CMakeLists.txt.
if(NOT TARGET stampede-demo)
    message(STATUS "demo_options test skipped: stampede-demo not built")
    return()
endif()

add_test(NAME demo_options
    COMMAND ${CMAKE_CURRENT_LIST_DIR}/demo_options.sh $<TARGET_FILE:stampede-demo>)
set_tests_properties(demo_options PROPERTIES LABELS integration TIMEOUT 60)
