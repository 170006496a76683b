"""POST /generate: the tip's text for a task, from the LLM."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.response import Response

from generation import services
from generation.serializers import GenerateInput, GenerateOutputSerializer
from oo_ml.apis import ERROR, ERRORS, JsonApi
from policies.serializers import record_serializer

GENERATE_INPUT = GenerateInput()


class GenerateApi(JsonApi):
    """Write the tip for a task with a versioned prompt: the request's
    ``prompt_version``, else the setting, else "v1". The text is stored with
    its version (and the decision, if named), so the admin shows the mean
    reward per version. 503 when no LLM is configured or it cannot answer."""

    @extend_schema(
        request=record_serializer("GenerateInput", GenerateInput),
        responses={
            200: GenerateOutputSerializer,
            503: OpenApiResponse(
                ERROR,
                description="llm_not_configured (no OO_ML_LLM_BASE_URL) or "
                "llm_unavailable (down, too slow, or an unusable answer).",
            ),
            **{code: r for code, r in ERRORS.items() if code != 503},
        },
    )
    def post(self, request):
        data = GENERATE_INPUT.run_validation(request.data)
        tip = services.tip_generate(**data)
        return Response(
            {
                "text": tip.text,
                "prompt_version": tip.prompt_version,
                "model": tip.model,
                "generation_id": tip.id,
            }
        )
