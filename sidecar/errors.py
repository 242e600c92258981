"""The one exception tree of bnn-sidecar.

Third-party errors are wrapped into one of these where they enter our code
(``raise InputError(...) from exc``), so callers catch ``SidecarError``.
"""

from __future__ import annotations


class SidecarError(Exception):
    """Base of every error bnn-sidecar raises on purpose."""


class ConfigError(SidecarError):
    """Bad configuration: unknown key, wrong type, impossible value."""


class SchemaError(SidecarError):
    """A batch or record does not match the canonical schema."""


class InputError(SidecarError):
    """Input that cannot be read at all (missing file, unknown format)."""


class FormatDetectionError(InputError):
    """``--format auto`` could not tell what the input is."""


class ModelError(SidecarError):
    """A model file that cannot be loaded, fails its checksum or has bad metadata."""


class ChecksumError(ModelError):
    """The model's sha256 does not match its ``.sha256`` file."""


class EngineUnavailable(ModelError):
    """The requested inference engine cannot run here (e.g. onnxruntime missing)."""


class TransportError(SidecarError):
    """A network transport (WebSocket, ZeroMQ, unix socket) failed."""


class ProtocolError(TransportError):
    """A peer sent something that violates the wire protocol."""


class SinkError(SidecarError):
    """A sink could not write its output."""
