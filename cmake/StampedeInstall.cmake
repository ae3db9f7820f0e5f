# Install rules and the package config, so that find_package(stampede CONFIG) works
# from an install prefix.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(STAMPEDE_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/stampede)

install(TARGETS stampede EXPORT stampedeTargets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
    INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/stampede
    DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT stampedeTargets
    NAMESPACE stampede::
    DESTINATION ${STAMPEDE_CMAKE_DIR})

# stampede::redis has an export set of its own, so that the package config loads it, and
# looks for hiredis, only for projects that ask for the `redis` component.
if(TARGET stampede_redis)
    install(TARGETS stampede_redis EXPORT stampedeRedisTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
    install(EXPORT stampedeRedisTargets
        NAMESPACE stampede::
        DESTINATION ${STAMPEDE_CMAKE_DIR})
endif()

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/stampedeConfig.cmake.in
    ${PROJECT_BINARY_DIR}/stampedeConfig.cmake
    INSTALL_DESTINATION ${STAMPEDE_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/stampedeConfigVersion.cmake
    COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/stampedeConfig.cmake
    ${PROJECT_BINARY_DIR}/stampedeConfigVersion.cmake
    DESTINATION ${STAMPEDE_CMAKE_DIR})

if(TARGET stampede-token)
    install(TARGETS stampede-token RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
if(TARGET stampede-emulator)
    install(TARGETS stampede-emulator RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
