"""The API's JSON: requests are strict (no coercion, no unknown fields), responses are what OpenAPI shows."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictStr

Probability = Annotated[float, Strict(), Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class _Request(BaseModel):
    # A misspelt field ("treshold") is an error, not a silently ignored option.
    model_config = ConfigDict(extra="forbid")


class ClassifyRequest(_Request):
    texts: list[StrictStr] = Field(description="texts to classify; results come back in this order")
    threshold: Probability | None = Field(
        None, description="decision threshold for this request; default: the model's, from thresholds.json"
    )


class ExtractRequest(_Request):
    texts: list[StrictStr] = Field(description="texts to find spans in; results come back in this order")


class ReviewRequest(_Request):
    reviewer: Annotated[StrictStr, Field(min_length=1, max_length=200)] = Field(
        description="who reviewed the decision (recorded beside the API key's name)"
    )
    verdict: Literal["event", "no_event"]
    note: Annotated[StrictStr, Field(max_length=10_000)] | None = None


class ModelInfo(BaseModel):
    digest: str = Field(description="SHA-256 of the weights file")
    dtype: str
    threshold_name: str = Field(description='the thresholds.json key in force, or "request"')
    threshold: float
    review_band: tuple[float, float]


class ClassifyResult(BaseModel):
    probability: float
    label: str | int = Field(description="the label's name, or its class index when the model has no names")
    needs_review: bool = Field(description="probability inside the review band: a human should look")
    truncated: bool = Field(description="the text was longer than max_length and was cut, as in validation")
    decision_id: str = Field(description="the audit trail's id for this decision; reviews refer to it")


class ClassifyResponse(BaseModel):
    request_id: str
    model: ModelInfo
    results: list[ClassifyResult]


class Span(BaseModel):
    start: int = Field(description="character offset of the span's first character")
    end: int = Field(description="character offset just after the span")
    text: str
    label: str
    score: float


class ExtractResult(BaseModel):
    spans: list[Span] = Field(description="the mentions found, in text order; strict IOB2 decoding")
    truncated: bool = Field(description="the text was longer than max_length; spans are of its head")
    extraction_id: str = Field(description="the audit trail's id for this text's spans")


class ExtractModelInfo(BaseModel):
    digest: str = Field(description="SHA-256 of the weights file")
    dtype: str


class ExtractResponse(BaseModel):
    request_id: str
    model: ExtractModelInfo
    results: list[ExtractResult]


class Decision(BaseModel):
    decision_id: str
    request_id: str
    created_at: str
    key_name: str | None
    text_sha256: str
    text: str | None
    model_digest: str
    dtype: str
    threshold_name: str
    threshold: float
    review_lo: float
    review_hi: float
    probability: float
    label: str
    needs_review: bool
    truncated: bool


class PendingReviews(BaseModel):
    decisions: list[Decision] = Field(description="flagged decisions without a review, oldest first")


class Review(BaseModel):
    review_id: str
    decision_id: str
    created_at: str
    key_name: str | None
    reviewer: str
    verdict: str
    note: str | None


class ErrorBody(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody
