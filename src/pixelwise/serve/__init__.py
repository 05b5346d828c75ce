"""Serving a trained model over HTTP: :func:`create_app` (a Starlette ASGI app: ``/predict``,
``/health``, ``/model`` and a web page) and :func:`load_for_serving`. Needs the optional
``pixelwise[serve]`` extra (Starlette, uvicorn, python-multipart); ``pixelwise serve`` runs it.
"""

from pixelwise.serve.app import (
    DEFAULT_MAX_BYTES,
    FORMATS,
    Refused,
    ServeSettings,
    create_app,
    decode_image,
    load_for_serving,
    model_summary,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "FORMATS",
    "Refused",
    "ServeSettings",
    "create_app",
    "decode_image",
    "load_for_serving",
    "model_summary",
]
