"""What every agent API view shares: token authentication, the per-token throttle, JSON
in and out, and the token the request came with."""

from __future__ import annotations

from rest_framework.exceptions import NotAuthenticated
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from office.api.authentication import ApiTokenAuthentication
from office.api.parsers import StrictJSONParser
from office.api.throttling import ApiTokenRateThrottle
from office.models import ApiToken

# The largest id a bigint column holds: a larger one in a URL is a missing task, not a
# database error.
MAX_ID = 2**63 - 1


class AgentApiView(APIView):
    """Base of every agent API view (office, agents and billing APIs)."""

    authentication_classes = [ApiTokenAuthentication]
    permission_classes = [IsAuthenticated]
    throttle_classes = [ApiTokenRateThrottle]
    parser_classes = [StrictJSONParser]
    renderer_classes = [JSONRenderer]


def token_of(request: Request) -> ApiToken:
    """The API token the request was authenticated with. Raises NotAuthenticated (401)
    for a request authenticated otherwise (which AgentApiView never lets through)."""
    if not isinstance(request.auth, ApiToken):
        raise NotAuthenticated()
    return request.auth


class Pagination(LimitOffsetPagination):
    """?limit= (1 to 200, default 50) and ?offset=; an offset past any database's range
    is an empty page rather than an error."""

    default_limit = 50
    max_limit = 200

    def get_offset(self, request: Request) -> int:
        return min(super().get_offset(request), MAX_ID // 2)
