# Applies the project's warning flags to TARGET.
function(stampede_set_warnings target)
    if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
        target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic)
        if(STAMPEDE_WARNINGS_AS_ERRORS)
            target_compile_options(${target} PRIVATE -Werror)
        endif()
    endif()
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
        # GCC 12 reports Asio's awaitable frames, which pair their own operator new and
        # delete, as mismatched in some coroutines (a false positive of the warning).
        target_compile_options(${target} PRIVATE -Wno-mismatched-new-delete)
    endif()
endfunction()
