#!/usr/bin/env bash
# Installs the build into a temporary prefix and uses it as a user would:
#   - the installed layout: libraries, headers (with the generated version.hpp), the CMake
#     package, shmpipe.pc, both tools, their man pages and bash completions, the example spec;
#   - a consumer project (tests/packaging/consumer) built with find_package(shmpipe 0.2),
#     and the same program built with pkg-config, both run;
#   - the installed tools: --version, and the example spec run by the installed launcher;
#   - the Python package (when the build has the module): imported from the install folder
#     by the system python3, with a queue round trip between two processes.
# Usage: install_consumers.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 source=$2
work=$(mktemp -d /tmp/shmpipe-install-test-XXXXXX)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
version=$(sed -n 's/^#define SHMPIPE_VERSION_STRING "\(.*\)"$/\1/p' "$build/include/shmpipe/version.hpp")

fail() { echo "install test: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$prefix" >/dev/null
libdir=$(cd "$prefix" && ls -d lib*/pkgconfig | head -1 | xargs dirname)
for f in bin/pipeline-launch bin/inspect-queues include/shmpipe/shmpipe.hpp include/shmpipe/version.hpp \
         "$libdir/libshmpipe_ipc.a" "$libdir/libshmpipe_pipeline.a" "$libdir/cmake/shmpipe/shmpipeConfig.cmake" \
         "$libdir/cmake/shmpipe/shmpipeConfigVersion.cmake" "$libdir/pkgconfig/shmpipe.pc" \
         share/man/man1/pipeline-launch.1 share/man/man1/inspect-queues.1 \
         share/bash-completion/completions/pipeline-launch share/bash-completion/completions/inspect-queues \
         share/shmpipe/examples/unix_pipeline.toml; do
  [ -s "$prefix/$f" ] || fail "$f is not installed (or empty) under $prefix"
done
# The warnings of our own build are not exported to consumers.
! grep -q shmpipe_warnings "$prefix/$libdir/cmake/shmpipe/"*.cmake || fail "the CMake package exports shmpipe_warnings"

# find_package(shmpipe): configure, build and run the consumer.
cmake -S "$source/tests/packaging/consumer" -B "$work/cmake-consumer" -G Ninja \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/cmake-consumer" >/dev/null
out=$("$work/cmake-consumer/consumer")
[ "$out" = "shmpipe $version consumer ok" ] || fail "find_package consumer printed: $out"
echo "find_package consumer: $out"

# A version the package does not satisfy is refused (SameMajorVersion: 1.0 is another major).
mkdir -p "$work/too-new"
printf 'cmake_minimum_required(VERSION 3.25)\nproject(too_new LANGUAGES CXX)\nfind_package(shmpipe 1.0 REQUIRED)\n' \
  >"$work/too-new/CMakeLists.txt"
if cmake -S "$work/too-new" -B "$work/too-new/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null 2>&1; then
  fail "find_package(shmpipe 1.0) accepted version $version"
fi

# pkg-config: the same program, compiled and linked with the flags shmpipe.pc gives.
export PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig"
[ "$(pkg-config --modversion shmpipe)" = "$version" ] || fail "pkg-config --modversion shmpipe is not $version"
# shellcheck disable=SC2046
c++ -O1 -o "$work/pc-consumer" "$source/tests/packaging/consumer/consumer.cpp" $(pkg-config --cflags --libs shmpipe)
out=$("$work/pc-consumer")
[ "$out" = "shmpipe $version consumer ok" ] || fail "pkg-config consumer printed: $out"
echo "pkg-config consumer: $out"

# The installed tools.
[ "$("$prefix/bin/pipeline-launch" --version)" = "pipeline-launch $version" ] || fail "pipeline-launch --version"
[ "$("$prefix/bin/inspect-queues" --version)" = "inspect-queues $version" ] || fail "inspect-queues --version"
expected=$(seq 1 200000 | grep '7$' | sort -n | md5sum)
got=$("$prefix/bin/pipeline-launch" --quiet --no-status --name t-install-$$ \
      "$prefix/share/shmpipe/examples/unix_pipeline.toml" | md5sum)
[ "$got" = "$expected" ] || fail "the installed launcher's unix_pipeline.toml output differs from the shell pipeline"
echo "installed pipeline-launch ran unix_pipeline.toml: output identical to the shell pipeline"

# Man pages: well-formed roff (when groff is there) that names this version.
for tool in pipeline-launch inspect-queues; do
  page=$prefix/share/man/man1/$tool.1
  grep -q "^\.TH .*\"shmpipe $version\"" "$page" || fail "$page does not name shmpipe $version in .TH"
  if command -v groff >/dev/null; then
    warnings=$(groff -man -ww -z "$page" 2>&1)
    [ -z "$warnings" ] || fail "$page: $warnings"
  fi
done
# Bash completions: they load, and complete subcommands and spec files.
got=$(bash -c 'source "$1"; COMP_WORDS=(inspect-queues se); COMP_CWORD=1; _inspect_queues; echo "${COMPREPLY[*]}"' \
      _ "$prefix/share/bash-completion/completions/inspect-queues")
[ "$got" = "serve" ] || fail "inspect-queues completion of 'se' gave '$got'"
got=$(cd "$prefix/share/shmpipe/examples" && bash -c 'source "$1"; COMP_WORDS=(pipeline-launch unix); COMP_CWORD=1;
      _pipeline_launch; echo "${COMPREPLY[*]}"' _ "$prefix/share/bash-completion/completions/pipeline-launch")
[ "$got" = "unix_pipeline.toml" ] || fail "pipeline-launch completion of 'unix' gave '$got'"
echo "man pages and bash completions installed and working"

# The Python package, in the lib/python3.X/dist-packages folder the system python3 searches
# for /usr and /usr/local (here under the temporary prefix, so PYTHONPATH points at it).
if ls "$build"/python/shmpipe/_native*.so >/dev/null 2>&1; then
  site=$(cd "$prefix" && ls -d lib/python3*/dist-packages 2>/dev/null | head -1)
  if [ -z "$site" ] || [ ! -s "$prefix/$site/shmpipe/__init__.py" ] || ! ls "$prefix/$site"/shmpipe/_native*.so >/dev/null; then
    fail "the shmpipe Python package is not installed under $prefix/lib/python3*/dist-packages"
  fi
  python=/usr/bin/python3
  [ -x "$python" ] || python=python3
  (cd "$work" && PYTHONPATH="$prefix/$site" "$python" "$source/tests/packaging/python_round_trip.py" "$prefix/$site") \
    || fail "the installed Python package failed its round trip"
fi
