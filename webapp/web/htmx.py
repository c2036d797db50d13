"""htmx request details, read in one place, and responses named for what they do."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection
from starlette.responses import Response


@dataclass(frozen=True, slots=True)
class HtmxDetails:
    """What htmx tells us about a request (all empty for a plain browser request)."""

    is_htmx: bool
    boosted: bool
    current_url: str
    target: str
    request_type: str

    @property
    def wants_partial(self) -> bool:
        """A boosted request swaps the whole body, so it gets the whole page."""
        return self.is_htmx and not self.boosted and self.request_type != "full"

    def current_path(self) -> str | None:
        """The path of the page the request came from (None if the header is unusable).

        Only the path is taken, and callers pass it through safe_next, so a URL naming
        another host cannot send anyone off-site.
        """
        if not self.current_url:
            return None
        try:
            return urlsplit(self.current_url).path or "/"
        except ValueError:  # e.g. "http://[" (an unclosed IPv6 literal)
            return None


def htmx_details(conn: HTTPConnection) -> HtmxDetails:
    headers = conn.headers
    return HtmxDetails(
        is_htmx=headers.get("hx-request") == "true",
        boosted=headers.get("hx-boosted") == "true",
        current_url=headers.get("hx-current-url", ""),
        target=headers.get("hx-target", ""),
        request_type=headers.get("hx-request-type", ""),
    )


def client_redirect(
    url: str, *, status_code: int = 200, response: Response | None = None
) -> Response:
    """Make htmx load `url` as a full page (HX-Redirect is read before the status)."""
    response = response or Response(status_code=status_code)
    response.headers["HX-Redirect"] = url
    return response
