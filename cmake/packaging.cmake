# `cpack -G DEB` in the build folder makes two Debian packages from the install rules'
# components:
#   shmpipe         (component tools) pipeline-launch, inspect-queues, man pages, bash
#                   completions, the spec example; Depends computed by dpkg-shlibdeps from
#                   what the tools link (toml++, libstdc++, libc: Boost and ZeroMQ are not
#                   needed at run time).
#   libshmpipe-dev  (component dev) static libraries, headers, CMake package, shmpipe.pc;
#                   Depends on the -dev packages a consumer compiles and links against.
# The package installs under /usr, whatever CMAKE_INSTALL_PREFIX says.
set(CPACK_PACKAGE_NAME shmpipe)
set(CPACK_PACKAGE_VENDOR "shmpipe")
set(CPACK_PACKAGE_CONTACT "shmpipe maintainers")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_COMPONENTS_ALL tools dev)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION devel)

set(CPACK_DEBIAN_TOOLS_PACKAGE_NAME shmpipe)
set(CPACK_DEBIAN_TOOLS_PACKAGE_SECTION utils)
set(CPACK_DEBIAN_TOOLS_PACKAGE_SHLIBDEPS ON)
set(CPACK_COMPONENT_TOOLS_DESCRIPTION
  "pipeline-launch runs process graphs over lock-free shared-memory queues from a TOML spec;\ninspect-queues lists, watches, cleans and exports (Prometheus) the queues of running pipelines.")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME libshmpipe-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
  "libboost1.81-dev, libboost-filesystem1.81-dev, libtomlplusplus-dev, g++ (>= 4:12)")
set(CPACK_COMPONENT_DEV_DESCRIPTION
  "C++20 static libraries shmpipe::ipc (queues, pipes, robust locks, semaphores, events, barriers)\nand shmpipe::pipeline (processes, pools, futures, graphs), with CMake and pkg-config files.")
include(CPack)
