"""The API's request and answer schemas (OpenAPI), one answer model per bundle task type."""

from __future__ import annotations

from pydantic import BaseModel, Field  # pydantic refuses lone surrogates itself (string_unicode)

MAX_TEXT_CHARS = 100_000


class TextIn(BaseModel):
    text: str = Field(..., description="the review", max_length=MAX_TEXT_CHARS)


class TextFeedback(BaseModel):
    text: str = Field(..., description="the review", max_length=MAX_TEXT_CHARS)
    label: str = Field(..., description="the right label, one of the classes", max_length=200)
    idempotency_key: str | None = Field(None, description="the same key on a retry stores the correction once (or header Idempotency-Key)", max_length=255)


class TagScore(BaseModel):
    tag: str
    probability: float
    threshold: float
    predicted: bool


class TagsAnswer(BaseModel):
    predicted: list[str] = Field(description="tags whose probability reaches their threshold")
    tags: list[TagScore] = Field(description="every tag, most probable first")


class ClassShare(BaseModel):
    class_: str = Field(alias="class")
    id: int
    share: float = Field(description="share of the image's pixels")
    color: list[int] | None = None


class MaskAnswer(BaseModel):
    width: int
    height: int
    mask_png: str = Field(description="base64 PNG, one class id per pixel, at the uploaded image's size")
    shares: list[ClassShare]


class PointAnswer(BaseModel):
    x: float = Field(description="pixel column in the uploaded image (pixel centres at integers)")
    y: float = Field(description="pixel row in the uploaded image")
    width: int
    height: int


class TextAnswer(BaseModel):
    label: str
    probability: float
    probabilities: dict[str, float]
    tokens: int


class LabelAnswer(BaseModel):
    label: str = Field(description="the most probable class")
    probability: float
    probabilities: dict[str, float] = Field(description="every class's probability (softmax)")


class FeedbackAnswer(BaseModel):
    id: int
    input: str
    count: int
    replayed: bool = Field(False, description="true: this idempotency key was stored before; nothing new was stored")


ANSWERS = {"multilabel": TagsAnswer, "segmentation": MaskAnswer, "points": PointAnswer, "text": TextAnswer, "classify": LabelAnswer}
