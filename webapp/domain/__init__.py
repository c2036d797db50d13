"""The rules of the app, with no knowledge of HTTP: nothing below imports Starlette."""
