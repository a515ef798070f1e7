"""The roles API: what an agent may ask for, on which model, at what price."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from agents.api.serializers import RoleOutputSerializer
from agents.runtime import config_pinned, token_scope
from agents.selectors import roles_offered
from office.api.base import AgentApiView, token_of
from office.api.schema import error_responses


class RoleListApi(AgentApiView):
    """GET /api/roles/: the active roles the token may use, each with the model bound to
    it now and that model's current price."""

    @extend_schema(
        operation_id="role_list",
        summary="List the roles you may use, with their model and price",
        responses={200: RoleOutputSerializer(many=True), **error_responses(401, 429)},
    )
    def get(self, request: Request) -> Response:
        with config_pinned():  # one reading of the config for every role's price
            offers = roles_offered(only=token_scope(token=token_of(request)))
        return Response(RoleOutputSerializer(offers, many=True).data)
