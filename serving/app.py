"""The web app: JSON API (``/predict``, ``/feedback``, ``/health``, ``/info``) and the page at ``/``.

``create_app(bundle)`` loads the bundle once; image tasks take a multipart upload named
``file``, IMDB takes JSON ``{"text": ...}``. Every refused request is a 4xx JSON answer
``{"error": "..."}``; bodies over ``max_bytes`` are refused with 413 before they are parsed,
JSON over ``limits.MAX_JSON_BYTES`` or nested over ``limits.MAX_JSON_DEPTH`` levels too, and
images over ``max_pixels`` before they are decoded (memory: ``images.py``). ``/feedback`` takes an
``Idempotency-Key`` header (or field ``idempotency_key``): a retried correction is stored once.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, Header, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .bundle import load_bundle
from .feedback import FeedbackStore, KeyReused
from .limits import BodyLimit, BodyTooLarge, JsonLimit, TooLarge, parse_json
from .images import DECODE_SLOTS
from .predict import DEFAULT_MAX_PIXELS, InputError, Predictor, png_bytes
from .schemas import ANSWERS, FeedbackAnswer, TextFeedback, TextIn

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
MAX_CORRECTION_BYTES = 64 * 1024
KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message})


def _idempotency_key(header: str | None, field: str | None) -> str | None:
    if header is not None and field is not None and header != field:
        raise InputError(422, "the Idempotency-Key header and field 'idempotency_key' differ; send one key.")
    key = header if header is not None else field
    if key is not None and not KEY_PATTERN.fullmatch(key):
        raise InputError(422, "an idempotency key is 1 to 255 printable ASCII characters without spaces (e.g. a UUID).")
    return key


def _stored(store: FeedbackStore, example) -> JSONResponse:
    body = {"id": example.id, "input": example.input.name, "count": store.count(), "replayed": example.replayed}
    return JSONResponse(status_code=200 if example.replayed else 201, content=body)


def _correction(text: str) -> dict:
    try:
        corr = parse_json(text or "{}", "field 'correction'", max_bytes=MAX_CORRECTION_BYTES)
    except TooLarge as e:
        raise InputError(413, str(e)) from None
    except ValueError as e:
        raise InputError(422, str(e)) from None
    if not isinstance(corr, dict):
        raise InputError(422, "field 'correction' must be a JSON object.")
    return corr


def _validation_message(exc: RequestValidationError, task: str) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        field = ".".join(loc) or "body"
        if err.get("type") == "missing":
            hint = " (an image upload in a multipart form)" if field in ("file",) else ""
            parts.append(f"missing field '{field}'{hint}")
        else:
            parts.append(f"{field}: {err.get('msg')}")
    expected = "JSON {\"text\": \"...\"}" if task == "text" else "a multipart form with the image in field 'file'"
    return "; ".join(parts) + f". Expected {expected}."


def create_app(
    bundle_path: str | os.PathLike,
    feedback_db: str | os.PathLike | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    decode_slots: int = DECODE_SLOTS,
    tta: bool | None = None,
) -> FastAPI:
    """The app serving one bundle.

    Args:
        bundle_path: a folder written by ``python train.py export``.
        feedback_db: the feedback store's folder (default: ``<bundle>/feedback``).
        max_bytes: largest request body (413 above).
        max_pixels: largest uploaded image (or mask) in pixels (413 above, checked before decoding).
        decode_slots: requests decoding an image (or building a full-size mask) at once; memory
            is about ``decode_slots`` x (8 bytes x ``max_pixels`` + ``max_bytes``) over idle.
        tta: average each answer over flipped copies of the image (``Predictor``'s ``tta``;
            None: as the bundle says).
    """
    bundle = load_bundle(bundle_path)
    predictor = Predictor(bundle, max_pixels=max_pixels, decode_slots=decode_slots, tta=tta)
    task, classes = bundle.task, bundle.classes
    store = FeedbackStore(feedback_db or bundle.path / "feedback", task=task, classes=classes)
    app = FastAPI(
        title=f"lesson3 · {bundle.meta.get('name', task)}",
        description=f"Serves the {task} bundle {bundle.path}. The page is at /.",
        version="1",
    )
    app.state.bundle, app.state.predictor, app.state.store = bundle, predictor, store
    app.add_middleware(JsonLimit)
    app.add_middleware(BodyLimit, max_bytes=max_bytes)  # outermost: a declared oversize body is refused first

    _error_handlers(app, task, max_bytes)
    _page_and_info(app, {"max_bytes": max_bytes, "max_pixels": max_pixels, "decode_slots": decode_slots})
    (_text_routes if task == "text" else _image_routes)(app)
    return app


def _error_handlers(app: FastAPI, task: str, max_bytes: int) -> None:
    """Every refused request as a 4xx JSON answer ``{"error": ...}``."""

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError):
        return _error(exc.status, exc.message)

    @app.exception_handler(KeyReused)
    async def _key_reused(request: Request, exc: KeyReused):
        return _error(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return _error(422, _validation_message(exc, task))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if isinstance(exc.__cause__, BodyTooLarge):  # the body reader passed the limit (no Content-Length)
            return _error(413, f"the request body is larger than the limit of {max_bytes:,} bytes.")
        return _error(exc.status_code, str(exc.detail))


def _page_and_info(app: FastAPI, limits: dict[str, int]) -> None:
    """The page, ``/health``, ``/info`` and the feedback count."""
    bundle, predictor, store = app.state.bundle, app.state.predictor, app.state.store
    task, classes = bundle.task, bundle.classes
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health")
    def health() -> dict[str, Any]:
        """``ok`` once the model is loaded (it is loaded before the server accepts requests)."""
        return {"status": "ok", "task": task, "name": bundle.meta.get("name")}

    @app.get("/info")
    def info() -> dict[str, Any]:
        """What the page needs: task type, classes, thresholds, palette, limits, feedback count."""
        meta = bundle.meta
        return {
            "task": task, "name": meta.get("name"), "classes": classes, "input": meta["input"],
            "thresholds": meta.get("thresholds"), "void_index": meta.get("void_index"), "palette": bundle.palette,
            **limits, "feedback": store.count(),
            "tta": predictor.tta,  # answers averaged over flipped copies (the page says so)
        }

    @app.get("/feedback")
    def feedback_count() -> dict[str, Any]:
        """How many corrections are stored, and where."""
        return {"count": store.count(), "db": str(store.db)}


def _text_routes(app: FastAPI) -> None:
    """``/predict`` and ``/feedback`` of a text classifier (JSON bodies)."""
    bundle, predictor, store = app.state.bundle, app.state.predictor, app.state.store
    classes, answer = bundle.classes, ANSWERS[bundle.task]

    @app.post("/predict", response_model=answer)
    def predict_text(body: TextIn):
        """Sentiment of a review: label and probability."""
        return predictor.predict_text(body.text)

    @app.post("/feedback", response_model=FeedbackAnswer, status_code=201)
    def feedback_text(body: TextFeedback, idempotency_key: str | None = Header(None, description="a retry with the same key stores nothing new")):
        """Store the right label of a review the model got wrong."""
        key = _idempotency_key(idempotency_key, body.idempotency_key)
        if body.label not in classes:
            raise InputError(422, f"label '{body.label}' is not one of {classes}.")
        data, corr = body.text.encode("utf-8"), {"label": body.label}
        if key is not None and (found := store.find(key, store.fingerprint(data, corr))) is not None:
            return _stored(store, found)
        return _stored(store, store.add(data, ".txt", corr, predictor.predict_text(body.text), key=key))


def _image_routes(app: FastAPI) -> None:
    """``/predict`` and ``/feedback`` of an image model (multipart uploads)."""
    bundle, predictor, store = app.state.bundle, app.state.predictor, app.state.store
    task, classes, answer = bundle.task, bundle.classes, ANSWERS[bundle.task]

    @app.post("/predict", response_model=answer, response_model_by_alias=True)
    def predict_image(file: UploadFile = File(..., description="the image (JPEG, PNG...)")):
        """Prediction for an uploaded image."""
        return predictor.predict_image(file.file)

    @app.post("/feedback", response_model=FeedbackAnswer, status_code=201)
    def feedback_image(
        file: UploadFile = File(..., description="the image the model got wrong"),
        correction: str = Form("{}", description='JSON: Planet {"tags": [...]}, BIWI {"x": .., "y": ..} (image pixels), a classifier {"label": ..}; CamVid: send mask'),
        mask: UploadFile | None = File(None, description="CamVid: the corrected mask, a PNG of class ids at the image's size"),
        idempotency_key: str | None = Header(None, description="a retry with the same key stores nothing new"),
        idempotency_key_field: str | None = Form(None, alias="idempotency_key", description="or the key as a form field"),
    ):
        """Store the right answer for an image the model got wrong."""
        key = _idempotency_key(idempotency_key, idempotency_key_field)
        corr = _correction(correction)
        image = predictor.decode(file.file)
        corr, files = _checked_correction(task, classes, corr, image, mask, predictor)
        if key is not None and (found := store.find(key, store.fingerprint(image.data, corr, files))) is not None:
            return _stored(store, found)
        prediction = predictor.answer(image, mask_png=False)
        return _stored(store, store.add(image.data, image.ext, corr, prediction, files=files, key=key))


def _checked_correction(task: str, classes: list[str], corr: dict, image, mask: UploadFile | None, predictor: Predictor) -> tuple[dict, dict | None]:
    """The correction as stored (and CamVid's mask file), checked against the classes and the image."""
    if task == "multilabel":
        tags = corr.get("tags")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise InputError(422, 'Planet corrections are {"tags": ["clear", "primary", ...]}.')
        unknown = [t for t in tags if t not in classes]
        if unknown:
            raise InputError(422, f"unknown tag(s) {unknown[:5]}; the tags are {classes}.")
        return {"tags": [c for c in classes if c in tags]}, None
    if task == "classify":
        if corr.get("label") not in classes:
            raise InputError(422, f'corrections are {{"label": one of {classes}}}, not {corr.get("label")!r}.')
        return {"label": corr["label"]}, None
    if task == "points":
        try:
            x, y = float(corr["x"]), float(corr["y"])
        except (KeyError, TypeError, ValueError, OverflowError):
            raise InputError(422, 'BIWI corrections are {"x": column, "y": row} in the image\'s pixels.') from None
        h, w = image.size
        if not (-0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5):
            raise InputError(422, f"point ({x}, {y}) is outside the {w}x{h} image.")
        return {"x": x, "y": y}, None
    if mask is None:
        raise InputError(422, "CamVid corrections need field 'mask': a PNG of class ids at the image's size.")
    ids = predictor.mask_from_upload(mask.file, image.size)
    return {}, {"mask": (png_bytes(ids), ".png")}
