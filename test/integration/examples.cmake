# Runs examples/list_guests against the stampede-emulator program on loopback. Included
# from test/integration/CMakeLists.txt.
if(NOT TARGET example_list_guests OR NOT TARGET stampede-emulator)
    message(STATUS "list_guests_example test skipped: example_list_guests or stampede-emulator not built")
    return()
endif()

add_test(NAME list_guests_example
    COMMAND ${CMAKE_CURRENT_LIST_DIR}/list_guests_example.sh
            $<TARGET_FILE:stampede-emulator> $<TARGET_FILE:example_list_guests>
            ${CMAKE_CURRENT_BINARY_DIR}/list_guests_example)
set_tests_properties(list_guests_example PROPERTIES LABELS integration TIMEOUT 120)
