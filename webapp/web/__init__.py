"""Everything that knows HTTP: body reading, cookies, CSRF, rendering, routes."""
