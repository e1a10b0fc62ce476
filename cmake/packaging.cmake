# `cpack -G DEB` in the build folder makes two Debian packages (three with the Python
# module) from the install rules' components:
#   shmpipe         (component tools) pipeline-launch, inspect-queues, man pages, bash
#                   completions, the spec example; Depends computed by dpkg-shlibdeps from
#                   what the tools link (toml++, libstdc++, libc: Boost and ZeroMQ are not
#                   needed at run time).
#   libshmpipe-dev  (component dev) static libraries, headers, CMake package, shmpipe.pc;
#                   Depends on the -dev packages a consumer compiles and links against.
#   python3-shmpipe (component python, when the module is built) `import shmpipe` for the
#                   system python3: the package in lib/python3.X/dist-packages (on Debian's
#                   sys.path); Depends on that python3 minor version (the module's ABI) and
#                   what dpkg-shlibdeps computes for _native.so.
# The package installs under /usr, whatever CMAKE_INSTALL_PREFIX says.
set(CPACK_PACKAGE_NAME shmpipe)
set(CPACK_PACKAGE_VENDOR "shmpipe")
set(CPACK_PACKAGE_CONTACT "shmpipe maintainers")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_COMPONENTS_ALL tools dev)
if(SHMPIPE_PYTHON_VERSION)
  list(APPEND CPACK_COMPONENTS_ALL python)
endif()
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

if(SHMPIPE_PYTHON_VERSION)
  string(REPLACE "." ";" python_version_parts ${SHMPIPE_PYTHON_VERSION})
  list(GET python_version_parts 0 python_major)
  list(GET python_version_parts 1 python_minor)
  math(EXPR python_next_minor "${python_minor} + 1")
  set(CPACK_DEBIAN_PYTHON_PACKAGE_NAME python3-shmpipe)
  set(CPACK_DEBIAN_PYTHON_PACKAGE_SECTION python)
  set(CPACK_DEBIAN_PYTHON_PACKAGE_SHLIBDEPS ON)
  set(CPACK_DEBIAN_PYTHON_PACKAGE_DEPENDS
    "python3 (>= ${SHMPIPE_PYTHON_VERSION}), python3 (<< ${python_major}.${python_next_minor})")
  set(CPACK_DEBIAN_PYTHON_PACKAGE_SUGGESTS python3-numpy)
  set(CPACK_COMPONENT_PYTHON_DESCRIPTION
    "import shmpipe: multiprocessing's Queue, Lock, Event, Barrier, Value and Array over shmpipe's\nshared-memory queues and robust synchronisation objects, shared with C++ processes by name.")
endif()
include(CPack)
