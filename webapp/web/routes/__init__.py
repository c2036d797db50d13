"""One module per area of the site: parse, call the domain, render. `app.py` gathers them."""
