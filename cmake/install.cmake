# What `cmake --install` puts where, besides the targets each folder installs itself:
# the CMake package (find_package(shmpipe)), shmpipe.pc (pkg-config), the generated
# <shmpipe/version.hpp>, and for the tools their man pages and bash completions.
# Included once from the top-level CMakeLists.txt.

# <shmpipe/version.hpp>: generated from project(VERSION), found through shmpipe::ipc.
configure_file(${PROJECT_SOURCE_DIR}/cmake/version.hpp.in
  ${PROJECT_BINARY_DIR}/include/shmpipe/version.hpp @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/include/shmpipe/version.hpp
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/shmpipe COMPONENT dev)

# CMake package: shmpipe::ipc, shmpipe::pipeline and shmpipe::net. A consumer asking for X.Y accepts any
# X.* at or above it (SameMajorVersion).
install(EXPORT shmpipeTargets NAMESPACE shmpipe::
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/shmpipe COMPONENT dev)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/shmpipeConfig.cmake.in
  ${PROJECT_BINARY_DIR}/shmpipeConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/shmpipe)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/shmpipeConfigVersion.cmake
  COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/shmpipeConfig.cmake
              ${PROJECT_BINARY_DIR}/shmpipeConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/shmpipe COMPONENT dev)

# pkg-config: relocatable, the prefix is found from the .pc file's own folder, so the same
# file works under --prefix, DESTDIR and in the Debian package.
file(RELATIVE_PATH shmpipe_pc_prefix_from_pcdir
  "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
set(shmpipe_pc_prefix "\${pcfiledir}/${shmpipe_pc_prefix_from_pcdir}")
set(shmpipe_pc_includedir "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
set(shmpipe_pc_libdir "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/shmpipe.pc.in ${PROJECT_BINARY_DIR}/shmpipe.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/shmpipe.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)
