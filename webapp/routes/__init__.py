"""One module per area of the site; `app.py` gathers their routes."""
