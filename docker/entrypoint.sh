#!/bin/sh
# bnn-sidecar container entrypoint: pick the numpy engine where onnxruntime is not installed
# (linux/arm/v7 has no onnxruntime wheel), unless the operator chose an engine explicitly.
# An empty BNN_SIDECAR_SIDECAR_ENGINE (compose passes ${BNN_ENGINE:-}) counts as "not chosen".
set -eu
if [ -z "${BNN_SIDECAR_SIDECAR_ENGINE:-}" ]; then
    unset BNN_SIDECAR_SIDECAR_ENGINE
    if ! python -c "import onnxruntime" 2>/dev/null; then
        BNN_SIDECAR_SIDECAR_ENGINE=numpy
        export BNN_SIDECAR_SIDECAR_ENGINE
        echo "bnn-entrypoint: onnxruntime is not installed here; using the numpy engine" >&2
    fi
fi
exec bnn-sidecar "$@"
