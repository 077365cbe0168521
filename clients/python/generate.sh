#!/usr/bin/env bash
# Generates the gRPC stubs of protos/corral/v1 into corral/_generated/ (not committed: the .proto is
# the one source of truth). Uses Debian's protoc (protobuf-compiler 3.21) and grpc_python_plugin
# (protobuf-compiler-grpc; libprotobuf-dev for the well-known types), whose output matches Debian's python3-protobuf 3.21 and python3-grpcio 1.51.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
protos="$here/../../protos"
out="$here/corral/_generated"
for tool in protoc grpc_python_plugin; do
  command -v "$tool" >/dev/null 2>&1 || { echo "generate.sh: $tool missing (apt-get install protobuf-compiler protobuf-compiler-grpc)" >&2; exit 1; }
done
tmp="$(mktemp -d "$here/.generate.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
protoc -I "$protos" --python_out="$tmp" --pyi_out="$tmp" --grpc_python_out="$tmp" \
  --plugin=protoc-gen-grpc_python="$(command -v grpc_python_plugin)" "$protos/corral/v1/corral.proto"
# The stubs import `corral.v1`; here they live inside the `corral` package, under _generated.
sed -i 's/^from corral\.v1 import/from corral._generated.corral.v1 import/' "$tmp/corral/v1/corral_pb2_grpc.py"
touch "$tmp/__init__.py" "$tmp/corral/__init__.py" "$tmp/corral/v1/__init__.py"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
