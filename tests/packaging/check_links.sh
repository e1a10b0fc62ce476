#!/usr/bin/env bash
# Every relative link in README.md, CHANGELOG.md and docs/*.md points at a file inside the
# repository (a clone has nothing else), and every docs/ page a source comment names exists.
# Usage: check_links.sh SOURCE_DIR
set -euo pipefail
cd "$1"
status=0
for page in README.md CHANGELOG.md docs/*.md; do
  dir=$(dirname "$page")
  # [text](target) outside code (fenced blocks and `inline code`, where a C++ lambda reads
  # like a link): keep relative targets, drop #anchors.
  while IFS= read -r target; do
    case $target in http://*|https://*|mailto:*|'#'*) continue ;; esac
    path=${target%%#*}
    resolved=$(realpath -m "$dir/$path")
    case $resolved in
      "$PWD"/*) ;;
      *) echo "$page: link $target leaves the repository"; status=1; continue ;;
    esac
    [ -e "$resolved" ] || { echo "$page: link $target: no such file"; status=1; }
  done < <(awk '/^[[:space:]]*```/ { code = !code; next } !code' "$page" | sed 's/`[^`]*`//g' |
           grep -o '\]([^)]*)' | sed 's/^](\(.*\))$/\1/')
done
while IFS= read -r doc; do
  [ -e "$doc" ] || { echo "a source comment names $doc, which does not exist"; status=1; }
done < <(grep -rhoE 'docs/[a-z_-]+\.md' ipc pipeline tools | sort -u)
[ $status -eq 0 ] && echo "links ok"
exit $status
