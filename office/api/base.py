"""What every agent API view shares: token authentication, the per-token throttle, JSON
in and out, and the token the request came with."""

from __future__ import annotations

from rest_framework.exceptions import NotAuthenticated
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from office.api.authentication import ApiTokenAuthentication
from office.api.parsers import StrictJSONParser
from office.api.throttling import ApiTokenRateThrottle
from office.models import ApiToken
from office.selectors import PERM_ADD_TASK

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


class CanSubmitTasks(BasePermission):
    """The token's person may submit tasks (office.add_task): a token acts with its
    person's rights, never more, so a manager's token reads but does not act."""

    message = (
        "This API token's user may not submit, cancel or retry tasks "
        "(it lacks the office.add_task permission: the staff or admin group)."
    )

    def has_permission(self, request: Request, view: APIView) -> bool:
        return bool(request.user and request.user.has_perm(PERM_ADD_TASK))


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
