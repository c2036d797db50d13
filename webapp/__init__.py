"""Accounts: a Starlette + htmx user authentication app."""
